"""The processed dataset format every data source writes and the loader reads.

A processed dataset is one folder::

    meta.json                    cardinalities, row counts, id ranges, provenance (written last)
    train.dense.f32              float32, rows x 13, row-major (already log-transformed)
    train.sparse.i32             int32,   rows x 26, contiguous ids per feature
    train.labels.u8              uint8,   rows (0 or 1)
    val.*  test.*                the same three files per split

Flat binary files plus a small metadata file (as nanoGPT does) so that any split can be
memory-mapped without loading it, and so that a writer can append chunks without knowing
the final row count. ``meta.json`` is written last: a folder without it is unfinished.

``meta.json`` records, per split, the smallest and largest id of every categorical feature
(``sparse_id_range``); opening a dataset whose ids fall outside ``0..cardinality-1`` stops
with one line (``DatasetError``) before any training, because an out-of-range id is either
silently clamped (fbgemm), hashed on (hashing) or a crash (CCE) further down.

Example::

    ds = ProcessedDataset("data/processed/synthetic")
    ds.cardinalities          # [n_0, ..., n_25]
    ds.id_range["train"]      # {"min": [26 ints], "max": [26 ints]} (None for an empty split)
    arrays = ds.split("val")  # SplitArrays(dense=(N, 13) memmap, sparse=(N, 26), labels=(N,))
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
NUM_DENSE = 13
NUM_SPARSE = 26
DENSE_NAMES = [f"int_{i}" for i in range(NUM_DENSE)]
SPARSE_NAMES = [f"cat_{i}" for i in range(NUM_SPARSE)]
META_FILE = "meta.json"
ID_RANGE_KEY = "sparse_id_range"
SCAN_ROWS = 1 << 20  # rows per chunk when id ranges are computed from the arrays

log = logging.getLogger(__name__)

# (suffix, dtype, columns); columns None means a 1-D array.
ARRAY_FILES = {
    "dense": ("dense.f32", np.float32, NUM_DENSE),
    "sparse": ("sparse.i32", np.int32, NUM_SPARSE),
    "labels": ("labels.u8", np.uint8, None),
}


class DatasetError(RuntimeError):
    """A processed dataset is missing, unfinished or inconsistent."""


def split_file(folder: Path | str, split: str, kind: str) -> Path:
    suffix = ARRAY_FILES[kind][0]
    return Path(folder) / f"{split}.{suffix}"


def ids_file(folder: Path | str, split: str) -> Path:
    """Where ``SplitWriter.finish`` leaves a split's id range for ``write_meta`` to record."""
    return Path(folder) / f"{split}.ids.json"


class IdRange:
    """Per-feature smallest and largest id, accumulated chunk by chunk.

    Example::

        r = IdRange()
        r.update(np.array([[0, 5], [3, 1]]))
        r.as_json()  # {"min": [0, 1], "max": [3, 5]}
    """

    def __init__(self):
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None

    def update(self, sparse: np.ndarray) -> None:
        """sparse: (n, features) ids of some rows (n may be 0)."""
        if sparse.shape[0] == 0:
            return
        lo, hi = sparse.min(axis=0).astype(np.int64), sparse.max(axis=0).astype(np.int64)
        self.min = lo if self.min is None else np.minimum(self.min, lo)
        self.max = hi if self.max is None else np.maximum(self.max, hi)

    def merge(self, other: dict | None) -> None:
        """Adds a range given as ``as_json`` gave it (None: no rows)."""
        if other is not None:
            self.update(np.array([other["min"], other["max"]], np.int64))

    def as_json(self) -> dict | None:
        """{"min": [...], "max": [...]} as plain ints, or None when no rows were seen."""
        if self.min is None:
            return None
        return {"min": [int(v) for v in self.min], "max": [int(v) for v in self.max]}


def scan_id_range(sparse: np.ndarray, chunk_rows: int = SCAN_ROWS) -> dict | None:
    """The id range of a (memory-mapped) (N, features) array, read ``chunk_rows`` at a time
    so that memory stays bounded on a split of billions of rows."""
    r = IdRange()
    for start in range(0, sparse.shape[0], chunk_rows):
        r.update(np.asarray(sparse[start:start + chunk_rows]))
    return r.as_json()


