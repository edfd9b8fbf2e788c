"""Runs that survive, through the real entry point: kill and resume, divergence, folders never reused.

The kill is the training process SIGKILLing itself right after a given step
(``CCE_DLRM_TEST_KILL_AT_STEP``, see training/loop.py): mid-epoch, after a checkpoint and
with steps done since it, as a preempted job dies. The resumed run must end with
``metrics.json`` numbers bit-identical to an uninterrupted run's (on CPU).
"""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, read_metrics, run_cli

SMOKE = ["experiment=smoke", "device=cpu"]
# 40 steps of 256 rows (an epoch is ~210 batches): validations at 20 and 40, checkpoints every 10
SHORT = ["trainer.max_steps=40", "trainer.val_every=20", "trainer.checkpoint_every=10"]
# CCE rounds at 15 and 30: the kill at 25 resumes from step 20, between the two rounds (the
# checkpoint holds round 1's cluster ids; round 2 happens after the resume)
CCE = ["method=cce", "method.cluster_unit=batches", "method.cluster_every=15", "method.max_rounds=2"]
KILL_AT = 25
COMPARED = ("history", "best_val_bce", "best_val_auc", "best_step", "test_bce", "test_auc", "steps",
            "learned_params", "aux_bytes", "aux_bytes_per_feature", "planned_steps")


def _cli(tmp_path, data_dir, run_dir, extra, nproc=1, kill_at=None, multirun=False):
    folder = ["-m", f"hydra.sweep.dir={run_dir.parent}", f"hydra.sweep.subdir={run_dir.name}"] if multirun \
        else [f"hydra.run.dir={run_dir}"]
    env = {"CCE_DLRM_TEST_KILL_AT_STEP": str(kill_at)} if kill_at else {}
    if not any(e.startswith("logger.tensorboard=") for e in extra):
        extra = [*extra, "logger.tensorboard=false"]
    return run_cli([*folder, *SMOKE, f"paths.data_dir={data_dir}", *extra], cwd=ROOT, nproc=nproc, env_extra=env)


def _ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _one_line_refusal(result, text):
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if text in line]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def _without_timings(events):
    return [{k: v for k, v in e.items() if "seconds" not in k} for e in events]


def _assert_same_numbers(reference, resumed):
    for key in COMPARED:
        assert resumed[key] == reference[key], key
    assert _without_timings(resumed["events"]) == _without_timings(reference["events"])
    print("compared", {k: reference[k] for k in ("best_val_bce", "best_val_auc", "best_step", "test_bce",
                                                    "test_auc", "steps")},
          [(h["step"], h["val_bce"], h["val_auc"]) for h in reference["history"]])


@pytest.mark.slow
@pytest.mark.parametrize("method, nproc", [("full", 1), ("full", 2), ("cce", 1), ("cce", 2), ("mch", 2),
                                            ("adagrad", 1), ("adagrad", 2), ("cce-adagrad", 2)])
