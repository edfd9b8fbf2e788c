"""The work folder's per-chunk files: what pass 1 computed, for pass 2 to write out.

A chunk is stored as ``<name>.npys`` (several .npy arrays back to back) and
``<name>.json`` (its counts). Both are written under temporary names and renamed, the JSON
last: a chunk without its JSON is unfinished and is redone. Small helpers for atomic JSON
files live here too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

# Array order in a chunk file. The dictionary parts come first so that a resumed pass 1
# can read them without reading the codes.
VOCAB_PARTS = ("uniques", "unique_offsets", "unique_counts")
CODE_PARTS = tuple(f"codes_{j}" for j in range(26))
ALL_PARTS = VOCAB_PARTS + CODE_PARTS


def write_json(path: Path, obj: Any, sync: bool = True) -> None:
    """Writes ``obj`` to ``path`` atomically (temporary name, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True) + "\n")
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def chunk_name(file_index: int, chunk_index: int) -> str:
    return f"f{file_index:03d}-c{chunk_index:06d}"


def write_chunk(folder: Path, name: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes a chunk's arrays (not yet durable, not yet finished: see ``commit_chunk``).

    arrays: uniques (U,) int64 (every feature's distinct values, one after the other),
    unique_offsets (27,) int64, unique_counts (U,) int64 (or (0,) when only presence
    matters), codes_j (n,) uint16 or uint32.
    """
    data = folder / f"{name}.npys"
    tmp = data.with_name(data.name + ".tmp")
    with open(tmp, "wb") as f:
        for part in ALL_PARTS:
            np.lib.format.write_array(f, np.ascontiguousarray(arrays[part]), allow_pickle=False)
    os.replace(tmp, data)


def commit_chunk(folder: Path, name: str, info: dict) -> None:
    """Makes a written chunk durable (fsync) and marks it finished (its JSON)."""
    fd = os.open(folder / f"{name}.npys", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    # no fsync needed: if the JSON is lost in a crash the chunk is merely redone
    write_json(folder / f"{name}.json", info, sync=False)


def chunk_info(folder: Path, name: str) -> dict | None:
    """The chunk's counts if it is complete, else None."""
    info = read_json(folder / f"{name}.json")
    return info if info is not None and (folder / f"{name}.npys").is_file() else None


def read_chunk(folder: Path, name: str, parts: tuple[str, ...] = ALL_PARTS):
    """The requested arrays of a chunk file, as a dict (reading stops after the last one)."""
    last = max(ALL_PARTS.index(p) for p in parts)
    out = {}
    with open(folder / f"{name}.npys", "rb") as f:
        for part in ALL_PARTS[:last + 1]:
            out[part] = np.lib.format.read_array(f, allow_pickle=False)
    return {p: out[p] for p in parts}


def remove_chunk_data(folder: Path, name: str) -> None:
    """Frees the disk space of a chunk once pass 2 has written it (its JSON stays)."""
    (folder / f"{name}.npys").unlink(missing_ok=True)
