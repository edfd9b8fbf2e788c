"""The training loop: SGD steps, method hooks, validation every ``val_every`` batches.

Reads top to bottom: for each step, forward, BCE loss, backward (the fused optimizer
updates the tables during backward), dense SGD step, the method's ``on_train_step`` hook
(CCE clusters here), logging; every ``val_every`` steps and at the end, validation and
test over the whole splits. The test metrics reported are those at the best validation
BCE (the test split is never used to choose anything).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cce_dlrm.data.loader import SplitLoader
from cce_dlrm.embeddings.base import EmbeddingMethod, TrainContext
from cce_dlrm.training.evaluation import evaluate
from cce_dlrm.training.progress import progress_bar
from cce_dlrm.training.run_record import RunRecord


@dataclass
class LoopSettings:
    epochs: int
    max_steps: int | None
    val_every: int
    log_every: int
    progress: bool


@dataclass
class LoopResult:
    steps: int = 0
    train_seconds: float = 0.0   # forward, backward and optimizer steps
    hook_seconds: float = 0.0    # the method's on_train_step (CCE's clustering rounds)
    samples: int = 0
    best_val: dict = field(default_factory=dict)
    test_at_best: dict = field(default_factory=dict)
    best_step: int = 0
    history: list = field(default_factory=list)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0


def total_steps(settings: LoopSettings, batches_per_epoch: int) -> int:
    steps = settings.epochs * batches_per_epoch
    return min(steps, settings.max_steps) if settings.max_steps else steps


def train_loop(model: nn.Module, optimizer, method: EmbeddingMethod, context: TrainContext,
               loaders: dict[str, SplitLoader], device: torch.device, settings: LoopSettings,
               writer, record: RunRecord, is_main: bool) -> LoopResult:
    train = loaders["train"]
    steps = total_steps(settings, len(train))
    result = LoopResult()
    batch_size = train.batch_size

    def log(name: str, value: float, step: int) -> None:
        if writer is not None:
            writer.add_scalar(name, value, step)

    context.log = lambda name, value, step: log(f"method/{name}", value, step)

    def validate(step: int, final: bool = False) -> None:
        val = evaluate(model, loaders["val"], device, "val", settings.progress and is_main)
        test = evaluate(model, loaders["test"], device, "test", settings.progress and is_main)
        for split, metrics in (("val", val), ("test", test)):
            log(f"{split}/bce", metrics["bce"], step)
            log(f"{split}/auc", metrics["auc"], step)
        result.history.append({"step": step, "val_bce": val["bce"], "val_auc": val["auc"],
                               "test_bce": test["bce"], "test_auc": test["auc"]})
        better = not result.best_val or val["bce"] < result.best_val["bce"]
        if method.report_final_only:
            better = final
        if better:
            result.best_val, result.test_at_best, result.best_step = val, test, step
        record.update(history=result.history, best_val_bce=result.best_val.get("bce"),
                      best_val_auc=result.best_val.get("auc"), best_step=result.best_step,
                      test_bce=result.test_at_best.get("bce"), test_auc=result.test_at_best.get("auc"))

    model.train()
    bar = progress_bar(total=steps, desc="train", enabled=settings.progress and is_main,
                       batch_size=train.batch_size, per_epoch=len(train))
    step, running_loss, running_n, window_start = 0, 0.0, 0, time.perf_counter()
    epoch = 0
    while step < steps:
        for batch in train.epoch(epoch):
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
            running_loss += loss.detach()  # no .item() per step: it would sync a GPU
            running_n += 1
            for name, value in scalars.items():
                log(f"method/{name}", value, step)
            if step % settings.log_every == 0 or step == steps:
                elapsed = time.perf_counter() - window_start
                mean_loss = float(running_loss) / running_n
                log("train/loss", mean_loss, step)
                log("train/samples_per_sec", running_n * batch_size / max(elapsed, 1e-9), step)
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                running_loss, running_n, window_start = 0.0, 0, time.perf_counter()
            bar.update(1)
            if step % settings.val_every == 0 and step < steps:
                validate(step)
                window_start = time.perf_counter()
            if step >= steps:
                break
        epoch += 1
    bar.close()
    for name, value in method.on_train_end(context).items():
        log(f"method/{name}", value, step)
    validate(step, final=True)  # in-loop validation skips the last step, so this is never twice
    result.steps = step
    return result
