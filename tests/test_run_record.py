"""metrics.json survives a full disk: one clear error, the previous file intact, no temp file."""

import errno
import json

import pytest

from cce_dlrm.config_errors import USER_ERRORS, format_user_error
from cce_dlrm.training import run_record
from cce_dlrm.training.run_record import RunFolderError, RunRecord


def _disk_full_after(nbytes):
    """A replacement for run_record._write_text that writes ``nbytes`` then fails like a full disk."""
    def write(path, text):
        with open(path, "w") as f:
            f.write(text[:nbytes])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return write


def test_disk_full_keeps_the_previous_metrics_and_removes_the_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    record = RunRecord(path, status="running", best_val_bce=0.5)
    before = path.read_text()
    monkeypatch.setattr(run_record, "_write_text", _disk_full_after(10))
    with pytest.raises(RunFolderError) as err:
        record.update(best_val_bce=0.4, history=[{"step": 1}])
    message = format_user_error(err.value)
    assert message == (f"run folder error: cannot write {path} (No space left on device); the previous one is "
                       "kept. Free space or make the folder writable, or choose another with hydra.run.dir=...")
    assert isinstance(err.value, USER_ERRORS)  # printed as one line by the entry point
    assert path.read_text() == before
    assert not (tmp_path / "metrics.json.tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    # once space is back, the failure is recorded (with the values the run had reached)
    monkeypatch.undo()
    record.update(status="failed", error=message)
    saved = json.loads(path.read_text())
    assert saved["status"] == "failed" and saved["best_val_bce"] == 0.4 and "No space left" in saved["error"]


def test_first_write_failing_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(run_record, "_write_text", _disk_full_after(0))
    with pytest.raises(RunFolderError, match="none was written"):
        RunRecord(tmp_path / "metrics.json", status="running")
    assert list(tmp_path.iterdir()) == []


def test_folder_that_is_a_file_is_a_run_folder_error(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(RunFolderError, match="cannot write .*metrics.json"):
        RunRecord(blocker / "metrics.json", status="running")


def test_non_finite_numbers_are_written_as_null(tmp_path):
    record = RunRecord(tmp_path / "metrics.json", best_val_auc=float("nan"), lr=float("inf"),
                       history=[{"val_auc": float("nan"), "val_bce": 0.5}])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == {"best_val_auc": None, "lr": None, "history": [{"val_auc": None, "val_bce": 0.5}]}
    assert record.data["best_val_auc"] != record.data["best_val_auc"]  # NaN kept in memory


def test_disabled_record_writes_nothing(tmp_path):
    RunRecord(tmp_path / "metrics.json", enabled=False, status="running").update(status="completed")
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_auc_undefined_when_validation_has_no_positive_rows(tmp_path, data_dir):
    """A split of one class: AUC null with its reason (never 0.0); the run still completes."""
    import shutil

    import numpy as np

    from conftest import ROOT, compose_config, read_metrics, run_cli
    from cce_dlrm.training.evaluation import entropy_bce

    source = compose_config(["experiment=smoke", f"paths.data_dir={data_dir}"]).dataset.path
    dataset = tmp_path / "no_val_clicks"
    shutil.copytree(source, dataset)
    labels = np.memmap(dataset / "val.labels.u8", dtype=np.uint8, mode="r+")
    labels[:] = 0
    labels.flush()
    test_rate = float(np.fromfile(dataset / "test.labels.u8", dtype=np.uint8).mean())
    run_dir = tmp_path / "run"
    result = run_cli(["experiment=smoke", "dataset.build=null", f"dataset.path={dataset}",
                      f"hydra.run.dir={run_dir}", "trainer.max_steps=20", "trainer.val_every=10",
                      "logger.tensorboard=false"], cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "AUC undefined (split has no positive rows)" in result.stdout
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert metrics["val_auc_undefined"] == "split has no positive rows"
    assert metrics["best_val_auc"] is None and all(h["val_auc"] is None for h in metrics["history"])
    assert metrics["test_auc_undefined"] is None and 0 < metrics["test_auc"] <= 1
    # each split's baseline is its own click rate's entropy: ~0 for an all-negative split
    assert metrics["baseline_bce_val"] == metrics["baseline_bce"] < 1e-9
    assert metrics["baseline_bce_test"] == pytest.approx(entropy_bce(test_rate))
