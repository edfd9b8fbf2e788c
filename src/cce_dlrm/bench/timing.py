"""Interleaved timing: every contender on the same batches, round after round, in turn.

Interleaving spreads load from elsewhere on the machine over all contenders alike; each
figure is the median round with its spread (min..max over rounds, as a share of the median).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


def sync(device: torch.device) -> None:
    """Waits for queued GPU work, so that a clock reading means something there."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: seconds per training step measured by the throughput section, by (method, cap, batch);
#: the clustering section reads it for the share of a training run spent clustering
STEP_SECONDS: dict[tuple[str, int, int], float] = {}


@dataclass
class Phases:
    """Seconds per phase of the steps a ``TrainStep`` ran since the last ``reset``."""

    forward: list
    backward: list
    optimizer: list
    hook: list

    @classmethod
    def empty(cls) -> "Phases":
        return cls([], [], [], [])


class TrainStep:
    """One training step as the loop runs it: forward + BCE, backward (fused table update),
    dense optimizer step, the method's ``on_train_step`` hook.

    With ``phases`` set, it synchronises between phases and records their times (the
    split costs a little; throughput runs leave it off).
    """

    def __init__(self, model, optimizer, forward: Callable, device: torch.device, method=None,
                 context=None):
        self.model, self.optimizer, self.forward = model, optimizer, forward
        self.device, self.method, self.context = device, method, context
        self.count = 0
        self.phases: Phases | None = None

    def __call__(self, batch) -> None:
        clock = self.phases is not None
        if clock:
            sync(self.device)
            t0 = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(self.forward(self.model, batch), batch.labels)
        if clock:
            sync(self.device)
            t1 = time.perf_counter()
        self.optimizer.zero_grad()
        loss.backward()
        if clock:
            sync(self.device)
            t2 = time.perf_counter()
        self.optimizer.step()
        if clock:
            sync(self.device)
            t3 = time.perf_counter()
        self.count += 1
        if self.method is not None:
            # a total far beyond the timed steps: no scheduled clustering round fires here
            # (rounds are timed by the clustering section)
            self.method.on_train_step(self.count, 10**12, self.context)
        if clock:
            sync(self.device)
            t4 = time.perf_counter()
            for name, value in zip(("forward", "backward", "optimizer", "hook"),
                                   (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                getattr(self.phases, name).append(value)


def interleaved(contenders: dict[str, Callable[[int], None]], warmup: int, steps: int, rounds: int,
                device: torch.device, progress: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """``contenders[name](i)`` runs step ``i``; returns the seconds of each timed round per name."""
    for name, run in contenders.items():
        for i in range(warmup):
            run(i)
    sync(device)
    seconds = {name: [] for name in contenders}
    for r in range(rounds):
        for name, run in contenders.items():
            tic = time.perf_counter()
            for i in range(warmup, warmup + steps):
                run(i)
            sync(device)
            seconds[name].append(time.perf_counter() - tic)
        if progress:
            progress(f"round {r + 1}/{rounds} done")
    return seconds


def summary(seconds: list[float], samples_per_round: int) -> dict[str, float]:
    """Median samples/s of the rounds and the spread of round times (``(max - min) / median``)."""
    med = statistics.median(seconds)
    return {"samples_per_s": samples_per_round / med,
            "spread_pct": 100.0 * (max(seconds) - min(seconds)) / med,
            "rounds": len(seconds)}
