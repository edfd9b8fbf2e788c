"""The one place that checks a composed training config before anything runs.

``validate(cfg)`` runs first in the entry point (and in every job of a sweep), before any data
is read or model built; ``validate_against_dataset(cfg, meta, world_size)`` runs right after
the dataset's ``meta.json`` is opened, before the model is built, for the checks that need
the data (row and table counts). Each problem is one :class:`ConfigError` whose message names
the setting, the value and the fix, e.g.::

    configuration error: trainer.batch_size must be a positive integer, got 0

Checks that depend on a method's own settings (columns, budgets too small for its layout)
stay with the method and fire when the model is built, still before training.
"""

from __future__ import annotations

import math
import os
from typing import Any

from omegaconf import DictConfig, ListConfig

from cce_dlrm.embeddings.base import ConfigError

DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("sgd", "rowwise_adagrad")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(cfg: DictConfig, key: str, hint: str = "") -> int:
    value = _select(cfg, key)
    if not _is_int(value) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}{hint}")
    return value


def _select(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, DictConfig) else None
    return node


def _positive_number(cfg: DictConfig, key: str) -> float:
    value = _select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} must be a positive finite number, got {value!r}")
    return float(value)


def _layer_widths(cfg: DictConfig, key: str) -> list[int]:
    value = _select(cfg, key)
    widths = list(value) if isinstance(value, (ListConfig, list, tuple)) else None
    if not widths or not all(_is_int(w) and w > 0 for w in widths):
        shown = widths if widths is not None else value
        raise ConfigError(f"{key} must be a non-empty list of positive layer widths, got {shown!r}")
    return widths


def _world_size(world_size: int | None) -> int:
    return int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)


def _check_model(cfg: DictConfig) -> None:
    dim = _positive_int(cfg, "model.embedding_dim")
    bottom = _layer_widths(cfg, "model.bottom_mlp")
    top = _layer_widths(cfg, "model.top_mlp")
    if bottom[-1] != dim:
        raise ConfigError(f"the bottom MLP must end at the embedding dim ({dim}), got {bottom}: "
                          f"set model.bottom_mlp to end in {dim}")
    if top[-1] != 1:
        raise ConfigError(f"the top MLP must end in 1 output, got {top}")