def test_killed_and_resumed_run_ends_bit_identical(tmp_path, data_dir, method, nproc):
    # adagrad: full tables with row-wise Adagrad, whose per-row and dense accumulators the
    # checkpoint must carry (sharded on 2 processes) for the resumed run to match
    extra = [*SHORT, *{"cce": CCE, "full": ["method=full"], "mch": ["method=mch"],
                       "adagrad": ["method=full", "trainer.optimizer=rowwise_adagrad", "trainer.lr=0.01"],
                       # a round before the kill, one after the resume: each resets A, B's state
                       "cce-adagrad": [*CCE, "trainer.optimizer=rowwise_adagrad", "trainer.lr=0.01"]}[method]]
    if method == "full":  # scalars every 5 steps: the killed run's last ones must not show twice
        extra += ["logger.tensorboard=true", "logger.log_every=5"]
    if nproc == 2 and method != "mch":  # mch's managed tables are row-wise (their remapping state too)
        extra.append("trainer.sharding_type=table_wise")  # sharded tables: ShardedTensors in DCP
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    _ok(_cli(tmp_path, data_dir, reference_dir, extra, nproc))
    reference = read_metrics(reference_dir)
    assert reference["status"] == "completed" and reference["steps"] == 40

    killed = _cli(tmp_path, data_dir, run_dir, extra, nproc, kill_at=KILL_AT)
    assert killed.returncode != 0
    interrupted = read_metrics(run_dir)
    assert interrupted["status"] == "running"
    assert [h["step"] for h in interrupted["history"]] == [20]
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["latest"] == "step_20"
    if method.startswith("cce"):
        assert [e["step"] for e in interrupted["events"]] == [15]

    if method == "adagrad" and nproc == 1:  # an SGD run cannot continue an Adagrad one
        other = _cli(tmp_path, data_dir, run_dir, [*extra, "trainer.optimizer=sgd"], nproc)
        _one_line_refusal(other, "optimizer: 'rowwise_adagrad' there, 'sgd' here")
    if method == "full" and nproc == 1:
        # refusals lose nothing: resume=false, and a checkpoint of another configuration
        refused = _cli(tmp_path, data_dir, run_dir, [*extra, "resume=false"], nproc)
        _one_line_refusal(refused, "holds an unfinished run (status running; its last checkpoint is step_20)")
        other = _cli(tmp_path, data_dir, run_dir, [*extra, "trainer.batch_size=128"], nproc)
        _one_line_refusal(other, "batch_size: 256 there, 128 here")
        assert read_metrics(run_dir)["status"] == "running"

    _ok(_cli(tmp_path, data_dir, run_dir, extra, nproc))
    resumed = read_metrics(run_dir)
    assert resumed["status"] == "completed"
    assert resumed["resumes"] == [{"from_step": 20, "previous_status": "running", "checkpoint": "step_20"}]
    _assert_same_numbers(reference, resumed)
    if method.startswith("cce"):
        assert [e["step"] for e in resumed["events"]] == [15, 30]
    elif method == "full":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        scalars = EventAccumulator(str(run_dir / "tensorboard"))
        scalars.Reload()  # as TensorBoard reads it: the resumed writer purged steps after 20
        assert [e.step for e in scalars.Scalars("train/loss")] == list(range(5, 41, 5))
        assert [e.step for e in scalars.Scalars("val/bce")] == [20, 40]


@pytest.mark.slow
def test_a_diverging_run_stops_with_status_diverged_and_keeps_its_last_good_checkpoint(tmp_path, data_dir):
    run_dir = tmp_path / "diverging"
    # lr 1e8 makes the smoke model's loss non-finite within a few steps
    extra = ["method=full", "trainer.lr=1e8", "trainer.max_steps=40", "trainer.checkpoint_every=1"]
    result = _cli(tmp_path, data_dir, run_dir, extra)
    assert result.returncode == 3, result.stderr[-3000:]
    line = _one_line_refusal(result, "diverged: training loss is not finite at step")
    metrics = read_metrics(run_dir)
    step = metrics["diverged_at_step"]
    assert metrics["status"] == "diverged" and f"at step {step};" in line and 1 < step < 40
    # checkpoints up to the step before, none of the diverged state
    kept = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert kept == {"latest.json", *(f"step_{s}" for s in range(max(1, step - 2), step))}
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["latest"] == f"step_{step - 1}"
    # the same start again would diverge again: refused
    again = _cli(tmp_path, data_dir, run_dir, extra)
    _one_line_refusal(again, f"diverged at step {step}; resuming it would diverge again")


@pytest.mark.slow
def test_a_completed_run_is_never_overwritten_and_a_sweep_skips_it(tmp_path, data_dir):
    run_dir = tmp_path / "sweep" / "done"
    extra = ["method=hashing", "trainer.max_steps=4", "trainer.val_every=2"]
    _ok(_cli(tmp_path, data_dir, run_dir, extra))
    before = (run_dir / "metrics.json").read_text()
    saved_overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
    again = _cli(tmp_path, data_dir, run_dir, [*extra, "seed=5"])
    _one_line_refusal(again, "holds a completed run; it is never overwritten")
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == saved_overrides  # refused before Hydra wrote
    swept = _cli(tmp_path, data_dir, run_dir, extra, multirun=True)
    _ok(swept)
    assert f"skipped: already completed: {run_dir}" in swept.stdout
    assert (run_dir / "metrics.json").read_text() == before


@pytest.mark.slow
def test_a_second_run_into_a_live_runs_folder_is_refused(tmp_path, data_dir):
    from cce_dlrm.training.run_folder import FolderLock

    run_dir = tmp_path / "busy"
    lock = FolderLock(run_dir).acquire()  # stands for a live run
    try:
        result = _cli(tmp_path, data_dir, run_dir, ["method=hashing", "trainer.max_steps=4"])
        _one_line_refusal(result, f"run folder {run_dir} is in use by another run")
    finally:
        lock.release()
    assert not (run_dir / "metrics.json").exists()
