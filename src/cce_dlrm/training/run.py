"""Builds one training run from a composed config and runs it; returns its metrics.

The data flows one way: dataset folder (meta.json + arrays) -> loaders -> embedding
method (from ``cfg.method``) -> DLRM -> DistributedModelParallel -> training loop ->
TensorBoard and ``metrics.json`` in the run folder.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cce_dlrm.config_check import validate_against_dataset
from cce_dlrm.data.loader import SplitLoader
from cce_dlrm.data.processed import ProcessedDataset
from cce_dlrm.embeddings.base import ConfigError, FeatureSpec, TableMethod, TrainContext, TableAccess
from cce_dlrm.model.dlrm import DLRM
from cce_dlrm.training.distributed import Runtime, init_runtime, shard_model, unwrap
from cce_dlrm.training.evaluation import split_label_summary
from cce_dlrm.training.checkpoint import (
    best_checkpoint,
    check_fingerprint,
    fingerprint,
    load_checkpoint,
    load_model_state,
    read_info,
    save_checkpoint,
)
from cce_dlrm.training.loop import LoopResult, LoopSettings, TrainingDiverged, total_steps, train_loop
from cce_dlrm.training.run_folder import StartDecision, claim_run_folder, run_settings
from cce_dlrm.training.run_record import RunRecord
from cce_dlrm.training.table_access import ShardedTableAccess


def open_dataset(dataset_cfg: DictConfig, runtime: Runtime) -> ProcessedDataset:
    """Opens the processed dataset; an embedded one (``build`` set) is generated if missing."""
    if dataset_cfg.get("build") is not None:
        if "_target_" not in dataset_cfg.build:
            raise ConfigError(
                f"dataset {dataset_cfg.name!r} has `build` settings but no generator (`_target_`); "
                "an experiment overlay for the synthetic data was probably combined with another dataset"
            )
        if runtime.is_main:
            instantiate(dataset_cfg.build)(path=dataset_cfg.path)
        if dist.is_initialized():
            dist.barrier()
    return ProcessedDataset(dataset_cfg.path)


def build_method(cfg: DictConfig, dataset: ProcessedDataset, device: str | None):
    features = [FeatureSpec(n, c) for n, c in zip(dataset.sparse_names, dataset.cardinalities)]
    factory = instantiate(cfg.method)
    if not callable(factory):
        raise ConfigError("a method config must set `_partial_: true` (its sizes come at run time)")
    method = factory(features=features, dim=cfg.model.embedding_dim, max_table_params=cfg.max_table_params,
                     init_std=cfg.init_std, seed=cfg.seed, device=device)
    precision = cfg.get("table_precision", "fp32")
    if isinstance(method, TableMethod):
        method.set_table_precision(precision)  # before sharding: the collection is rebuilt
    elif precision != "fp32":
        raise ConfigError(f"table_precision={precision} applies to table-based methods only, "
                          f"not to {type(method).__name__}")
    return method


def build_model(cfg: DictConfig, dataset: ProcessedDataset, device: str | None = None) -> DLRM:
    """The (unsharded) DLRM for ``cfg``; tables on ``device`` ('meta' before sharding)."""
    torch.manual_seed(cfg.seed)  # same MLP init on every rank and every rerun
    method = build_method(cfg, dataset, device)
    return DLRM(method, dense_in_features=dataset.meta["num_dense"],
                bottom_mlp=cfg.model.bottom_mlp, top_mlp=cfg.model.top_mlp)


def _table_access(model, method, runtime: Runtime, optimizer=None) -> TableAccess | None:
    if isinstance(method, TableMethod):
        return ShardedTableAccess(model, "embedding", method, runtime.device, optimizer)
    return None  # the method has no torchrec tables


def _broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(tensor, src)
    return tensor


#: what a post-training method's source checkpoint must share with it (the trained model's shape)
SOURCE_KEYS = ("dataset", "cardinalities", "embedding_dim", "model", "seed")


def load_source_model(model, source_run: Path | str, config_print: dict) -> int:
    """Loads the best-validation checkpoint of ``source_run`` (a trained ``full`` run) into
    ``model``, for a post-training method (pq) that quantizes it instead of training again.

    Refuses, with one line, a missing checkpoint or one of another dataset, model or seed.
    Returns the checkpoint's step. Collective.
    """
    ckpt = best_checkpoint(source_run)
    if ckpt is None:
        raise ConfigError(f"baseline_run={source_run} has no best-validation checkpoint: run the full-table "
                          "baseline first (make reproduce-table1 does), or set baseline_run=null to train here")
    info = read_info(ckpt)
    check_fingerprint(info.get("fingerprint", {}), config_print, ckpt, SOURCE_KEYS)
    load_model_state(model, ckpt, partial=True)
    return int(info["trainer"]["steps"])


def run_training(cfg: DictConfig, run_dir: Path | str, method_key: str = "?", multirun: bool = False) -> dict:
    """Trains into ``run_dir`` (or resumes the unfinished run there); returns ``metrics.json``'s data.

    The folder's fate is decided first (``training/run_folder.py``): a completed run is never
    overwritten (refused; skipped with its metrics returned inside a multirun), an unfinished
    one continues from its latest checkpoint unless ``resume=false``, and the folder is locked
    while this run lives.
    """
    run_dir = Path(run_dir)
    runtime = init_runtime(cfg.device)
    lock, decision = claim_run_folder(run_dir, runtime.is_main, resume=bool(cfg.get("resume", True)),
                                      multirun=multirun,
                                      settings=run_settings(OmegaConf.to_container(cfg, resolve=True)))
    try:
        if decision.action == "skip":
            if runtime.is_main:
                print(f"skipped: already completed: {run_dir}", flush=True)
            return decision.previous
        return _train(cfg, run_dir, method_key, runtime, decision)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: DictConfig, run_dir: Path, method_key: str, runtime: Runtime, decision: StartDecision) -> dict:
    started = time.time()
    dataset = open_dataset(cfg.dataset, runtime)
    validate_against_dataset(cfg, dataset.meta, runtime.world_size)  # before the model is built
    trainer = cfg.trainer
    loaders = {
        "train": SplitLoader(dataset.split("train"), dataset.sparse_names, trainer.batch_size,
                             runtime.rank, runtime.world_size, shuffle=True, seed=cfg.seed),
        "val": SplitLoader(dataset.split("val"), dataset.sparse_names, trainer.eval_batch_size,
                           runtime.rank, runtime.world_size),
        "test": SplitLoader(dataset.split("test"), dataset.sparse_names, trainer.eval_batch_size,
                            runtime.rank, runtime.world_size),
    }
    model = build_model(cfg, dataset, device="meta")
    method = model.embedding
    learned = method.learned_params()
    aux = method.aux_bytes()
    model, optimizer = shard_model(model, runtime, trainer.sharding_type, trainer.lr,
                                   trainer.get("optimizer", "sgd"))
    method = unwrap(model).embedding
    access = _table_access(model, method, runtime, optimizer)
    if isinstance(access, ShardedTableAccess):
        access.reset(method)
    context = TrainContext(tables=access, rank=runtime.rank, world_size=runtime.world_size,
                           broadcast=_broadcast, steps_per_epoch=len(loaders["train"]))
    config_print = fingerprint(cfg, method_key, dataset.cardinalities, runtime.world_size)
    state = None
    if decision.action == "resume":
        # refuses (one line) a checkpoint of another configuration, before anything is written
        state = LoopResult.from_state_dict(
            load_checkpoint(decision.checkpoint, model, optimizer, config_print, runtime.device))
        learned, aux = method.learned_params(), method.aux_bytes()  # CCE's ids may be back

    writer = None
    if runtime.is_main and cfg.logger.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        # resumed: TensorBoard hides the killed run's events after the checkpoint's step
        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=state.steps + 1 if state else None)
    if writer is not None and state is None:
        writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```")
        writer.add_scalar("params/learned_total", sum(learned), 0)
        writer.add_scalar("params/largest_table", max(learned), 0)
        writer.add_scalar("memory/aux_bytes", sum(aux), 0)
    labels = {split: split_label_summary(dataset.split(split).labels) for split in ("val", "test")}
    settings = LoopSettings(epochs=trainer.epochs, max_steps=trainer.max_steps, val_every=trainer.val_every,
                            log_every=cfg.logger.log_every, progress=cfg.logger.progress_bar,
                            checkpoint_every=int(trainer.get("checkpoint_every") or 0),
                            early_stopping=str(trainer.get("early_stopping", "none")))
    source_run = cfg.get("baseline_run") if method.report_final_only else None
    source_step = None
    if source_run and state is None:
        # a post-training method on a trained baseline: nothing to train here
        source_step = load_source_model(model, source_run, config_print)
        settings.epochs, settings.max_steps = 0, None
    keep = int(trainer.get("keep_checkpoints", 2))
    if settings.checkpoint_every < 0 or keep < 1:
        raise ConfigError(f"trainer.checkpoint_every must be >= 0 and trainer.keep_checkpoints >= 1, got "
                          f"{settings.checkpoint_every} and {keep}")
    resumes = list(decision.previous.get("resumes", []))
    if state is not None:
        resumes.append({"from_step": state.steps, "previous_status": decision.previous.get("status"),
                        "checkpoint": Path(decision.checkpoint).name})
    record = RunRecord(
        run_dir / "metrics.json", enabled=runtime.is_main, status="running",
        method=method_key, dataset=cfg.dataset.name, max_table_params=cfg.max_table_params,
        embedding_dim=cfg.model.embedding_dim, seed=cfg.seed, world_size=runtime.world_size,
        device=runtime.device.type, sharding_type=trainer.sharding_type,
        batch_size=trainer.batch_size, lr=trainer.lr, optimizer=trainer.get("optimizer", "sgd"),
        planned_steps=total_steps(settings, len(loaders["train"])),
        learned_params=sum(learned), learned_params_largest_table=max(learned),
        learned_params_per_feature=learned,
        learned_bytes=sum(method.learned_bytes()), aux_bytes=sum(aux), aux_bytes_per_feature=aux,
        baseline_bce=labels["val"]["baseline_bce"], baseline_bce_val=labels["val"]["baseline_bce"],
        baseline_bce_test=labels["test"]["baseline_bce"], val_auc_undefined=labels["val"]["auc_undefined"],
        test_auc_undefined=labels["test"]["auc_undefined"], rows=dataset.rows,
        host=platform.node(), config=OmegaConf.to_container(cfg, resolve=True), resumes=resumes,
        early_stopping=settings.early_stopping, steps_per_epoch=len(loaders["train"]),
        **({"source_run": str(source_run), "source_step": source_step} if source_run else {}),
    )

    def checkpoint(result: LoopResult, is_best: bool) -> None:
        save_checkpoint(run_dir, result.steps, model, optimizer, result.state_dict(), config_print,
                        keep=keep, is_best=is_best, device=runtime.device)

    def restore_best() -> int | None:
        best = best_checkpoint(run_dir)
        if best is None:
            return source_step  # trained elsewhere (baseline_run), or no validation was ever taken
        return int(load_model_state(model, best)["trainer"]["steps"])

    try:
        result = train_loop(model, optimizer, method, context, loaders, runtime.device, settings,
                            writer, record, runtime.is_main, state=state, checkpoint=checkpoint,
                            restore_best=restore_best)
        # a method may change its accounting during training (CCE's cluster ids, pq's codes)
        learned, aux = method.learned_params(), method.aux_bytes()
        if writer is not None:
            writer.add_scalar("params/learned_total", sum(learned), result.steps)
            writer.add_scalar("params/largest_table", max(learned), result.steps)
            writer.add_scalar("memory/aux_bytes", sum(aux), result.steps)
    except TrainingDiverged as err:
        # the last good checkpoint stays; no checkpoint of the diverged state was written
        record.update(status="diverged", diverged_at_step=err.step, error=str(err),
                      wall_seconds=time.time() - started)
        raise
    except BaseException as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}",
                      wall_seconds=time.time() - started)
        raise
    finally:
        if writer is not None:
            writer.close()
    record.update(
        status="completed", steps=result.steps, samples_per_second=result.samples_per_second,
        train_seconds=result.train_seconds, method_hook_seconds=result.hook_seconds,
        wall_seconds=time.time() - started, stopped_early_at_epoch=result.stopped_early_at_epoch,
        epochs_run=result.epoch + (1 if result.batch_in_epoch else 0),
        restored_from_step=result.restored_from_step,
        learned_params=sum(learned), learned_params_largest_table=max(learned),
        learned_params_per_feature=learned, learned_bytes=sum(method.learned_bytes()),
        aux_bytes=sum(aux), aux_bytes_per_feature=aux,
    )
    return record.data
