"""How much two partitions of the same ids agree (labels are arbitrary: only groupings count).

Example::

    adjusted_rand_index([0, 0, 1, 1], [5, 5, 7, 7])           # 1.0 (same partition)
    share_moved(torch.tensor([0, 0, 1]), torch.tensor([3, 3, 2]), 2, 4)   # 0.0
"""

from __future__ import annotations

import numpy as np
import torch


def share_moved(old: torch.Tensor, new: torch.Tensor, k_old: int, k_new: int) -> float:
    """Share of ids that left the majority of their old cluster (0: the same partition).

    k-means relabels clusters arbitrarily, so comparing labels would count nearly every id as
    moved; this counts, for each old cluster, its ids outside the new cluster that received
    most of them. ``old``, ``new``: ``(n,)`` int64 labels in ``[0, k_old)``, ``[0, k_new)``.
    """
    codes = old * k_new + new
    if k_old * k_new <= 1 << 24:
        counts = torch.bincount(codes, minlength=k_old * k_new).view(k_old, k_new)
        kept = counts.max(dim=1).values.sum()
    else:  # too many pairs for a dense table: count the pairs that occur
        pairs, counts = torch.unique(codes, return_counts=True)
        best = torch.zeros(k_old, dtype=counts.dtype, device=counts.device)
        kept = best.scatter_reduce_(0, pairs // k_new, counts, reduce="amax").sum()
    return 1.0 - float(kept) / max(len(old), 1)


def adjusted_rand_index(labels_a, labels_b) -> float:
    """Adjusted Rand index of two labelings ``(n,)``: 1 identical partitions, about 0 chance."""
    a = np.unique(np.asarray(labels_a), return_inverse=True)[1].ravel()
    b = np.unique(np.asarray(labels_b), return_inverse=True)[1].ravel()
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.float64)
    np.add.at(table, (a, b), 1.0)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    together, rows, cols = pairs(table), pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = rows * cols / pairs(np.array([len(a)], dtype=np.float64))
    best = (rows + cols) / 2
    return 1.0 if best == expected else (together - expected) / (best - expected)
