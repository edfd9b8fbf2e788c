"""The paper's protocol as the training code runs it: epoch-end validation and early
stopping, CCE's schedule in each Table 1 experiment, pq on the baseline's best checkpoint,
and a sweep that resumes without redoing finished runs."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate

from conftest import ROOT, compose_config, read_metrics, run_cli
from cce_dlrm.embeddings.base import FeatureSpec


def _rounds(cfg, total: int, steps_per_epoch: int) -> list[int]:
    method = instantiate(cfg.method)(features=[FeatureSpec("f", 100_000)], dim=16, max_table_params=16_000,
                                     init_std=0.05, seed=0, device="meta")
    done: list[int] = []
    for step in range(1, total + 1):
        if method.is_round_step(step, total, steps_per_epoch, len(done)):
            done.append(step)
    return done


@pytest.mark.parametrize("experiment, epochs, expected_epochs", [
    ("table1", 10, [1, 2, 3, 4, 5, 6]),              # "ct6 cf300000": the ends of epochs 1..6
    ("table1_1epoch", 1, [0.25, 0.5]),               # "ct2 cf75000": 1/4 and 1/2 of the epoch
    ("table1_terabyte", 1, [0.25, 0.5]),
])
def test_cce_rounds_of_each_table1_experiment(experiment, epochs, expected_epochs):
    cfg = compose_config([f"experiment={experiment}", "method=cce"])
    assert cfg.trainer.epochs == epochs and cfg.method.residual is False  # B := 0 (Algorithm 3)
    per_epoch = 300_000
    rounds = _rounds(cfg, epochs * per_epoch, per_epoch)
    assert rounds == [round(e * per_epoch) for e in expected_epochs]


def test_the_embedded_experiment_clusters_in_its_first_epochs():
    cfg = compose_config(["experiment=table1_synthetic", "method=cce"])
    assert cfg.trainer.early_stopping == "paper" and cfg.trainer.epochs > 1
    per_epoch = 100
    rounds = _rounds(cfg, cfg.trainer.epochs * per_epoch, per_epoch)
    assert rounds and all(r % per_epoch == 0 for r in rounds)  # at epoch ends
    assert len(rounds) < cfg.trainer.epochs  # and some epochs of rest after the last one


@pytest.mark.slow
def test_epoch_end_validation_and_the_papers_early_stop(tmp_path, data_dir, monkeypatch):
    """Scripted validation BCEs: epoch 1's minimum (0.46) is below epoch 2's (0.47), so the
    run stops at the end of epoch 2, and the final state is not validated twice."""
    from cce_dlrm.training import loop
    from cce_dlrm.training.distributed import shutdown
    from cce_dlrm.training.run import run_training

    scripted = iter([0.50, 0.47, 0.46, 0.48, 0.49, 0.47])

    def fake_evaluate(model, loader, device, desc="eval", progress=False):
        bce = next(scripted) if desc == "val" else 0.5
        return {"bce": bce, "auc": 0.6, "rows": 1}

    monkeypatch.setattr(loop, "evaluate", fake_evaluate)
    cfg = compose_config(["experiment=smoke", "method=hashing", f"paths.data_dir={data_dir}",
                          "trainer.max_steps=null", "trainer.epochs=5", "trainer.val_every=100",
                          "trainer.early_stopping=paper", "logger.tensorboard=false"])
    try:
        metrics = run_training(cfg, tmp_path / "run", method_key="hashing")
    finally:
        shutdown()
    per_epoch = metrics["steps_per_epoch"]
    assert per_epoch == 210  # 54,000 training rows of the smoke data at batch 256
    assert [h["step"] for h in metrics["history"]] == [100, 200, 210, 300, 400, 420]
    assert metrics["stopped_early_at_epoch"] == 2 and metrics["steps"] == 2 * per_epoch
    assert metrics["best_step"] == 210 and metrics["best_val_bce"] == pytest.approx(0.46)


@pytest.mark.slow
def test_pq_quantizes_the_baselines_best_checkpoint(tmp_path, data_dir):
    common = ["experiment=smoke", f"paths.data_dir={data_dir}", "logger.tensorboard=false",
              "trainer.max_steps=null", "trainer.epochs=2", "trainer.val_every=100"]
    full = tmp_path / "full"
    done = run_cli([*common, "method=full", "max_table_params=null", f"hydra.run.dir={full}"], cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    baseline = read_metrics(full)
    pq = tmp_path / "pq"
    done = run_cli([*common, "method=pq", f"hydra.run.dir={pq}", f"baseline_run={full}"], cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    quantized = read_metrics(pq)
    # no training of its own: the baseline's best-validation model, quantized
    assert quantized["steps"] == 0 and quantized["source_step"] == baseline["best_step"]
    assert quantized["learned_params"] < baseline["learned_params"] and quantized["aux_bytes"] > 0
    assert len(quantized["history"]) == 1
    # a missing baseline is one line, before anything is trained
    missing = run_cli([*common, "method=pq", f"hydra.run.dir={tmp_path / 'pq2'}",
                       f"baseline_run={tmp_path / 'nowhere'}"], cwd=ROOT)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1].startswith("configuration error: baseline_run=")


@pytest.mark.slow
def test_a_rerun_sweep_redoes_only_unfinished_runs(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=smoke", f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=${hydra:runtime.choices.method}", "method=full,hashing",
            "trainer.max_steps=20", "trainer.val_every=10", "logger.tensorboard=false"]
    first = run_cli(args, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    full_before = (sweep / "full" / "metrics.json").read_text()
    # the hashing run "died": its record says running, its checkpoints stay
    record = json.loads((sweep / "hashing" / "metrics.json").read_text())
    record["status"] = "running"
    (sweep / "hashing" / "metrics.json").write_text(json.dumps(record))
    second = run_cli(args, cwd=ROOT)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"skipped: already completed: {sweep / 'full'}" in second.stdout
    assert "hashing" not in "".join(l for l in second.stdout.splitlines() if l.startswith("skipped"))
    assert read_metrics(sweep / "hashing")["status"] == "completed"
    assert (sweep / "full" / "metrics.json").read_text() == full_before  # not redone


@pytest.mark.slow
def test_a_failing_sweep_job_is_recorded_and_the_sweep_goes_on(tmp_path, data_dir):
    """pq without its baseline fails before training: one line, a failed record, and the next
    job of the sweep still runs."""
    sweep = tmp_path / "sweep"
    done = run_cli(["-m", "experiment=smoke", f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}",
                    "hydra.sweep.subdir=${hydra:runtime.choices.method}", "method=pq,hashing",
                    f"baseline_run={tmp_path / 'nowhere'}", "trainer.max_steps=20", "trainer.val_every=10",
                    "logger.tensorboard=false"], cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    failed = [line for line in done.stderr.splitlines() if line.startswith("job failed:")]
    assert len(failed) == 1 and "baseline_run=" in failed[0] and "Traceback" not in done.stderr
    record = read_metrics(sweep / "pq")
    assert record["status"] == "failed" and record["method"] == "pq" and "baseline_run=" in record["error"]
    assert read_metrics(sweep / "hashing")["status"] == "completed"


def _table1_commands(*variables) -> list[str]:
    """The training commands ``make reproduce-table1`` would run (dry run: nothing runs)."""
    import os
    import subprocess

    done = subprocess.run(["make", "-n", "reproduce-table1", "JOBS=1", *variables], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "EXTRA_METHODS"})
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if "cce_dlrm.train" in line]


def test_optional_table1_columns_are_one_more_sweep_over_the_same_grid():
    """EXTRA_METHODS adds the newer methods as columns of the same grid; without it the
    default sweep (and its time budget) is unchanged."""
    default = _table1_commands()
    assert len(default) == 2 and not any("method=mch" in c for c in default)
    extra = _table1_commands("EXTRA_METHODS=mch,cafe,mde,dpq")
    assert extra[:2] == default
    assert len(extra) == 3 and extra[2].split()[-1] == "method=mch,cafe,mde,dpq"
    # the grid's other axes (caps, seeds, datasets) come from the experiment: only the
    # method axis is overridden
    assert extra[2].split()[:-1] == default[1].split()
