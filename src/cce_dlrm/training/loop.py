"""The training loop: SGD steps, method hooks, validation every ``val_every`` batches.

Reads top to bottom: for each step, forward, BCE loss, backward (the fused optimizer
updates the tables during backward), dense SGD step, the method's ``on_train_step`` hook
(CCE clusters here), logging; every ``val_every`` steps, at the end of every epoch (as the
DLRM reference does) and at the end, validation and test over the whole splits. The test
metrics reported are those at the best validation BCE (the test split is never used to
choose anything).

Early stopping (``settings.early_stopping``, see ``training/early_stopping.py``): ``paper``
stops at the end of an epoch whose minimum validation BCE is above the previous epoch's.

Post-training methods (``method.report_final_only``, pq): before ``on_train_end`` the model
is restored from the best-validation checkpoint (``restore_best``), so what is quantized is
the best model of the run, not the last one; the reported result is the final evaluation.

Checkpoints (``checkpoint(state, is_best)``, see ``training/checkpoint.py``) are taken
after every validation and every ``checkpoint_every`` batches. Everything the loop carries
from one step to the next is in :class:`LoopResult` (position in the epoch, the open
train-loss window, best-so-far, history, method events), so a run resumed from a checkpoint
continues exactly: on CPU its ``metrics.json`` numbers equal an uninterrupted run's bit for
bit; on a GPU (non-deterministic kernels) to about 1e-6 relative.

Divergence: a non-finite training loss (checked, without a per-step GPU sync, at every
``log_every`` step and before every validation and checkpoint) or a non-finite validation
BCE raises :class:`TrainingDiverged` at once; no checkpoint of the diverged state is written.

Test hook: the environment variable ``CCE_DLRM_TEST_KILL_AT_STEP=K`` makes the process
SIGKILL itself right after step K is complete (its validation and checkpoint included), the
way a preempted job dies; tests/test_resume.py uses it.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, NoReturn

import torch
import torch.nn.functional as F
from torch import nn

from cce_dlrm.data.loader import SplitLoader
from cce_dlrm.embeddings.base import EmbeddingMethod, TrainContext
from cce_dlrm.training.early_stopping import should_stop
from cce_dlrm.training.evaluation import evaluate
from cce_dlrm.training.progress import progress_bar
from cce_dlrm.training.run_record import RunRecord

KILL_ENV = "CCE_DLRM_TEST_KILL_AT_STEP"


class TrainingDiverged(RuntimeError):
    """A non-finite training loss or validation BCE; ``step`` is where it was found."""

    def __init__(self, step: int, message: str):
        super().__init__(message)
        self.step = step


@dataclass
class LoopSettings:
    epochs: int
    max_steps: int | None
    val_every: int
    log_every: int
    progress: bool
    checkpoint_every: int = 0   # batches between checkpoints besides the validations (0: none)
    early_stopping: str = "none"  # "paper" or "none" (training/early_stopping.py)


@dataclass
class LoopResult:
    """The loop's whole carried state; JSON-able through ``state_dict``/``from_state_dict``."""

    steps: int = 0
    train_seconds: float = 0.0   # forward, backward and optimizer steps
    hook_seconds: float = 0.0    # the method's on_train_step (CCE's clustering rounds)
    samples: int = 0
    best_val: dict = field(default_factory=dict)
    test_at_best: dict = field(default_factory=dict)
    best_step: int = 0
    history: list = field(default_factory=list)
    events: list = field(default_factory=list)   # {"step": s, **scalars} of on_train_step
    epoch: int = 0               # the epoch the next batch comes from
    batch_in_epoch: int = 0      # ... and its index in that epoch
    running_loss: float = 0.0    # the open train/loss window: sum of float32 losses ...
    running_n: int = 0           # ... over this many steps
    finished: bool = False       # the final validation is done (a resume only closes the run)
    best_val_seen: float | None = None  # lowest validation BCE so far (what "best checkpoint" means)
    stopped_early_at_epoch: int | None = None  # 1-based epoch after which early stopping ended training
    restored_from_step: int | None = None  # post-training methods: the checkpoint step they started from

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> "LoopResult":
        return cls(**state)


def total_steps(settings: LoopSettings, batches_per_epoch: int) -> int:
    steps = settings.epochs * batches_per_epoch
    return min(steps, settings.max_steps) if settings.max_steps else steps


def _kill_step() -> int | None:
    value = os.environ.get(KILL_ENV)
    return int(value) if value else None


