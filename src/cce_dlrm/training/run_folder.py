"""One run per folder: a lock while a run is alive, and what a new start does with what is there.

A start into a run folder finds one of:

* nothing (or only Hydra's files): a fresh run;
* a completed run (``metrics.json`` status ``completed``): never overwritten. A single run
  stops with one line (exit 1); a job of a Hydra multirun is skipped as done, its metrics
  returned, so the sweep goes on, but only if the completed run had the same settings
  (``run_settings``): a sweep re-run with another learning rate, optimizer or budget into
  the same folder is refused with one line naming the first difference, never answered
  with the old numbers;
* an unfinished run (status ``running``: killed or preempted; ``failed``: an error): it
  continues from its latest checkpoint (``resume=true``, the default; with no checkpoint yet
  it starts again from scratch), or, with ``resume=false``, the start is refused;
* a diverged run (status ``diverged``): refused. Training is deterministic, so resuming its
  last good checkpoint with the same settings would diverge again; the settings a checkpoint
  records (learning rate included) cannot change within a folder, so a retry with, say, a
  smaller ``trainer.lr`` goes into a new folder.

While a run is alive its rank 0 holds ``fcntl.flock`` on ``<run_dir>/.lock``; the kernel
drops it when the process dies however it dies, so a lock never outlives its run. A second
start into a locked folder is refused with one line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cce_dlrm.embeddings.base import ConfigError
from cce_dlrm.training.checkpoint import first_difference, checkpoints_dir, latest_checkpoint, remove_stale

LOCK = ".lock"
METRICS = "metrics.json"


class RunFolderTaken(ConfigError):
    """The run folder holds a run that this start must not touch (alive, completed, diverged)."""


class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``<run_dir>/.lock`` (holder's pid written in it)."""

    def __init__(self, run_dir: Path | str):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderTaken(f"run folder {self.path.parent} is in use by another run (process "
                                 f"{holder}); choose another folder with hydra.run.dir=...") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} on {platform.node()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclass
class StartDecision:
    """What a start does: ``fresh``, ``resume`` (from ``checkpoint``) or ``skip`` (completed)."""

    action: str
    checkpoint: str | None = None
    previous: dict = field(default_factory=dict)   # the folder's metrics.json, if any


# settings that do not change a run's numbers (where it logs, how often it checkpoints, how
# its tables are placed: tests/test_training.py shows every sharding type gives the same ones)
_NEUTRAL_TRAINER = ("checkpoint_every", "keep_checkpoints", "eval_batch_size", "sharding_type")
# settings added after runs were first recorded: an older run had their default
_ADDED_DEFAULTS = {"table_precision": "fp32", "optimizer": "sgd"}


def run_settings(config: dict | None) -> dict | None:
    """What decides a run's numbers, from its resolved config (``metrics.json``'s ``config``):
    method, model, data (name and generator, not its path), budget, init, seed, precision and
    the trainer's settings; not locations (a pq run's ``baseline_run`` is a folder, whose
    checkpoint is checked when it is loaded). None when there is no config to read."""
    if not isinstance(config, dict):
        return None
    dataset = config.get("dataset") or {}
    trainer = {k: v for k, v in (config.get("trainer") or {}).items() if k not in _NEUTRAL_TRAINER}
    trainer.setdefault("optimizer", _ADDED_DEFAULTS["optimizer"])
    return {
        "method": config.get("method"), "model": config.get("model"),
        "dataset": {"name": dataset.get("name"), "build": dataset.get("build")},
        "max_table_params": config.get("max_table_params"), "init_std": config.get("init_std"),
        "seed": config.get("seed"),
        "table_precision": config.get("table_precision", _ADDED_DEFAULTS["table_precision"]),
        "trainer": trainer,
    }


def read_metrics(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / METRICS).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {"status": "unreadable"}


def decide_start(run_dir: Path | str, resume: bool = True, multirun: bool = False,
                 settings: dict | None = None) -> StartDecision:
    """Inspects a (locked) run folder and decides; refusals raise RunFolderTaken (one line).

    ``settings``: this start's ``run_settings``; a multirun job skips a completed run only
    when they equal the completed run's (or when either is unknown)."""
    run_dir = Path(run_dir)
    previous = read_metrics(run_dir)
    status = previous.get("status")
    if status == "completed":
        if multirun:
            done = run_settings(previous.get("config"))
            diff = first_difference(done, settings, "") if done and settings else None
            if diff:
                raise RunFolderTaken(f"run folder {run_dir} holds a completed run with other settings "
                                     f"({diff}); it is never overwritten: sweep into another folder "
                                     "(hydra.sweep.dir=...)")
            return StartDecision("skip", previous=previous)
        raise RunFolderTaken(f"run folder {run_dir} holds a completed run; it is never overwritten "
                             "(choose another folder with hydra.run.dir=...)")
    if status == "diverged":
        raise RunFolderTaken(
            f"run folder {run_dir} holds a run that diverged at step {previous.get('diverged_at_step')}; "
            "resuming it would diverge again: start the retry (e.g. a smaller trainer.lr) in a new folder")
    removed = remove_stale(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    if not status and checkpoint is None:
        return StartDecision("fresh", previous=previous)
    if not resume:
        where = f"its last checkpoint is {checkpoint.name}" if checkpoint else "it has no checkpoint"
        raise RunFolderTaken(f"run folder {run_dir} holds an unfinished run (status {status}; {where}); "
                             "resume=true continues it, or choose another folder with hydra.run.dir=...")
    del removed
    if checkpoint is None:
        # nothing to continue from: start again, without the previous attempt's scalars
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
        shutil.rmtree(checkpoints_dir(run_dir), ignore_errors=True)
        return StartDecision("fresh", previous=previous)
    return StartDecision("resume", checkpoint=str(checkpoint), previous=previous)


def claim_run_folder(run_dir: Path | str, is_main: bool, resume: bool = True, multirun: bool = False,
                     settings: dict | None = None) -> tuple[FolderLock | None, StartDecision]:
    """Rank 0 locks the folder and decides; every rank gets the decision (or the same refusal).

    Returns the held lock (rank 0; None elsewhere, and None when the run is skipped) and the
    decision. Collective.
    """
    import torch.distributed as dist

    lock, decision, error = None, None, None
    if is_main:
        try:
            lock = FolderLock(run_dir).acquire()
            decision = decide_start(run_dir, resume, multirun, settings)
        except (ConfigError, OSError) as err:
            error = str(err) if isinstance(err, ConfigError) else (
                f"cannot use run folder {run_dir} ({err.strerror or err}); choose another with hydra.run.dir=...")
            if lock is not None:
                lock.release()
                lock = None
    if dist.is_initialized() and dist.get_world_size() > 1:
        message = [error, None if decision is None else vars(decision)]
        dist.broadcast_object_list(message, 0)
        error, fields = message
        decision = None if fields is None else StartDecision(**fields)
    if error is not None:
        raise RunFolderTaken(error)
    if decision.action == "skip" and lock is not None:
        lock.release()
        lock = None
    return lock, decision


def refuse_completed(run_dir: Path | str) -> None:
    """Raises RunFolderTaken if ``run_dir`` holds a completed run (a single run's early check).

    Hydra writes ``.hydra/`` into the run folder before the task starts; the entry point's
    run-folder callback calls this first, so a completed run's saved config is not replaced.
    """
    run_dir = Path(run_dir)
    if read_metrics(run_dir).get("status") == "completed":
        decide_start(run_dir, multirun=False)  # raises the one-line refusal
