"""The processed dataset format every data source writes and the loader reads.

A processed dataset is one folder::

    meta.json                    cardinalities, row counts, provenance (written last)
    train.dense.f32              float32, rows x 13, row-major (already log-transformed)
    train.sparse.i32             int32,   rows x 26, contiguous ids per feature
    train.labels.u8              uint8,   rows (0 or 1)
    val.*  test.*                the same three files per split

Flat binary files plus a small metadata file (as nanoGPT does) so that any split can be
memory-mapped without loading it, and so that a writer can append chunks without knowing
the final row count. ``meta.json`` is written last: a folder without it is unfinished.

Example::

    ds = ProcessedDataset("data/processed/synthetic")
    ds.cardinalities          # [n_0, ..., n_25]
    arrays = ds.split("val")  # SplitArrays(dense=(N, 13) memmap, sparse=(N, 26), labels=(N,))
"""

from __future__ import annotations

import json
import os
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
        self.rows += n

    def finish(self) -> int:
        for kind, f in self._files.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(self._tmp(kind), split_file(self.folder, self.split, kind))
        return self.rows

    def abort(self) -> None:
        for kind, f in self._files.items():
            f.close()
            self._tmp(kind).unlink(missing_ok=True)


def write_meta(folder: Path | str, meta: dict[str, Any]) -> None:
    """Writes ``meta.json`` atomically (temporary name, then rename): the last step of a build."""
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
    tmp = folder / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / META_FILE)