def train_loop(model: nn.Module, optimizer, method: EmbeddingMethod, context: TrainContext,
               loaders: dict[str, SplitLoader], device: torch.device, settings: LoopSettings,
               writer, record: RunRecord, is_main: bool, state: LoopResult | None = None,
               checkpoint: Callable[[LoopResult, bool], None] | None = None,
               restore_best: Callable[[], int | None] | None = None) -> LoopResult:
    """Trains from ``state`` (a resumed run's) or from scratch; returns the final state.

    ``checkpoint(result, is_best)`` is called (collectively) after every validation and
    every ``settings.checkpoint_every`` steps. ``restore_best()`` loads the best-validation
    checkpoint into the model and returns its step (None when there is none); it is called
    before ``on_train_end`` for post-training methods.
    """
    train = loaders["train"]
    steps = total_steps(settings, len(train))
    result = state if state is not None else LoopResult()
    batch_size = train.batch_size
    kill_at = _kill_step()

    def log(name: str, value: float, step: int) -> None:
        if writer is not None:
            writer.add_scalar(name, value, step)

    context.log = lambda name, value, step: log(f"method/{name}", value, step)

    def publish() -> None:
        record.update(history=result.history, best_val_bce=result.best_val.get("bce"),
                      best_val_auc=result.best_val.get("auc"), best_step=result.best_step,
                      test_bce=result.test_at_best.get("bce"), test_auc=result.test_at_best.get("auc"),
                      events=result.events)

    def validate(step: int, final: bool = False) -> bool:
        """Validation and test at ``step``; True if it is the best validation so far.

        For a post-training method the reported result is the final (quantized) evaluation,
        while "best" keeps meaning the best validation of the trained model, whose checkpoint
        is what gets quantized; its final evaluation is never marked best.
        """
        val = evaluate(model, loaders["val"], device, "val", settings.progress and is_main)
        if not math.isfinite(val["bce"]) and val.get("rows", 1):
            raise TrainingDiverged(step, f"validation BCE is {val['bce']} at step {step}")
        test = evaluate(model, loaders["test"], device, "test", settings.progress and is_main)
        for split, metrics in (("val", val), ("test", test)):
            log(f"{split}/bce", metrics["bce"], step)
            log(f"{split}/auc", metrics["auc"], step)
        result.history.append({"step": step, "val_bce": val["bce"], "val_auc": val["auc"],
                               "test_bce": test["bce"], "test_auc": test["auc"]})
        if method.report_final_only and final:
            result.best_val, result.test_at_best, result.best_step = val, test, step
            publish()
            return False
        better = result.best_val_seen is None or val["bce"] < result.best_val_seen
        if better:
            result.best_val_seen = val["bce"]
            if not method.report_final_only:
                result.best_val, result.test_at_best, result.best_step = val, test, step
        publish()
        return better

    if state is not None:  # resumed: metrics.json shows the checkpoint's history and best
        publish()
    if result.finished:  # resumed after the final validation: nothing is left to train
        return result

    step = result.steps
    running_loss: torch.Tensor | float = result.running_loss
    if result.running_n:
        # the open window as the loop held it: a float32 sum on the device
        running_loss = torch.tensor(result.running_loss, dtype=torch.float32, device=device)
    running_n = result.running_n
    # step of the first non-finite loss (0: none); a tensor, so no per-step sync on a GPU
    first_bad = torch.zeros((), dtype=torch.int64, device=device)

    def check_finite() -> None:
        bad = int(first_bad)
        if bad:
            raise TrainingDiverged(bad, f"training loss is not finite at step {bad}")

    def save(is_best: bool) -> None:
        if checkpoint is None:
            return
        check_finite()
        result.steps = step
        result.running_loss = float(running_loss) if running_n else 0.0
        result.running_n = running_n
        checkpoint(result, is_best)

    model.train()
    bar = progress_bar(total=steps, initial=step, desc="train", enabled=settings.progress and is_main,
                       batch_size=train.batch_size, per_epoch=len(train))
    window_start = time.perf_counter()
    while step < steps and result.stopped_early_at_epoch is None:  # (a resumed run may have stopped)
        # the order of an epoch depends only on (seed, epoch): a resumed run skips what it did
        for batch in train.epoch(result.epoch, result.batch_in_epoch):
            tic = time.perf_counter()
            batch = batch.to(device, non_blocking=True)
            logits = model(batch.dense, batch.sparse)
            loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            hook_start = time.perf_counter()
            result.train_seconds += hook_start - tic
            scalars = method.on_train_step(step, steps, context)
            result.hook_seconds += time.perf_counter() - hook_start
            result.samples += batch_size
            loss = loss.detach()
            running_loss += loss  # no .item() per step: it would sync a GPU
            running_n += 1
            first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), step, first_bad)
            for name, value in scalars.items():
                log(f"method/{name}", value, step)
            if scalars:
                result.events.append({"step": step, **scalars})
                record.update(events=result.events)
            if step % settings.log_every == 0 or step == steps:
                check_finite()
                elapsed = time.perf_counter() - window_start
                mean_loss = float(running_loss) / running_n
                log("train/loss", mean_loss, step)
                log("train/samples_per_sec", running_n * batch_size / max(elapsed, 1e-9), step)
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                running_loss, running_n, window_start = 0.0, 0, time.perf_counter()
            bar.update(1)
            result.batch_in_epoch += 1
            epoch_end = result.batch_in_epoch == len(train)
            if epoch_end:
                result.epoch, result.batch_in_epoch = result.epoch + 1, 0
            if (step % settings.val_every == 0 or epoch_end) and step < steps:
                check_finite()
                is_best = validate(step)
                if epoch_end and should_stop(result.history, len(train), result.epoch - 1,
                                             settings.early_stopping):
                    result.stopped_early_at_epoch = result.epoch
                save(is_best)
                window_start = time.perf_counter()
            elif settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < steps:
                save(False)
            if kill_at == step:
                os.kill(os.getpid(), signal.SIGKILL)
            if step >= steps or result.stopped_early_at_epoch is not None:
                break
    bar.close()
    check_finite()
    result.steps = step
    if method.report_final_only and restore_best is not None:
        # quantize the best model of the run, not the last one (the full table overfits)
        result.restored_from_step = restore_best()
    for name, value in method.on_train_end(context).items():
        log(f"method/{name}", value, step)
    if result.stopped_early_at_epoch is None or method.report_final_only:
        # in-loop validation skips the last step, so this is never twice; an early stop has
        # just validated this very state
        is_best = validate(step, final=True)
    else:
        is_best = False
    result.finished = True
    save(is_best)
    return result


def exit_diverged(err: TrainingDiverged) -> NoReturn:
    """One line on rank 0 (``diverged: ...``), exit code 3 on every rank."""
    if os.environ.get("RANK", "0") == "0":
        print(f"diverged: {err}; metrics.json has status diverged and the last good checkpoint "
              "is kept", file=sys.stderr, flush=True)
    sys.exit(3)
