"""One seeded family of universal hash functions, shared by every method that hashes.

``h_j(x) = ((a_j * mix(x) + b_j) mod p) mod r`` with ``p = 2^31 - 1``, ``1 <= a_j < p``,
``0 <= b_j < p``. Ids are below 2^31, so ``a*x + b`` stays inside int64.

``mix`` is a fixed bijection of ``[0, 2^31)`` (murmur3's finaliser cut to 31 bits). Without
it, contiguous ids ``0..n-1`` (which is what preprocessing produces) are a rotation under
``a*x + b mod p``, and for about 1-2% of the drawn ``(a, b)`` they fill only a fraction of
the ``r`` buckets (e.g. 67 of 256 for 560 ids). Being a bijection, ``mix`` keeps the
family universal. The constants
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


MASK31 = 2**31 - 1


def mix31(ids: torch.Tensor) -> torch.Tensor:
    """A bijection of ``[0, 2^31)`` that scatters contiguous ids (int64 in, int64 out).

    Each step is invertible on 31-bit words: xor with a right shift, and multiplication
    by an odd constant modulo 2^31 (the product stays below 2^59, inside int64).
    """
    x = ids.to(torch.int64) & MASK31
    x = x ^ (x >> 16)
    x = (x * 0x045D9F3B) & MASK31
    x = x ^ (x >> 15)
    x = (x * 0x0119DE1F) & MASK31
    return x ^ (x >> 16)


def universal_hash(ids: torch.Tensor, a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Hashes int ids into ``[0, rows)``; all arguments broadcast together.

    Example: ids (F, 1, B), a/b (F, H, 1), rows (F, 1, 1) gives (F, H, B) bucket ids.
    """
    return ((a * mix31(ids) + b) % PRIME) % rows
