"""Checkpoints of a training run: tensors through ``torch.distributed.checkpoint``, the rest JSON.

Layout (``<run_dir>/checkpoints/``)::

    latest.json          {"latest": "step_300", "best": "step_200"}   (rewritten via tmp + os.replace)
    step_300/            one complete checkpoint:
        .metadata            DCP's index of the tensors (read with a restricted unpickler, below)
        __<rank>_0.distcp    DCP's tensor data: the DMP model's state_dict (ShardedTensors for
                             sharded tables, plain tensors for dense layers, data-parallel tables
                             and every method buffer such as CCE's cluster ids and round) and
                             the optimizer's tensor state (fused SGD has none today)
        checkpoint.json      config fingerprint, trainer state (step, epoch, batch in the epoch,
                             running-loss window, best-so-far, history, events), the shapes of
                             every buffer, the optimizer's non-tensor state
        rng_rank<r>.json     torch / numpy / python (and CUDA) RNG states of rank r
    step_200/            the best validation so far: never pruned while it is the best
    step_400.tmp/        being written; never read, removed on resume

Atomic: a checkpoint is written into ``step_<N>.tmp/`` by every rank, then (after a
barrier) rank 0 renames it to ``step_<N>/`` and only then rewrites ``latest.json``. A crash
at any point leaves the previous checkpoints intact, and no pointer ever names a partial
folder. The last ``keep`` step folders are kept, plus the best one.

Safe loading: nothing here executes pickled code. Tensor files are read by DCP with
``torch.load(weights_only=True)``; DCP's own ``.metadata`` index is a pickle, read here with
an unpickler that only resolves DCP's metadata classes, ``torch.Size`` and dtypes; the rest
is JSON.

Exactness: on CPU a resumed run continues bit for bit (tests/test_resume.py). On a GPU the
fbgemm and cuBLAS kernels are not bit-deterministic by default (atomic adds in the backward
pass), so an interrupted and an uninterrupted run agree to about 1e-6 relative, not in bits.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException

from cce_dlrm.embeddings.base import ConfigError
from cce_dlrm.training.run_record import RunFolderError

CHECKPOINTS = "checkpoints"
POINTER = "latest.json"
INFO = "checkpoint.json"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")

# what may appear in DCP's .metadata pickle: its own dataclasses, sizes, dtypes, paths
_SAFE_MODULES = {"torch.distributed.checkpoint.metadata"}
_SAFE_GLOBALS = {("torch", "Size"), ("torch.serialization", "_get_layout"),
                 ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
                 ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "Path"),
                 ("collections", "OrderedDict")}


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used (unreadable, foreign, or not tensor-only)."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        value = None
        if module in _SAFE_MODULES or (module, name) in _SAFE_GLOBALS:
            value = super().find_class(module, name)
        elif module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            value = getattr(torch, name)
        if value is None or (module in _SAFE_MODULES and not isinstance(value, type)):
            raise CheckpointError(f"checkpoint metadata refers to {module}.{name}, which a "
                                  "tensor-only checkpoint never does; refusing to load it")
        return value


class SafeFileSystemReader(FileSystemReader):
    """DCP's file reader with a metadata index that cannot run code when read."""

    def read_metadata(self, *args: Any, **kwargs: Any):
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        from torch.distributed.checkpoint.metadata import StorageMeta

        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


# --- fingerprint ---------------------------------------------------------------------------
# model keys must match for any use of a checkpoint (loading weights into a model);
# run keys also for resuming (they decide the data order, batch split and RNG streams)
MODEL_KEYS = ("method", "method_config", "dataset", "cardinalities", "max_table_params",
              "embedding_dim", "model", "table_precision")
RUN_KEYS = ("seed", "batch_size", "world_size", "sharding_type", "lr", "optimizer", "epochs", "max_steps")
# keys added after checkpoints were first written: an older checkpoint had their default
ADDED_KEY_DEFAULTS = {"optimizer": "sgd"}