def check_ids_fit(meta: dict[str, Any], cardinalities: list[int], *,
                  against: str = "vocabulary") -> None:
    """Raises DatasetError (one line) unless every id recorded in ``meta`` (its
    ``sparse_id_range``) lies in ``0..cardinalities[j]-1`` for its feature ``j``.

    ``cardinalities`` are the sizes the ids are used with: the dataset's vocabularies when a
    dataset is opened, or the model's feature sizes (``against="model"``) before training,
    e.g. ``check_ids_fit(dataset.meta, [f.num_ids for f in features], against="model")``.
    """
    ranges = meta.get(ID_RANGE_KEY)
    if ranges is None:
        raise DatasetError("meta.json records no id ranges; open the dataset with "
                           "ProcessedDataset (which computes them) first")
    names = list(meta.get("sparse_names", SPARSE_NAMES))
    problems = []
    order = sorted(ranges, key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))
    for split in order:
        r = ranges[split]
        if r is None:  # an empty split has no ids
            continue
        if len(r["max"]) != len(cardinalities):
            raise DatasetError(
                f"split {split!r} has ids for {len(r['max'])} categorical features but the "
                f"{against} has {len(cardinalities)}; re-create the dataset or fix the sizes")
        for j, (lo, hi) in enumerate(zip(r["min"], r["max"])):
            name = names[j] if j < len(names) else f"#{j}"
            if lo < 0:
                problems.append(f"split {split!r}, feature {name}: negative id {lo}")
            elif hi >= cardinalities[j]:
                problems.append(
                    f"split {split!r}, feature {name}: max id {hi} outside its {against} of "
                    f"{cardinalities[j]} ids (0..{cardinalities[j] - 1})")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DatasetError(f"{problems[0]}{more}; the ids do not fit the sizes, re-create the "
                           "dataset (or the model) with the right cardinalities")


@dataclass
class SplitArrays:
    """Memory-mapped arrays of one split. Shapes: dense (N, 13), sparse (N, 26), labels (N,)."""

    dense: np.ndarray
    sparse: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class ProcessedDataset:
    """Reads a processed folder: ``meta.json`` plus memory-mapped split arrays."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        meta_path = self.folder / META_FILE
        if not meta_path.is_file():
            raise DatasetError(
                f"no processed dataset at {self.folder} ({META_FILE} is missing). "
                "Create it first (synthetic data is generated automatically; Criteo data: "
                "`make preprocess DATASET=...`)."
            )
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(
                f"{meta_path}: format_version {self.meta.get('format_version')} but this code "
                f"reads version {FORMAT_VERSION}; re-create the dataset."
            )
        self.cardinalities: list[int] = [int(c) for c in self.meta["cardinalities"]]
        self.rows: dict[str, int] = {s: int(n) for s, n in self.meta["rows"].items()}
        for split, n in self.rows.items():
            for kind, (_, dtype, cols) in ARRAY_FILES.items():
                path = split_file(self.folder, split, kind)
                expected = n * (cols or 1) * np.dtype(dtype).itemsize
                size = path.stat().st_size if path.is_file() else -1
                if size != expected:
                    raise DatasetError(
                        f"{path}: expected {expected} bytes for {n} rows, found "
                        f"{'no file' if size < 0 else f'{size} bytes'}; the dataset is "
                        "incomplete or stale, re-create it."
                    )
        if ID_RANGE_KEY not in self.meta:
            self._record_id_ranges()
        try:
            check_ids_fit(self.meta, self.cardinalities)
        except DatasetError as err:
            raise DatasetError(f"{self.folder}: {err}") from None

    def _record_id_ranges(self) -> None:
        """For a dataset written before id ranges were recorded: one chunked scan of the
        arrays, recorded in meta.json so that it is never needed again. Scanning loses
        nothing (the arrays are read, not changed), where refusing would mean hours of
        preprocessing again for a Terabyte dataset whose arrays are fine."""
        log.info("%s: meta.json records no id ranges; scanning the arrays once", self.folder)
        self.meta[ID_RANGE_KEY] = {s: scan_id_range(self.split(s).sparse) for s in self.rows}
        try:
            _write_json_atomic(self.folder / META_FILE, self.meta)
        except OSError as err:  # a read-only copy still works, it is scanned on every open
            log.warning("%s: could not record the id ranges in %s (%s)", self.folder,
                        META_FILE, err)

    @property
    def id_range(self) -> dict[str, dict | None]:
        """Per split: {"min": [...], "max": [...]} of the ids of each feature (None if empty)."""
        return self.meta[ID_RANGE_KEY]

    @property
    def sparse_names(self) -> list[str]:
        return list(self.meta.get("sparse_names", SPARSE_NAMES))

    def split(self, name: str) -> SplitArrays:
        if name not in self.rows:
            raise DatasetError(f"{self.folder} has no split {name!r} (has {sorted(self.rows)})")
        n = self.rows[name]
        arrays = {}
        for kind, (_, dtype, cols) in ARRAY_FILES.items():
            shape = (n, cols) if cols else (n,)
            path = split_file(self.folder, name, kind)
            # np.memmap cannot map an empty file; an empty split is a valid (tiny) case.
            arrays[kind] = (
                np.memmap(path, dtype=dtype, mode="r", shape=shape) if n else np.zeros(shape, dtype)
            )
        return SplitArrays(**arrays)


class SplitWriter:
    """Appends chunks of one split to temporary files; ``finish`` renames them into place."""

    def __init__(self, folder: Path | str, split: str):
        self.folder = Path(folder)
        self.split = split
        self.rows = 0
        self.id_range = IdRange()
        self._files = {
            kind: open(self._tmp(kind), "wb") for kind in ARRAY_FILES  # noqa: SIM115
        }

    def _tmp(self, kind: str) -> Path:
        path = split_file(self.folder, self.split, kind)
        return path.with_name(path.name + ".tmp")

    def write(self, dense: np.ndarray, sparse: np.ndarray, labels: np.ndarray) -> None:
        """dense (n, 13) float32, sparse (n, 26) int32, labels (n,) 0/1."""
        n = labels.shape[0]
        if dense.shape != (n, NUM_DENSE) or sparse.shape != (n, NUM_SPARSE):
            raise ValueError(f"bad chunk shapes {dense.shape}, {sparse.shape}, {labels.shape}")
        self._files["dense"].write(np.ascontiguousarray(dense, np.float32).tobytes())
        self._files["sparse"].write(np.ascontiguousarray(sparse, np.int32).tobytes())
        self._files["labels"].write(np.ascontiguousarray(labels, np.uint8).tobytes())
        self.id_range.update(sparse)
        self.rows += n

    def finish(self) -> int:
        for kind, f in self._files.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(self._tmp(kind), split_file(self.folder, self.split, kind))
        # the id range goes to meta.json through write_meta; the sparse file's size and
        # time stamp tell it whether the range still belongs to that file
        _write_json_atomic(ids_file(self.folder, self.split), {
            "range": self.id_range.as_json(), "rows": self.rows,
            "sparse": _stamp(split_file(self.folder, self.split, "sparse"))})
        return self.rows

    def abort(self) -> None:
        for kind, f in self._files.items():
            f.close()
            self._tmp(kind).unlink(missing_ok=True)


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Temporary file (unique per process: several ranks may write at once), then rename."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _split_id_range(folder: Path, split: str, rows: int) -> dict | None:
    """The range ``SplitWriter`` recorded for the split's current sparse file, else a scan."""
    path = split_file(folder, split, "sparse")
    if not path.is_file():
        raise DatasetError(f"{path} is missing: write every split before meta.json")
    info = json.loads(ids_file(folder, split).read_text()) if ids_file(folder, split).is_file() else None
    if info is not None and info["rows"] == rows and info["sparse"] == _stamp(path):
        return info["range"]
    shape = (rows, NUM_SPARSE)
    return scan_id_range(np.memmap(path, np.int32, "r", shape=shape) if rows else np.zeros(shape))


