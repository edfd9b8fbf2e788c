"""Checkpoints (training/checkpoint.py) and run-folder decisions (training/run_folder.py), in process."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from conftest import compose_config
from cce_dlrm.embeddings.base import TrainContext
from cce_dlrm.training import checkpoint as ckpt
from cce_dlrm.training.checkpoint import (CheckpointError, best_checkpoint, fingerprint, latest_checkpoint,
                                          load_checkpoint, load_model_state, save_checkpoint)
from cce_dlrm.training.run_folder import FolderLock, RunFolderTaken, decide_start, run_settings
from cce_dlrm.training.run_record import RunFolderError


def _build(data_dir, method="cce", extra=()):
    """A DMP model of the smoke config (table-wise: its tables are ShardedTensors), its optimizer."""
    from cce_dlrm.data.loader import SplitLoader
    from cce_dlrm.training.distributed import init_runtime, shard_model, unwrap
    from cce_dlrm.training.run import build_model, open_dataset
    from cce_dlrm.training.table_access import ShardedTableAccess

    cfg = compose_config(["experiment=smoke", f"paths.data_dir={data_dir}", f"method={method}", "device=cpu",
                          "trainer.sharding_type=table_wise", *extra])
    runtime = init_runtime("cpu")
    dataset = open_dataset(cfg.dataset, runtime)
    model, optimizer = shard_model(build_model(cfg, dataset, device="meta"), runtime, "table_wise", cfg.trainer.lr)
    method_module = unwrap(model).embedding
    access = ShardedTableAccess(model, "embedding", method_module, runtime.device)
    access.reset(method_module)
    loader = SplitLoader(dataset.split("train"), dataset.sparse_names, cfg.trainer.batch_size, shuffle=True)
    print_ = fingerprint(cfg, method, dataset.cardinalities, 1)
    return model, optimizer, method_module, TrainContext(tables=access), loader, print_


def _train_steps(model, optimizer, loader, n, start=0):
    for i, batch in enumerate(loader.epoch(0, start)):
        if i == n:
            break
        loss = F.binary_cross_entropy_with_logits(model(batch.dense, batch.sparse), batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _outputs(model, loader):
    batch = next(iter(loader.epoch(1)))
    with torch.no_grad():
        return model(batch.dense, batch.sparse)


def test_round_trip_restores_a_cce_model_after_a_clustering_round(tmp_path, data_dir):
    model, optimizer, method, context, loader, print_ = _build(data_dir)
    _train_steps(model, optimizer, loader, 5)
    method.cluster(context, step=5)  # cluster ids go from (0, c) to (sum of n, c)
    _train_steps(model, optimizer, loader, 3, start=5)
    assert method.clustered and method.cluster_ids.shape[0] > 0
    state = {"step": 8, "history": [{"step": 8, "val_bce": 0.5}], "running_loss": 1.25}
    torch.manual_seed(123)
    save_checkpoint(tmp_path, 8, model, optimizer, state, print_, is_best=True)
    expected, expected_draw = _outputs(model, loader), torch.rand(3)

    fresh, fresh_opt, fresh_method, _, _, _ = _build(data_dir)
    assert not fresh_method.clustered
    assert not torch.equal(_outputs(fresh, loader), expected)
    restored = load_checkpoint(latest_checkpoint(tmp_path), fresh, fresh_opt, print_)
    assert restored == state
    assert torch.equal(fresh_method.cluster_ids, method.cluster_ids)
    assert int(fresh_method.cluster_round) == 1
    assert torch.equal(_outputs(fresh, loader), expected)
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG continues where the saved one was
    # and it trains on identically
    _train_steps(model, optimizer, loader, 2, start=8)
    _train_steps(fresh, fresh_opt, loader, 2, start=8)
    assert torch.equal(_outputs(fresh, loader), _outputs(model, loader))


def test_a_checkpoint_of_another_configuration_is_refused_naming_the_difference(tmp_path, data_dir):
    model, optimizer, _, _, _, print_ = _build(data_dir, method="full")
    save_checkpoint(tmp_path, 1, model, optimizer, {}, print_)
    other = dict(print_, max_table_params=800)
    with pytest.raises(CheckpointError, match=r"max_table_params: 400 there, 800 here"):
        load_checkpoint(latest_checkpoint(tmp_path), model, optimizer, other)
    cards = list(print_["cardinalities"])
    cards[3] += 1
    with pytest.raises(CheckpointError, match=r"cardinalities\[3\]"):
        load_model_state(model, latest_checkpoint(tmp_path), dict(print_, cardinalities=cards))
    # the model alone may be loaded under another world size (DCP reshards), a resume may not
    load_model_state(model, latest_checkpoint(tmp_path), dict(print_, world_size=2))
    with pytest.raises(CheckpointError, match="world_size: 1 there, 2 here"):
        load_checkpoint(latest_checkpoint(tmp_path), model, optimizer, dict(print_, world_size=2))


def test_keeps_the_last_n_and_the_best(tmp_path, data_dir):
    model, optimizer, _, _, _, print_ = _build(data_dir, method="full")
    for step, best in ((10, True), (20, False), (30, False), (40, False)):
        save_checkpoint(tmp_path, step, model, optimizer, {"step": step}, print_, keep=2, is_best=best)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step_10", "step_30", "step_40"]
    assert json.loads((root / "latest.json").read_text()) == {"latest": "step_40", "best": "step_10"}
    assert best_checkpoint(tmp_path) == root / "step_10"
    save_checkpoint(tmp_path, 50, model, optimizer, {"step": 50}, print_, keep=2, is_best=True)
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step_40", "step_50"]


def test_a_crash_mid_write_leaves_the_previous_checkpoint_and_pointer(tmp_path, data_dir):
    model, optimizer, _, _, _, print_ = _build(data_dir, method="full")
    save_checkpoint(tmp_path, 10, model, optimizer, {"step": 10}, print_, is_best=True)
    root = tmp_path / "checkpoints"
    pointer = (root / "latest.json").read_text()
    # what a process killed while writing step 20 leaves behind
    (root / "step_20.tmp").mkdir()
    (root / "step_20.tmp" / "__0_0.distcp").write_bytes(b"partial")
    (root / "latest.json.tmp").write_text('{"latest": "step_2')
    assert latest_checkpoint(tmp_path) == root / "step_10"  # never read
    assert (root / "latest.json").read_text() == pointer
    # a new start cleans it up and resumes from the intact one
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "running"}))
    decision = decide_start(tmp_path)
    assert decision.action == "resume" and decision.checkpoint == str(root / "step_10")
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step_10"]


def test_a_full_disk_while_writing_is_one_line_and_loses_nothing(tmp_path, data_dir, monkeypatch):
    model, optimizer, _, _, _, print_ = _build(data_dir, method="full")
    save_checkpoint(tmp_path, 10, model, optimizer, {"step": 10}, print_, is_best=True)
    root = tmp_path / "checkpoints"
    pointer = (root / "latest.json").read_text()

    def disk_fills_up(state, storage_writer):
        (storage_writer.path / "__0_0.distcp").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.dcp, "save", disk_fills_up)
    with pytest.raises(RunFolderError, match=r"step_20 \(No space left on device\); the previous checkpoint "
                                             r"step_10 is kept and the partial one was removed"):
        save_checkpoint(tmp_path, 20, model, optimizer, {"step": 20}, print_)
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step_10"]
    assert (root / "latest.json").read_text() == pointer


def test_checkpoint_metadata_that_would_run_code_is_refused(tmp_path, data_dir):
    model, optimizer, _, _, _, print_ = _build(data_dir, method="full")
    folder = save_checkpoint(tmp_path, 1, model, optimizer, {}, print_)
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / ".metadata").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_model_state(model, folder)
    assert not marker.exists()


# --- run folder decisions ---------------------------------------------------------------------
def _metrics(folder, **values):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(values))


def _fake_checkpoint(folder, step):
    path = folder / "checkpoints" / f"step_{step}"
    path.mkdir(parents=True)
    (path / "checkpoint.json").write_text("{}")
    return path


def test_a_completed_run_is_refused_or_skipped_in_a_multirun(tmp_path):
    _metrics(tmp_path, status="completed", best_val_bce=0.45)
    with pytest.raises(RunFolderTaken, match="holds a completed run; it is never overwritten"):
        decide_start(tmp_path)
    decision = decide_start(tmp_path, multirun=True)
    assert decision.action == "skip" and decision.previous["best_val_bce"] == 0.45


def _config(lr=0.5, **trainer):
    """A resolved config as metrics.json records it (the parts run_settings reads, and others)."""
    return {"method": {"_target_": "cce_dlrm.embeddings.hashing.HashingEmbedding"}, "model": {"embedding_dim": 16},
            "dataset": {"name": "synthetic", "path": "/somewhere/data/processed/synthetic", "build": {"rows": 100}},
            "max_table_params": 1600, "init_std": 0.05, "seed": 0, "table_precision": "fp32",
            "logger": {"log_every": 100}, "paths": {"runs_dir": "runs"}, "baseline_run": None,
            "trainer": {"lr": lr, "batch_size": 512, "checkpoint_every": 0, "sharding_type": "auto", **trainer}}


def test_a_multirun_skips_a_completed_run_only_with_the_same_settings(tmp_path):
    done = _config()  # recorded before trainer.optimizer existed: it ran SGD
    _metrics(tmp_path, status="completed", best_val_bce=0.45, config=done)
    same = run_settings({**_config(optimizer="sgd", checkpoint_every=500, sharding_type="table_wise"),
                         "dataset": {**done["dataset"], "path": "/elsewhere"}, "logger": {"log_every": 7}})
    assert decide_start(tmp_path, multirun=True, settings=same).action == "skip"
    for other, diff in ((_config(lr=1.0), "trainer.lr: 0.5 there, 1.0 here"),
                        (_config(optimizer="rowwise_adagrad"), "trainer.optimizer: 'sgd' there, 'rowwise_adagrad' here"),
                        ({**_config(), "max_table_params": 3200}, "max_table_params: 1600 there, 3200 here")):
        with pytest.raises(RunFolderTaken, match=f"holds a completed run with other settings \\({diff}\\); "
                                                 "it is never overwritten: sweep into another folder"):
            decide_start(tmp_path, multirun=True, settings=run_settings(other))
    # a run recorded without its config: nothing to compare, skipped as before
    _metrics(tmp_path / "bare", status="completed")
    assert decide_start(tmp_path / "bare", multirun=True, settings=same).action == "skip"


def test_unfinished_runs_resume_unless_resume_is_false(tmp_path):
    assert decide_start(tmp_path / "new").action == "fresh"
    for status in ("running", "failed"):
        folder = tmp_path / status
        _metrics(folder, status=status)
        latest = _fake_checkpoint(folder, 20)
        _fake_checkpoint(folder, 10)
        decision = decide_start(folder)
        assert decision.action == "resume" and decision.checkpoint == str(latest)
        with pytest.raises(RunFolderTaken, match=f"unfinished run \\(status {status}; its last checkpoint is step_20\\)"):
            decide_start(folder, resume=False)
    # killed before its first checkpoint: it starts again, without the old scalars
    folder = tmp_path / "early"
    _metrics(folder, status="running")
    (folder / "tensorboard").mkdir()
    assert decide_start(folder).action == "fresh" and not (folder / "tensorboard").exists()


def test_a_diverged_run_is_not_resumed(tmp_path):
    _metrics(tmp_path, status="diverged", diverged_at_step=3)
    _fake_checkpoint(tmp_path, 2)
    with pytest.raises(RunFolderTaken, match="diverged at step 3; resuming it would diverge again"):
        decide_start(tmp_path)


def test_a_locked_folder_is_refused(tmp_path):
    lock = FolderLock(tmp_path).acquire()
    try:
        with pytest.raises(RunFolderTaken, match=f"in use by another run \\(process {os.getpid()} "):
            FolderLock(tmp_path).acquire()
    finally:
        lock.release()
    FolderLock(tmp_path).acquire().release()  # free again once released