def fingerprint(cfg, method_key: str, cardinalities: list[int], world_size: int) -> dict:
    """What a checkpoint must agree on with the run that loads it (JSON-able)."""
    from omegaconf import OmegaConf

    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    return {
        "method": method_key, "method_config": method_cfg, "dataset": cfg.dataset.name,
        "cardinalities": [int(c) for c in cardinalities], "max_table_params": cfg.max_table_params,
        "embedding_dim": cfg.model.embedding_dim, "model": model_cfg,
        "table_precision": cfg.get("table_precision", "fp32"),
        "seed": cfg.seed, "batch_size": cfg.trainer.batch_size, "world_size": world_size,
        "sharding_type": cfg.trainer.sharding_type, "lr": cfg.trainer.lr,
        "optimizer": cfg.trainer.get("optimizer", "sgd"),
        "epochs": cfg.trainer.epochs, "max_steps": cfg.trainer.max_steps,
    }


def first_difference(saved: Any, current: Any, path: str) -> str | None:
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            where = f"{path}.{key}" if path else key
            if key not in saved or key not in current:
                return f"{where}: {saved.get(key, '(absent)')!r} there, {current.get(key, '(absent)')!r} here"
            diff = first_difference(saved[key], current[key], where)
            if diff:
                return diff
        return None
    if saved != current:
        if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
            i = next(i for i, (a, b) in enumerate(zip(saved, current)) if a != b)
            return f"{path}[{i}]: {saved[i]!r} there, {current[i]!r} here"
        return f"{path}: {saved!r} there, {current!r} here"
    return None


def check_fingerprint(saved: dict, current: dict, ckpt_dir: Path, keys=MODEL_KEYS + RUN_KEYS) -> None:
    """Raises CheckpointError naming the first setting in ``keys`` that differs."""
    saved = {**ADDED_KEY_DEFAULTS, **saved}
    for key in keys:
        diff = first_difference(saved.get(key), current.get(key), key)
        if diff:
            raise CheckpointError(f"checkpoint {ckpt_dir} was written by another configuration "
                                  f"({diff}); use a new run folder for this one")


# --- RNG states (JSON) ---------------------------------------------------------------------
def rng_state(device: torch.device | None = None) -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).tolist()
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8), device)


