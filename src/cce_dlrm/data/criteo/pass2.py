"""Pass 2: the cached chunks' codes, as ids of the final dictionaries, into the split files.

Each chunk's rows are in line order, so they are a run of training rows, then test rows,
then validation rows; each run goes to its ``<split>.sparse.i32`` file at the row offset
that the earlier chunks' counts give. Worker processes (forked: they share the parent's
dictionaries) write the chunks; the parent marks a chunk written (``written/<chunk>``) only
after its rows are fsynced, and then deletes its cache file to free the disk. The mark
holds the chunk's smallest and largest id per feature and split, which ``meta.json``
records (``cce_dlrm.data.processed.ID_RANGE_KEY``) without reading the arrays again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cce_dlrm.data.criteo import cache
from cce_dlrm.data.criteo.layout import SPLIT_ORDER
from cce_dlrm.data.criteo.outputs import OffsetSplitWriter, sync_tmp_files
from cce_dlrm.data.criteo.schema import NUM_CATEGORICAL
from cce_dlrm.data.criteo.vocab import Vocabulary
from cce_dlrm.data.criteo.workers import Workers
from cce_dlrm.data.processed import IdRange


def sparse_ids(vocab: Vocabulary, parts: dict) -> np.ndarray:
    """A chunk's codes (26 arrays of n) -> (n, 26) int32 contiguous ids.

    Only the chunk's distinct values are looked up in the dictionary (a sorted search);
    the rows then take their id through their code, a gather from a small array.
    """
    uniques, off = parts["uniques"], parts["unique_offsets"]
    columns = np.empty((NUM_CATEGORICAL, len(parts["codes_0"])), np.int32)
    for j in range(NUM_CATEGORICAL):
        np.take(vocab.ids(j, uniques[off[j]:off[j + 1]]), parts[f"codes_{j}"], out=columns[j])
    # one transposing copy is about twice as fast as 26 strided column writes
    return np.ascontiguousarray(columns.T)


# The dictionaries, set in the parent before the workers fork: they share its memory.
_VOCAB: Vocabulary | None = None


@dataclass(frozen=True)
class IdsTask:
    work: str
    out: str
    name: str
    rows: dict[str, int]  # rows per split of the chunk
    start: dict[str, int]  # row offset per split of the chunk


def write_ids(task: IdsTask) -> tuple[str, int, dict]:
    """Worker side: one chunk's ids into the ``<split>.sparse.i32`` files; (name, rows,
    {split: id range of the chunk's rows of that split, see ``IdRange.as_json``})."""
    sparse = sparse_ids(_VOCAB, cache.read_chunk(Path(task.work), task.name))
    writer = OffsetSplitWriter(Path(task.out))
    ranges = {}
    try:
        lo = 0
        for split in SPLIT_ORDER:
            n = task.rows[split]
            if n:
                writer.write(split, task.start[split], sparse=sparse[lo:lo + n])
                r = IdRange()
                r.update(sparse[lo:lo + n])
                ranges[split] = r.as_json()
            lo += n
    finally:
        writer.close()
    return task.name, lo, ranges


def write_sparse(chunks: list[tuple[str, dict]], work: Path, out: Path, vocab: Vocabulary,
                 workers: int, sync_bytes: int,
                 on_rows: Callable[[int], None] | None = None,
                 on_chunk: Callable[[str], None] | None = None,
                 ) -> tuple[dict[str, int], dict[str, dict | None] | None]:
    """Writes the ids of every chunk not yet marked written; returns the rows per split and
    the id range per split (None if a chunk's mark, left by an older version, has none).

    ``chunks``: (name, info) of every chunk of every file, in file and chunk order. Written
    chunks are fsynced and marked every ``sync_bytes`` of output (group commit: an fsync
    per chunk waits for the disk each time); one written but not yet marked when a run
    stops is written again, the same bytes at the same offset.
    """
    global _VOCAB
    marks = work / "written"
    marks.mkdir(exist_ok=True)
    rows = dict.fromkeys(SPLIT_ORDER, 0)
    todo = []
    for name, info in chunks:
        start = dict(rows)
        for split in SPLIT_ORDER:
            rows[split] += info["rows"][split]
        if not (marks / name).exists():
            todo.append(IdsTask(str(work), str(out), name, info["rows"], start))
    pending, unsynced = [], 0

    def commit():
        sync_tmp_files(out, "sparse")
        for name, ranges in pending:
            cache.write_json(marks / name, ranges, sync=False)  # lost in a crash: redone
            cache.remove_chunk_data(work, name)
        pending.clear()

    _VOCAB = vocab
    try:
        with Workers(workers) as pool:
            for name, n, ranges in pool.map_ordered(write_ids, todo):
                pending.append((name, ranges))
                unsynced += n * NUM_CATEGORICAL * 4
                if unsynced >= sync_bytes:
                    commit()
                    unsynced = 0
                if on_rows is not None:
                    on_rows(n)
                if on_chunk is not None:
                    on_chunk(name)
        commit()
    finally:
        _VOCAB = None
    return rows, _id_ranges(marks, [name for name, _ in chunks])


def _id_ranges(marks: Path, names: list[str]) -> dict[str, dict | None] | None:
    """The id range per split, combined from the chunks' marks."""
    total = {split: IdRange() for split in SPLIT_ORDER}
    for name in names:
        ranges = cache.read_json(marks / name) if (marks / name).stat().st_size else None
        if ranges is None:
            return None
        for split, r in ranges.items():
            total[split].merge(r)
    return {split: r.as_json() for split, r in total.items()}
