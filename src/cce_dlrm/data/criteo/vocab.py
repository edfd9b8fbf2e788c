"""Contiguous-id dictionaries, kept as sorted NumPy arrays (8 bytes per distinct value).

Counting: each chunk contributes, per feature, its distinct values with counts, packed as
``value << 32 | count`` in one uint64; these are merged by sorting once the unmerged ones
outnumber the merged ones, so the work is O(V log V) over the whole data and at most about
twice the final dictionary is held between merges. The empty value is counted apart.

Ids, per feature: with no frequency threshold, the empty value (if it occurs) is id 0 and
the values follow in ascending order. With a threshold t >= 2, id 0 is shared by every
value seen fewer than t times (the empty value included) and the others follow in the
same order.

Example::

    counter = VocabCounter()
    counter.add_chunk(feature=0, uniques=np.array([-1, 5, 9]), counts=np.array([3, 1, 2]))
    vocab = counter.finish(frequency_threshold=0)
    vocab.ids(0, np.array([-1, 9]))   # -> [0, 2]
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import numpy as np

from cce_dlrm.data.criteo.schema import NUM_CATEGORICAL

_COUNT_MAX = np.iinfo(np.uint32).max  # counts saturate: only "at least t" matters
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry holds: a fixed one


def savez_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` file (what np.load reads) written to a temporary name, fsynced and
    renamed: never a half-written file. Unlike np.savez, whose zip entries carry the time
    of writing, the same arrays always give the same bytes (a resumed run's output equals
    an uninterrupted one's)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for name, arr in arrays.items():
                entry = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
                with z.open(entry, "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, np.asanyarray(arr), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


if sys.byteorder != "little":  # merge_keys views each uint64 key as two uint32 halves
    raise ImportError("cce_dlrm.data.criteo.vocab assumes a little-endian machine")
_LOW32 = np.uint64(0xFFFFFFFF)
# Entries (8 bytes each) a feature gathers before merging: merging less often sorts less.
_MIN_PENDING = 1 << 22
_MERGE_BLOCK = 1 << 22  # keys merged at once


def pack(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """values (u,) 0..2^32-1, counts (u,) -> (u,) uint64 ``value << 32 | count`` (saturated),
    which sort by value: one array to sort instead of an argsort and two gathers."""
    keys = values.astype(np.uint64) << np.uint64(32)
    keys |= np.minimum(counts, _COUNT_MAX).astype(np.uint64)
    return keys


def unpack(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u,) packed keys -> (values uint32, counts uint32)."""
    return (keys >> np.uint64(32)).astype(np.uint32), (keys & _LOW32).astype(np.uint32)