# --- optimizer state: tensors to DCP, the rest to JSON -------------------------------------
def _split(value: Any, path: str, tensors: dict, out_path: str = "") -> Any:
    """Replaces every tensor in a nested dict/list by a reference, collecting it in ``tensors``."""
    if isinstance(value, (torch.Tensor, ShardedTensor)):
        tensors[path] = value
        return {"__tensor__": path}
    if isinstance(value, dict):
        return {str(k): _split(v, f"{path}/{k}", tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"optimizer state holds a {type(value).__name__} at {path}; only tensors "
                          "and plain values can be checkpointed")


def _join(value: Any, tensors: dict) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            return tensors[value["__tensor__"]]
        return {k: _join(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    return value


# --- folders -------------------------------------------------------------------------------
def checkpoints_dir(run_dir: Path | str) -> Path:
    return Path(run_dir) / CHECKPOINTS


def _step_dirs(root: Path) -> dict[int, Path]:
    """Complete checkpoint folders by step (a folder is complete once renamed from .tmp)."""
    if not root.is_dir():
        return {}
    out = {}
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / INFO).is_file():
            out[int(m.group(1))] = p
    return out


def read_pointer(root: Path) -> dict:
    try:
        return json.loads((root / POINTER).read_text())
    except (OSError, ValueError):
        return {}


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    """The newest complete checkpoint of a run (``latest.json``, or a newer complete folder
    if the run stopped between the rename and the pointer update)."""
    steps = _step_dirs(checkpoints_dir(run_dir))
    return steps[max(steps)] if steps else None


def best_checkpoint(run_dir: Path | str) -> Path | None:
    """The checkpoint at the best validation so far (what PQ quantizes; test-at-best comes from it)."""
    root = checkpoints_dir(run_dir)
    name = read_pointer(root).get("best")
    return root / name if name and (root / name / INFO).is_file() else None


def remove_stale(run_dir: Path | str) -> list[Path]:
    """Removes half-written ``*.tmp`` folders (and pointer temp files) left by a crash."""
    root = checkpoints_dir(run_dir)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.endswith(".tmp"):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed.append(p)
    return removed


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _quiet_sharded_tensors():
    """torchrec's sharded tables are ShardedTensors, which PyTorch now warns about on each use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Please use DTensor instead.*", category=FutureWarning)
        yield


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


# --- save / load ---------------------------------------------------------------------------
def _buffer_shapes(model: nn.Module) -> dict[str, list]:
    return {k: [list(v.shape), str(v.dtype).removeprefix("torch.")]
            for k, v in model.state_dict().items()
            if isinstance(v, torch.Tensor) and not isinstance(v, ShardedTensor)}


def _reason(err: BaseException) -> str:
    """'No space left on device' for an OSError, also one wrapped by DCP (per-rank failures)."""
    failures = getattr(err, "failures", None)
    if failures:
        err = next(iter(failures.values()))[0]
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return f"{type(err).__name__}: {err}"


def _agree(failure: BaseException | None, tmp: Path, final: Path, device: torch.device | None) -> None:
    """Every rank learns whether any rank failed; then all raise together (no rank hangs)."""
    failed = failure is not None
    if dist.is_initialized() and dist.get_world_size() > 1:
        flag = torch.tensor([float(failed)], device=device if device is not None else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        failed = bool(flag.item())
    if not failed:
        return
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    previous = latest_checkpoint(final.parent.parent)
    kept = f"the previous checkpoint {previous.name} is kept" if previous else "there is no earlier checkpoint"
    reason = _reason(failure) if failure is not None else "failed on another process"
    raise RunFolderError(f"cannot write checkpoint {final} ({reason}); {kept} and the partial one was "
                         "removed. Free space or make the folder writable, then start the same command to resume")


def save_checkpoint(run_dir: Path | str, step: int, model: nn.Module, optimizer,
                    trainer_state: dict, fingerprint_: dict, keep: int = 2, is_best: bool = False,
                    device: torch.device | None = None) -> Path:
    """Writes ``checkpoints/step_<step>/`` atomically (collective: every rank calls it).

    ``trainer_state`` is JSON-able (the loop's position, best-so-far, history, events).
    Returns the final folder. A write that fails (disk full, unwritable folder) on any rank
    removes the partial folder and raises RunFolderError (one line) on every rank; the
    previous checkpoints and the pointer stay as they were.
    """
    root = checkpoints_dir(run_dir)
    final, tmp = root / f"step_{step}", root / f"step_{step}.tmp"
    rank = _rank()
    failure: BaseException | None = None
    try:
        if rank == 0:
            root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
    except OSError as err:
        failure = err
    _agree(failure, tmp, final, device)
    try:
        optim_tensors: dict = {}
        optim_rest = _split(optimizer.state_dict(), "optimizer", optim_tensors) if optimizer is not None else None
        with _quiet_sharded_tensors():
            state = {"model": model.state_dict()}
            if optim_tensors:  # DCP refuses an empty dict as a key's value on load
                state["optimizer"] = optim_tensors
            dcp.save(state, storage_writer=FileSystemWriter(str(tmp), sync_files=True))
            buffers = _buffer_shapes(model)
        _write_json_atomic(tmp / f"rng_rank{rank}.json", rng_state(device))
        if rank == 0:
            _write_json_atomic(tmp / INFO, {
                "format": FORMAT_VERSION, "step": step, "fingerprint": fingerprint_,
                "trainer": trainer_state, "buffers": buffers, "optimizer": optim_rest,
            })
    except (OSError, CheckpointException) as err:
        failure = err
    _agree(failure, tmp, final, device)  # every rank's files are in place, or none is used
    try:
        if rank == 0:
            if final.exists():  # the same step written again (a rerun of it): the new one wins
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(root)
            pointer = read_pointer(root)
            pointer["latest"] = final.name
            if is_best:
                pointer["best"] = final.name
            _write_json_atomic(root / POINTER, pointer)
            _prune(root, keep, pointer.get("best"))
    except OSError as err:
        failure = err
    _agree(failure, tmp, final, device)
    return final


def _prune(root: Path, keep: int, best: str | None) -> None:
    steps = _step_dirs(root)
    for s in sorted(steps)[: max(0, len(steps) - max(1, keep))]:
        if steps[s].name != best:
            shutil.rmtree(steps[s])


def read_info(ckpt_dir: Path | str) -> dict:
    try:
        return json.loads((Path(ckpt_dir) / INFO).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {ckpt_dir} is unreadable ({err})") from None


def _resize_buffers(model: nn.Module, ckpt_dir: Path, inner: nn.Module) -> None:
    """Gives every buffer the saved shape and dtype (CCE's cluster ids exist only after a round)."""
    metadata = SafeFileSystemReader(str(ckpt_dir)).read_metadata()
    saved = metadata.state_dict_metadata
    for key, value in model.state_dict().items():
        md = saved.get(f"model.{key}")
        if isinstance(value, ShardedTensor) or md is None or not hasattr(md, "size"):
            continue
        if tuple(md.size) == tuple(value.shape) and md.properties.dtype == value.dtype:
            continue
        owner, _, name = key.rpartition(".")
        module = inner.get_submodule(owner) if owner else inner
        if name not in module._buffers:
            raise CheckpointError(f"checkpoint {ckpt_dir} holds {key} of shape {tuple(md.size)}, "
                                  f"this model {tuple(value.shape)}")
        module._buffers[name] = torch.empty(tuple(md.size), dtype=md.properties.dtype, device=value.device)


def _missing_learned_state(model: nn.Module, ckpt_dir: Path) -> list[str]:
    """Keys of ``model``'s state that the checkpoint lacks, other than buffers."""
    saved = SafeFileSystemReader(str(ckpt_dir)).read_metadata().state_dict_metadata
    buffers = {name for name, _ in model.named_buffers()}
    return [key for key in model.state_dict() if f"model.{key}" not in saved and key not in buffers]


def load_model_state(model: nn.Module, ckpt_dir: Path | str, fingerprint_: dict | None = None,
                     optimizer=None, inner: nn.Module | None = None, partial: bool = False) -> dict:
    """Loads a checkpoint's model (and optionally optimizer) state into ``model`` in place.

    ``model`` is the DMP-wrapped model built for the same config (any world size: DCP
    reshards); ``inner`` the module inside it (buffers are resized there; by default
    ``unwrap(model)``). With ``fingerprint_`` the checkpoint must match its
    model keys. ``partial``: buffers the checkpoint lacks keep their values (a pq model
    loading a trained full model has codes the full one never had); every learned tensor
    must still be there. Collective. Returns the checkpoint's ``checkpoint.json`` contents.
    """
    ckpt_dir = Path(ckpt_dir)
    info = read_info(ckpt_dir)
    if fingerprint_ is not None:
        check_fingerprint(info.get("fingerprint", {}), fingerprint_, ckpt_dir, MODEL_KEYS)
    if inner is None:
        from cce_dlrm.training.distributed import unwrap

        inner = unwrap(model)
    with _quiet_sharded_tensors():
        _resize_buffers(model, ckpt_dir, inner)
        state = {"model": model.state_dict()}
        optim_tensors: dict = {}
        optim_nested = None
        if optimizer is not None and info.get("optimizer") is not None:
            optim_nested = _split(optimizer.state_dict(), "optimizer", optim_tensors)
            if optim_tensors:
                state["optimizer"] = optim_tensors
        planner = None
        if partial:
            missing = _missing_learned_state(model, ckpt_dir)
            if missing:
                raise CheckpointError(f"checkpoint {ckpt_dir} lacks learned state of this model "
                                      f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
            planner = DefaultLoadPlanner(allow_partial_load=True)
        # in place: sharded tables' local shards are views of the fused kernels' weights
        dcp.load(state, storage_reader=SafeFileSystemReader(str(ckpt_dir)), planner=planner)
    if optim_nested is not None and optim_tensors:
        # this rank's own structure with the loaded tensors: ranks hold different keys (a
        # table-wise table's row-wise Adagrad state lives only on its rank), and the plain
        # values (lr, eps) come from the config, which the fingerprint has checked
        optimizer.load_state_dict(_join(optim_nested, optim_tensors))
    return info


def load_checkpoint(ckpt_dir: Path | str, model: nn.Module, optimizer, fingerprint_: dict,
                    device: torch.device | None = None, inner: nn.Module | None = None) -> dict:
    """Restores a run from ``ckpt_dir``: model, optimizer, this rank's RNG states.

    Refuses (CheckpointError, one line) a checkpoint of another configuration. Returns the
    trainer state saved with it. Collective.
    """
    ckpt_dir = Path(ckpt_dir)
    info = read_info(ckpt_dir)
    check_fingerprint(info.get("fingerprint", {}), fingerprint_, ckpt_dir)
    load_model_state(model, ckpt_dir, None, optimizer, inner)
    rng_file = ckpt_dir / f"rng_rank{_rank()}.json"
    try:
        set_rng_state(json.loads(rng_file.read_text()), device)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {ckpt_dir} lacks a readable {rng_file.name} ({err})") from None
    return info["trainer"]
