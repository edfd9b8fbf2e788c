"""Batches of a processed split for one rank: dense tensor, KeyedJaggedTensor, labels.

The batch size is *global*: every global batch is cut into ``world_size`` equal parts and
rank ``r`` takes part ``r``. So a run on 2 processes sees, step by step, exactly the rows
that a 1-process run sees, which is what makes their results comparable.

* training: rows in a fresh permutation per epoch (from ``seed`` and the epoch), the
  last incomplete global batch dropped;
* evaluation: every row exactly once, in file order; the last batch is padded to full
  size with rows of weight 0, so all ranks run the same number of equal-sized batches
  (model-parallel collectives need that) and metrics ignore the padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torchrec import KeyedJaggedTensor

from cce_dlrm.data.processed import SplitArrays
from cce_dlrm.embeddings.base import ConfigError


@dataclass
class Batch:
    """One rank's part of a global batch.

    dense (b, 13) float32; sparse KJT with 26 keys and one id per key and sample
    (values key-major, int64); labels (b,) float32; weights (b,) float32 (0 = padding).
    """

    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    labels: torch.Tensor
    weights: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        return Batch(
            self.dense.to(device, non_blocking=non_blocking),
            self.sparse.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            self.weights.to(device, non_blocking=non_blocking),
        )


def make_batch(split: SplitArrays, rows: np.ndarray, feature_names: list[str], valid: int) -> Batch:
    """Gathers ``rows`` (indices into the split); rows past ``valid`` get weight 0."""
    b = len(rows)
    # memory-mapped reads are faster in file order; the order inside a batch is irrelevant
    # to the model, but we keep the given order so that row i of every tensor matches.
    dense = torch.from_numpy(np.asarray(split.dense[rows], dtype=np.float32))
    sparse = np.asarray(split.sparse[rows], dtype=np.int64)
    labels = torch.from_numpy(np.asarray(split.labels[rows], dtype=np.float32))
    values = torch.from_numpy(np.ascontiguousarray(sparse.T)).view(-1)
    kjt = KeyedJaggedTensor(
        keys=feature_names,
        values=values,
        lengths=torch.ones(len(feature_names) * b, dtype=torch.int32),
    )
    weights = torch.ones(b, dtype=torch.float32)
    weights[valid:] = 0.0
    return Batch(dense, kjt, labels, weights)


class SplitLoader:
    """Iterates one rank's batches of a split.

    Example::

        loader = SplitLoader(ds.split("train"), ds.sparse_names, batch_size=2048,
                             rank=0, world_size=2, shuffle=True, seed=0)
        for batch in loader.epoch(0):  # 1024 rows per batch on this rank
            ...
    """

    def __init__(self, split: SplitArrays, feature_names: list[str], batch_size: int,
                 rank: int = 0, world_size: int = 1, shuffle: bool = False, seed: int = 0):
        if batch_size % world_size:
            raise ConfigError(
                f"batch size {batch_size} is not divisible by the number of processes {world_size}"
            )
        self.split = split
        self.feature_names = feature_names
        self.batch_size = batch_size
        self.local = batch_size // world_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.rows = len(split)

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        if self.shuffle:
            return self.rows // self.batch_size
        return -(-self.rows // self.batch_size)

    def epoch(self, epoch: int = 0, start_batch: int = 0) -> Iterator[Batch]:
        if self.shuffle:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7, epoch]))
            order = rng.permutation(self.rows)
        for step in range(start_batch, len(self)):
            lo = step * self.batch_size + self.rank * self.local
            if self.shuffle:
                yield make_batch(self.split, order[lo : lo + self.local], self.feature_names, self.local)
            else:
                rows = np.arange(lo, lo + self.local)
                valid = int(np.clip(self.rows - lo, 0, self.local))
                # padding rows repeat row 0 and are masked by weight 0
                rows[valid:] = 0
                yield make_batch(self.split, rows, self.feature_names, valid)
