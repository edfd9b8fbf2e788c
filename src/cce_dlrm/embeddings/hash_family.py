"""One seeded family of universal hash functions, shared by every method that hashes.

``h_j(x) = ((a_j * x + b_j) mod p) mod r`` with ``p = 2^31 - 1``, ``1 <= a_j < p``,
``0 <= b_j < p``. Ids are below 2^31, so ``a*x + b`` stays inside int64. The constants
are drawn from a NumPy generator seeded with ``seed``: every rank, and every rerun,
derives the same functions without storing anything per id.
"""

from __future__ import annotations

import numpy as np
import torch

PRIME = 2**31 - 1


def draw_hash_constants(seed: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns int64 tensors ``a`` (in [1, p)) and ``b`` (in [0, p)) of the given shape."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    a = rng.integers(1, PRIME, size=shape, dtype=np.int64)
    b = rng.integers(0, PRIME, size=shape, dtype=np.int64)
    return torch.from_numpy(a), torch.from_numpy(b)


def universal_hash(ids: torch.Tensor, a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Hashes int ids into ``[0, rows)``; all arguments broadcast together.

    Example: ids (F, 1, B), a/b (F, H, 1), rows (F, 1, 1) gives (F, H, B) bucket ids.
    """
    return ((a * ids.to(torch.int64) + b) % PRIME) % rows