def write_meta(folder: Path | str, meta: dict[str, Any]) -> None:
    """Writes ``meta.json`` atomically (temporary name, then rename): the last step of a build.

    Records each split's id range (``sparse_id_range``) unless ``meta`` gives it: the one
    its ``SplitWriter`` tracked, else one computed from the written array.
    """
    folder = Path(folder)
    full = {
        "format_version": FORMAT_VERSION,
        "num_dense": NUM_DENSE,
        "num_sparse": NUM_SPARSE,
        "sparse_names": SPARSE_NAMES,
        **meta,
    }
    for key in ("cardinalities", "rows"):
        if key not in full:
            raise ValueError(f"meta.json needs {key!r}")
    if ID_RANGE_KEY not in full:
        full[ID_RANGE_KEY] = {s: _split_id_range(folder, s, int(n)) for s, n in full["rows"].items()}
    _write_json_atomic(folder / META_FILE, full)
    for split in full["rows"]:  # recorded now
        ids_file(folder, split).unlink(missing_ok=True)


# renameat2(2) flag: swap two paths in one step (Linux >= 3.15, glibc >= 2.28)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two folders; False where the system cannot (then nothing changed)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def replace_folder(new: Path | str, dest: Path | str) -> Path | None:
    """Puts the finished folder ``new`` at ``dest`` in one rename, so that readers see either
    the previous dataset or the new one, never a mixture and never none.

    Returns where the previous contents of ``dest`` now are (for the caller to delete), or
    None if there were none. Where the file system cannot swap two folders atomically, the
    previous folder is first renamed to ``<dest>.previous``.

    Example::

        old = replace_folder("data/processed/x.building", "data/processed/x")
        if old: shutil.rmtree(old)
    """
    new, dest = Path(new), Path(dest)
    if not dest.exists():
        os.rename(new, dest)
        return None
    if _exchange(new, dest):
        return new
    previous = dest.with_name(dest.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    os.rename(dest, previous)
    os.rename(new, dest)
    return previous