def _check_trainer(cfg: DictConfig, world_size: int) -> None:
    batch = _positive_int(cfg, "trainer.batch_size")
    eval_batch = _positive_int(cfg, "trainer.eval_batch_size")
    _positive_int(cfg, "trainer.epochs")
    max_steps = _select(cfg, "trainer.max_steps")
    if max_steps == 0 and _is_int(max_steps):
        raise ConfigError("trainer.max_steps=0 would train nothing: use null for no limit "
                          "(train `trainer.epochs` epochs) or a positive number of steps")
    if max_steps is not None:
        _positive_int(cfg, "trainer.max_steps", " (null: no limit)")
    _positive_int(cfg, "trainer.val_every")
    _positive_number(cfg, "trainer.lr")
    optimizer = _select(cfg, "trainer.optimizer")
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise ConfigError(f"trainer.optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    every = _select(cfg, "trainer.checkpoint_every")
    if every is not None and (not _is_int(every) or every < 0):
        raise ConfigError(f"trainer.checkpoint_every must be an integer >= 0 (0: only at validations), got {every!r}")
    if _select(cfg, "trainer.keep_checkpoints") is not None:
        _positive_int(cfg, "trainer.keep_checkpoints")
    for key, value in (("trainer.batch_size", batch), ("trainer.eval_batch_size", eval_batch)):
        if value % world_size:
            raise ConfigError(f"{key}={value} is not divisible by the number of processes ({world_size}): "
                              "the global batch is split evenly; use a multiple of it")


def _check_runtime(cfg: DictConfig) -> None:
    from cce_dlrm.training.distributed import SHARDING_TYPES  # torchrec: imported only when checking

    device = cfg.get("device")
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    sharding = _select(cfg, "trainer.sharding_type")
    if sharding not in SHARDING_TYPES:
        raise ConfigError(f"trainer.sharding_type must be one of {', '.join(SHARDING_TYPES)}, got {sharding!r}")
    if device == "cuda" or sharding == "row_wise":
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is visible; use device=cpu (or auto)")
        if sharding == "row_wise" and (device == "cpu" or not torch.cuda.is_available()):
            raise ConfigError("trainer.sharding_type=row_wise needs CUDA (fbgemm has no CPU kernel for it); "
                              "use table_wise, column_wise or auto")


def _check_dataset_build(cfg: DictConfig) -> None:
    build = _select(cfg, "dataset.build")
    if not isinstance(build, DictConfig):
        return  # a prepared dataset (Criteo): nothing is generated
    for key in ("rows", "max_cardinality", "latent_dim", "clusters", "chunk_rows"):
        if key in build:
            _positive_int(cfg, f"dataset.build.{key}")
    fractions = []
    for key in ("val_fraction", "test_fraction"):
        if key in build:
            value = build[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"dataset.build.{key} must be a fraction in [0, 1), got {value!r}")
            fractions.append(value)
    if sum(fractions) >= 1:
        raise ConfigError(f"dataset.build.val_fraction + test_fraction = {sum(fractions)} leaves no training rows")
    if "ctr" in build:
        ctr = build.ctr
        if isinstance(ctr, bool) or not isinstance(ctr, (int, float)) or not 0 < ctr < 1:
            raise ConfigError(f"dataset.build.ctr must be a click rate in (0, 1), got {ctr!r}")


def _check_protocol(cfg: DictConfig) -> None:
    from cce_dlrm.training.early_stopping import RULES

    rule = _select(cfg, "trainer.early_stopping")
    if rule is not None and rule not in RULES:
        raise ConfigError(f"trainer.early_stopping must be one of {', '.join(RULES)}, got {rule!r}")


def validate(cfg: DictConfig, world_size: int | None = None) -> None:
    """Raises ConfigError for the first value of ``cfg`` that cannot work.

    ``world_size``: the number of processes (default: ``WORLD_SIZE`` from torchrun, else 1).
    """
    budget = cfg.get("max_table_params")
    if budget is not None and (not _is_int(budget) or budget <= 0):
        raise ConfigError(f"max_table_params must be a positive integer (learned floats per table) "
                          f"or null (no limit), got {budget!r}")
    seed = cfg.get("seed")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    _positive_number(cfg, "init_std")
    resume = cfg.get("resume", True)
    if not isinstance(resume, bool):
        raise ConfigError(f"resume must be true or false, got {resume!r}")
    _check_model(cfg)
    _check_trainer(cfg, _world_size(world_size))
    _positive_int(cfg, "logger.log_every")
    _positive_number(cfg, "logger.progress_interval")
    _check_runtime(cfg)
    _check_dataset_build(cfg)
    _check_protocol(cfg)


def batches_per_epoch(train_rows: int, batch_size: int) -> int:
    """Full training batches per epoch (the loader drops the last partial batch)."""
    return train_rows // batch_size


def validate_against_dataset(cfg: DictConfig, meta: dict, world_size: int | None = None) -> None:
    """The checks that need the dataset's ``meta.json`` (its rows and features).

    Raises ConfigError when the training split has no full batch, when ``trainer.max_steps``
    cannot be reached within ``trainer.epochs`` (it is refused, never silently cut), or when
    table-wise sharding has more processes than tables.
    """
    world_size = _world_size(world_size)
    trainer = cfg.trainer
    train_rows = int(meta["rows"]["train"])
    per_epoch = batches_per_epoch(train_rows, trainer.batch_size)
    if per_epoch == 0:
        raise ConfigError(f"the training split ({train_rows} rows) has no full batch of "
                          f"{trainer.batch_size}: lower trainer.batch_size")
    reachable = trainer.epochs * per_epoch
    if trainer.max_steps is not None and trainer.max_steps > reachable:
        needed = -(-trainer.max_steps // per_epoch)
        raise ConfigError(
            f"trainer.max_steps={trainer.max_steps} cannot be reached: trainer.epochs={trainer.epochs} x "
            f"{per_epoch} batches per epoch = {reachable} steps; set trainer.epochs={needed} "
            f"or trainer.max_steps<={reachable}"
        )
    tables = len(meta.get("cardinalities", []))
    if trainer.sharding_type == "table_wise" and world_size > tables:
        raise ConfigError(
            f"trainer.sharding_type=table_wise places whole tables on processes, but {world_size} processes "
            f"share {tables} tables: use at most {tables} processes, or column_wise / auto sharding"
        )
