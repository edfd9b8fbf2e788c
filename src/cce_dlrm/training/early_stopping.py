"""The paper's early stopping rule, as a pure function of the validation history.

Tsang & Ahle (PAPER.md, "Kaggle, best of 10 epochs"): validation BCE is measured every
``val_every`` batches; at the end of each epoch, "if the minimum validation BCE of the
previous epoch is below the minimum of the current epoch, stop". The reported number is
the test BCE at the minimum validation BCE, which the loop tracks separately.

A validation at step ``s`` (counted from 1, after ``s`` batches) belongs to epoch
``(s - 1) // steps_per_epoch``: the one at the last batch of an epoch is that epoch's.

Example::

    history = [{"step": 5, "val_bce": 0.50}, {"step": 10, "val_bce": 0.47},   # epoch 0
               {"step": 15, "val_bce": 0.46}, {"step": 20, "val_bce": 0.48}]  # epoch 1
    should_stop(history, steps_per_epoch=10, epoch=1, rule="paper")  # False: 0.46 < 0.47
"""

from __future__ import annotations

import math

RULES = ("paper", "none")


def epoch_of(step: int, steps_per_epoch: int) -> int:
    """The 0-based epoch that the validation after ``step`` batches belongs to."""
    return (int(step) - 1) // int(steps_per_epoch)


def epoch_minima(history: list[dict], steps_per_epoch: int) -> dict[int, float]:
    """Minimum validation BCE per epoch (epochs without a validation are absent)."""
    minima: dict[int, float] = {}
    for entry in history:
        bce = entry.get("val_bce")
        if bce is None or not math.isfinite(bce):
            continue
        epoch = epoch_of(entry["step"], steps_per_epoch)
        minima[epoch] = min(bce, minima.get(epoch, math.inf))
    return minima


def should_stop(history: list[dict], steps_per_epoch: int, epoch: int, rule: str = "paper") -> bool:
    """At the end of ``epoch`` (0-based): stop training here?

    ``paper``: stop when the previous epoch's minimum validation BCE is below this epoch's.
    ``none``: never stop early (train all ``epochs``).
    """
    if rule not in RULES:
        raise ValueError(f"early stopping rule must be one of {RULES}, got {rule!r}")
    if rule == "none" or epoch < 1:
        return False
    minima = epoch_minima(history, steps_per_epoch)
    if epoch not in minima or epoch - 1 not in minima:
        return False
    return minima[epoch - 1] < minima[epoch]