def _merge_block(parts: list[np.ndarray]) -> np.ndarray:
    keys = np.concatenate(parts)
    keys.sort()  # NumPy's SIMD sort
    halves = keys.view(np.uint32).reshape(-1, 2)  # little-endian: [:, 0] count, [:, 1] value
    values, counts = halves[:, 1], halves[:, 0]
    first = np.ones(len(keys), bool)
    np.not_equal(values[1:], values[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    if len(starts) == len(keys):
        return keys
    return pack(values[starts], np.add.reduceat(counts, starts, dtype=np.uint64))


def merge_keys(parts: list[np.ndarray], block: int = _MERGE_BLOCK) -> np.ndarray:
    """Sorted packed keys of several sets -> packed keys of their union, counts summed.

    Large merges go by ranges of values of about ``block`` keys, so the temporaries of
    the sort and the de-duplication stay small: a merge holds about 2 bytes of temporary
    per byte of result instead of 7.
    """
    parts = [p for p in parts if len(p)]
    total = sum(len(p) for p in parts)
    if total <= block:
        return _merge_block(parts) if parts else np.zeros(0, np.uint64)
    big = max(parts, key=len)
    step = max(1, len(big) * block // total)
    # value-aligned boundaries (a value's keys never straddle two ranges)
    bounds = np.unique(big[step::step] >> np.uint64(32)) << np.uint64(32)
    edges = [np.concatenate([[0], np.searchsorted(p, bounds), [len(p)]]) for p in parts]
    return np.concatenate([_merge_block([p[e[b]:e[b + 1]] for p, e in zip(parts, edges)])
                           for b in range(len(bounds) + 1)])


class FeatureCounter:
    """Distinct values and their counts of one categorical feature.

    ``merged`` holds packed keys (see ``pack``) of everything counted so far except the
    ``pending`` chunk sets, which are merged in (one sort) once they outnumber it, so each
    key is sorted O(log N) times over a whole run.
    """

    def __init__(self):
        self.merged = np.zeros(0, np.uint64)
        self.pending: list[np.ndarray] = []
        self.pending_size = 0
        self.empty = 0

    def add(self, uniques: np.ndarray, counts: np.ndarray) -> None:
        """uniques (u,) int64 ascending (-1 = empty, first if present), counts (u,)."""
        if len(uniques) and uniques[0] < 0:
            self.empty += int(counts[0])
            uniques, counts = uniques[1:], counts[1:]
        if len(uniques) == 0:
            return
        self.pending.append(pack(uniques, counts))
        self.pending_size += len(uniques)
        if self.pending_size > max(len(self.merged), _MIN_PENDING):
            self._merge()

    def _merge(self) -> None:
        if self.pending:
            self.merged = merge_keys([self.merged, *self.pending])
            self.pending, self.pending_size = [], 0

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(values ascending uint32, counts uint32) of the non-empty values."""
        self._merge()
        return unpack(self.merged)


class VocabCounter:
    """Counts for all 26 features; ``finish`` turns them into a Vocabulary."""

    def __init__(self, features: int = NUM_CATEGORICAL):
        self.features = [FeatureCounter() for _ in range(features)]

    def add_chunk(self, feature: int, uniques: np.ndarray, counts: np.ndarray) -> None:
        self.features[feature].add(uniques, counts)

    def save(self, path: Path, files_done: int) -> None:
        """Checkpoint after ``files_done`` raw files (runs merged first), written atomically."""
        arrays = {"empty": np.array([f.empty for f in self.features], np.int64),
                  "files_done": np.array(files_done)}
        for j, f in enumerate(self.features):
            f._merge()
            arrays[f"keys_{j}"] = f.merged
        savez_atomic(path, arrays)

    @classmethod
    def load(cls, path: Path) -> tuple["VocabCounter", int]:
        """(counter, files_done) of a checkpoint."""
        with np.load(path) as z:
            counter = cls(len(z["empty"]))
            for j, f in enumerate(counter.features):
                f.empty = int(z["empty"][j])
                f.merged = z[f"keys_{j}"]
            return counter, int(z["files_done"])

    def finish(self, frequency_threshold: int = 0) -> "Vocabulary":
        values, empty_counts, rare = [], [], []
        for f in self.features:
            v, c = f.result()
            if frequency_threshold >= 2:
                keep = c >= frequency_threshold
                rare.append(int(np.count_nonzero(~keep)) + (0 < f.empty < frequency_threshold))
                v = v[keep]
            else:
                rare.append(0)
            values.append(v)
            empty_counts.append(f.empty)
            f.merged, f.empty = np.zeros(0, np.uint64), 0  # free memory early
        return Vocabulary(values, empty_counts, frequency_threshold, rare)


class Vocabulary:
    """Per feature: kept raw values (ascending uint32) and how ids are laid out."""

    def __init__(self, values: list[np.ndarray], empty_counts: list[int],
                 frequency_threshold: int = 0, rare_values: list[int] | None = None):
        self.values = values
        self.empty_counts = [int(e) for e in empty_counts]
        self.frequency_threshold = int(frequency_threshold)
        self.rare_values = rare_values or [0] * len(values)  # distinct values sent to id 0
        self.rare_bucket = self.frequency_threshold >= 2
        kept_empty = [e >= max(self.frequency_threshold, 1) for e in self.empty_counts]
        # id of the empty value, and the id of values[f][0]
        self.empty_id = [(int(self.rare_bucket) if k else 0) for k in kept_empty]
        self.first_value_id = [int(self.rare_bucket) + int(k) for k in kept_empty]

    @property
    def cardinalities(self) -> list[int]:
        return [first + len(v) for first, v in zip(self.first_value_id, self.values)]

    def ids(self, feature: int, uniques: np.ndarray) -> np.ndarray:
        """(u,) int64 raw values ascending (-1 = empty, first) -> (u,) int32 ids."""
        out = np.empty(len(uniques), np.int32)
        start = 0
        if len(uniques) and uniques[0] < 0:
            out[0] = self.empty_id[feature]
            start = 1
        query = uniques[start:].astype(np.uint32)
        values = self.values[feature]
        pos = np.searchsorted(values, query)
        found = pos < len(values)
        found[found] = values[pos[found]] == query[found]
        if not self.rare_bucket and not found.all():
            raise RuntimeError(f"feature {feature}: value {int(query[~found][0])} is missing "
                               "from the dictionary (the chunk cache does not match it)")
        out[start:] = np.where(found, self.first_value_id[feature] + pos, 0)
        return out

    def save(self, path: Path) -> None:
        """One .npz (values_0..values_25 plus the id layout), written atomically."""
        savez_atomic(path, {**{f"values_{i}": v for i, v in enumerate(self.values)},
                            "empty_counts": np.array(self.empty_counts, np.int64),
                            "rare_values": np.array(self.rare_values, np.int64),
                            "frequency_threshold": np.array(self.frequency_threshold)})

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        with np.load(path) as z:
            n = len(z["empty_counts"])
            return cls([z[f"values_{i}"] for i in range(n)], z["empty_counts"].tolist(),
                       int(z["frequency_threshold"]), z["rare_values"].tolist())
