"""Feature transforms of parsed rows: the dense log transform, the categorical range
reduction, and per-chunk factorisation of categorical values."""

from __future__ import annotations

import numpy as np
import pandas as pd


# log(x + 1) of the small counts that make up most dense values, computed once in float64
# and rounded: a table lookup is several times faster than the logarithm, and identical.
_TABLE_SIZE = 1 << 16
_LOG1P_TABLE = np.log1p(np.arange(_TABLE_SIZE, dtype=np.float64)).astype(np.float32)


def dense_features(raw: np.ndarray) -> np.ndarray:
    """(13, n) int64 raw integers -> (n, 13) float32 ``log(max(x, 0) + 1)`` (empty was 0).

    Computed in float64 and rounded once to float32, for any int64.
    """
    values = _LOG1P_TABLE[np.clip(raw, 0, _TABLE_SIZE - 1)]
    large = raw >= _TABLE_SIZE
    if large.any():
        values[large] = np.log1p(raw[large].astype(np.float64)).astype(np.float32)
    out = np.empty(raw.shape[::-1], np.float32)
    out[...] = values.T
    return out


def reduce_range(cats: np.ndarray, max_ind_range: int,
                 per_feature: tuple[int, ...] | None = None) -> None:
    """In place, on (26, n) raw values: modulo ``max_ind_range`` (0 = off), or feature j's
    values modulo ``per_feature[j]`` (None = off); empty (-1) stays empty.

    Example: ``per_feature[8] == 3`` leaves C9 with at most 4 distinct values: 0, 1, 2, empty.
    """
    if max_ind_range > 0:
        nonempty = cats >= 0
        cats[nonempty] %= max_ind_range
    if per_feature is not None:
        for j, modulus in enumerate(per_feature):
            row = cats[j]
            nonempty = row >= 0
            row[nonempty] %= modulus


def factorize(values: np.ndarray, with_counts: bool = True):
    """One feature of a chunk -> (codes (n,), uniques (u,) int64 ascending, counts (u,) int64).

    ``uniques[codes] == values``; codes are uint16 when u <= 65536 (most features), else
    uint32. A hash table (pandas) finds the distinct values in one pass; only the u
    distinct values are sorted, not the n rows. Values are -1..2^32-1. Without
    ``with_counts`` every count is 1 (enough where only presence matters).
    """
    codes, uniques = pd.factorize(values, sort=False)
    u = len(uniques)
    # Sort (value + 1, code) packed in one uint64 (33 + 31 bits; a chunk has < 2^31 rows):
    # a plain sort is SIMD-accelerated in NumPy, an argsort is not, and the low bits then
    # give the permutation.
    keys = (uniques + 1).astype(np.uint64)
    keys <<= np.uint64(31)
    keys |= np.arange(u, dtype=np.uint64)
    keys.sort()
    order = (keys & np.uint64(2**31 - 1)).astype(np.intp)
    keys >>= np.uint64(31)
    sorted_uniques = keys.astype(np.int64) - 1
    rank = np.empty(u, np.uint16 if u <= 1 << 16 else np.uint32)
    rank[order] = np.arange(u, dtype=rank.dtype)
    sorted_codes = rank[codes]
    counts = np.bincount(sorted_codes, minlength=u) if with_counts else np.ones(u, np.int64)
    return sorted_codes, sorted_uniques, counts
