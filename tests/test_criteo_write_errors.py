"""A full disk or an unwritable output folder: ``python -m cce_dlrm.preprocess`` ends with
one line (``error: cannot write <path>: <reason>``), a non-zero status and no traceback; the
previous dataset stays as it was, the unfinished work stays in ``<out>.building`` and the
same command resumes it to the same output as an uninterrupted run."""

import errno
import os
import runpy
import subprocess
import sys

import pytest
from test_criteo_pipeline import REPO, ROWS, folder_bytes

from cce_dlrm.data.criteo import outputs, preprocess
from cce_dlrm.preprocess import os_error_line

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _run_main(monkeypatch, tmp_path, *overrides):
    """The entry point in this process (so that a patched write applies); its exit value."""
    monkeypatch.setattr(sys, "argv", [
        "cce_dlrm.preprocess", "dataset=criteo_kaggle", f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}", "progress=false", "dataset.preprocess.chunk_mb=0.01",
        "dataset.preprocess.sync_mb=0", *overrides])
    monkeypatch.delitem(sys.modules, "cce_dlrm.preprocess", raising=False)  # a fresh __main__
    try:  # as `python -m` runs it (Hydra finds the configs next to the module's file)
        runpy.run_module("cce_dlrm.preprocess", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        return done.code
    return 0


def _full_disk_after(monkeypatch, kind, calls):
    """Makes the ``calls``-th write of ``kind`` arrays (and every later one) fail with ENOSPC."""
    write, seen = outputs.OffsetSplitWriter.write, []

    def failing(self, split, row, **arrays):
        if kind in arrays:
            seen.append(1)
            if len(seen) >= calls:
                raise ENOSPC
        return write(self, split, row, **arrays)

    monkeypatch.setattr(outputs.OffsetSplitWriter, "write", failing)
    return lambda: monkeypatch.setattr(outputs.OffsetSplitWriter, "write", write)


@pytest.mark.parametrize("kind, workers", [("dense", 1), ("sparse", 1), ("sparse", 2)])
def test_a_full_disk_is_one_line_and_loses_nothing(monkeypatch, tmp_path, capsys, kind, workers):
    raw = tmp_path / "data" / "raw" / "criteo_kaggle"
    raw.mkdir(parents=True)
    (raw / "train.txt").write_text("\n".join(ROWS) + "\n")
    out = tmp_path / "data" / "processed" / "criteo_kaggle"
    assert _run_main(monkeypatch, tmp_path) == 0
    before = folder_bytes(out)

    # other settings: the dataset is stale and rebuilt, and the disk fills up on the way
    settings = ["dataset.preprocess.frequency_threshold=2", f"dataset.preprocess.workers={workers}"]
    restore = _full_disk_after(monkeypatch, kind, calls=4)
    code = _run_main(monkeypatch, tmp_path, *settings)
    assert code == f"error: cannot write {out}.building: No space left on device"
    assert "Traceback" not in capsys.readouterr().err
    assert folder_bytes(out) == before  # the previous dataset, as it was
    assert (out.parent / "criteo_kaggle.building" / ".work" / "build.json").is_file()  # kept

    restore()  # room again: the same command resumes and finishes
    assert _run_main(monkeypatch, tmp_path, *settings) == 0
    assert not (out.parent / "criteo_kaggle.building").exists()
    preprocess("kaggle", raw, tmp_path / "whole", name="criteo_kaggle", progress=False,
               chunk_mb=0.01, frequency_threshold=2)
    assert folder_bytes(out) == folder_bytes(tmp_path / "whole")


def test_an_unwritable_output_folder_is_one_line(tmp_path):
    raw = tmp_path / "data" / "raw" / "criteo_kaggle"
    raw.mkdir(parents=True)
    (raw / "train.txt").write_text("\n".join(ROWS[:50]) + "\n")
    (tmp_path / "data" / "processed").write_text("a file where the output folder's parent goes")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "cce_dlrm.preprocess", "dataset=criteo_kaggle",
         f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}", "progress=false"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    target = tmp_path / "data" / "processed" / "criteo_kaggle.building"
    assert done.stderr.strip().splitlines()[-1] == f"error: cannot write {target}: Not a directory"


def test_error_lines(tmp_path):
    out, raw = tmp_path / "processed" / "x", tmp_path / "raw"
    assert os_error_line(ENOSPC, out, raw) == (
        f"error: cannot write {tmp_path}/processed/x.building: No space left on device")
    denied = PermissionError(errno.EACCES, "Permission denied", str(out / "train.dense.f32.tmp"))
    assert os_error_line(denied, out, raw) == (
        f"error: cannot write {out}/train.dense.f32.tmp: Permission denied")
    unreadable = PermissionError(errno.EACCES, "Permission denied", str(raw / "day_3"))
    assert os_error_line(unreadable, out, raw) == f"error: cannot read {raw}/day_3: Permission denied"
