"""The split files of the processed format, written at row offsets so that writing resumes.

Each ``<split>.<kind>`` file is written as ``<split>.<kind>.tmp``; every chunk goes to its
own row offset (the rows of the chunks before it), so chunks can be written by different
runs, in any order, and written again after an interruption, with the same result. Pass 1
writes the dense features and labels, pass 2 the categorical ids. ``finish_split_files``
gives each file its final size and renames it into place. Names and dtypes are those of
``cce_dlrm.data.processed``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cce_dlrm.data.processed import ARRAY_FILES, split_file


def row_bytes(kind: str) -> int:
    _, dtype, cols = ARRAY_FILES[kind]
    return (cols or 1) * np.dtype(dtype).itemsize


def tmp_path(folder: Path, split: str, kind: str) -> Path:
    path = split_file(folder, split, kind)
    return path.with_name(path.name + ".tmp")


class OffsetSplitWriter:
    """Temporary split files (opened on first use, never truncated) written at row offsets."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._fds: dict[tuple[str, str], int] = {}

    def _fd(self, split: str, kind: str) -> int:
        if (split, kind) not in self._fds:
            self._fds[split, kind] = os.open(tmp_path(self.folder, split, kind),
                                             os.O_RDWR | os.O_CREAT, 0o644)
        return self._fds[split, kind]

    def write(self, split: str, row: int, **arrays: np.ndarray) -> None:
        """Writes ``dense`` (n, 13), ``sparse`` (n, 26) and/or ``labels`` (n,) at row ``row``."""
        for kind, arr in arrays.items():
            _, dtype, _ = ARRAY_FILES[kind]
            buf = memoryview(np.ascontiguousarray(arr, dtype)).cast("B")
            fd, offset = self._fd(split, kind), row * row_bytes(kind)
            while buf:  # pwrite may write less than asked
                done = os.pwrite(fd, buf, offset)
                buf, offset = buf[done:], offset + done

    def sync(self) -> None:
        for fd in self._fds.values():
            os.fsync(fd)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def sync_tmp_files(folder: Path, kind: str) -> None:
    """fsyncs the temporary ``<split>.<kind>`` files (written by other processes)."""
    for split in ("train", "val", "test"):
        path = tmp_path(Path(folder), split, kind)
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def finish_split_files(folder: Path, rows: dict[str, int]) -> None:
    """Gives every temporary split file its final size (``rows`` per split), fsyncs it and
    renames it into place. Safe to repeat after an interruption: a file already renamed
    has no temporary file left."""
    folder = Path(folder)
    for split, n in rows.items():
        for kind in ARRAY_FILES:
            tmp, final = tmp_path(folder, split, kind), split_file(folder, split, kind)
            if not tmp.exists() and final.exists():
                continue
            with open(tmp, "ab") as f:  # creates the file of an empty split
                size = f.tell()
                if size < n * row_bytes(kind):
                    raise RuntimeError(f"{tmp}: {size} bytes, fewer than the {n} rows counted "
                                       "(internal error)")
                f.truncate(n * row_bytes(kind))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
