"""Pass 1: every raw file, chunk by chunk, into the work folder, counting the dictionaries.

The parent process reads the file in chunks of whole lines (counting lines, so each chunk
knows its first line number) and hands them to worker processes. A worker (``process_chunk``)
parses and validates the chunk, assigns splits by line, drops the rows that ``row_fraction``
leaves out and subsampled training negatives, reduces categorical values modulo
``max_ind_range`` or ``per_feature_modulus``, transforms the dense
features, factorises each feature (codes into the chunk's own sorted distinct values) and
stores codes and distinct values in the work folder (``cache.write_chunk``). The parent,
in chunk order, writes the dense features and labels to the split files (their row
offsets are known: the chunks before have been counted) and counts the distinct values
into the VocabCounter. A chunk whose JSON exists is not parsed again: its distinct values
are read back from its file instead.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from cce_dlrm.data.criteo import cache
from cce_dlrm.data.criteo.errors import CriteoInputError
from cce_dlrm.data.criteo.features import dense_features, factorize, reduce_range
from cce_dlrm.data.criteo.inputs import PreprocessSettings, RawFile
from cce_dlrm.data.criteo.layout import SPLIT_ORDER, Segment, split_of_lines
from cce_dlrm.data.criteo.outputs import OffsetSplitWriter
from cce_dlrm.data.criteo.parse import ParsedRows, parse_chunk
from cce_dlrm.data.criteo.sampling import fraction_mask, keep_mask
from cce_dlrm.data.criteo.schema import (
    NUM_CATEGORICAL, SAMPLED_OUT, SUBSAMPLED_NEGATIVE, TRUNCATED_ROW,
)
from cce_dlrm.data.criteo.source import LineChunk, is_gzip, iter_line_chunks, read_range
from cce_dlrm.data.criteo.vocab import VocabCounter
from cce_dlrm.data.criteo.workers import Workers

log = logging.getLogger(__name__)


def gzip_truncated_error(raw: RawFile, line: int) -> CriteoInputError:
    return CriteoInputError(raw.name, line, "gzip data ends early: the file is incomplete or "
                            "damaged (download it again, or use mode=lenient to keep the rows "
                            "before the break)")


def empty_file_error(raw: RawFile) -> CriteoInputError:
    return CriteoInputError(raw.name, None, "empty file: no rows (an interrupted download or "
                            "unpacking?); use mode=lenient to skip it")


def _chunk_output(rows: ParsedRows, chunk: LineChunk, file_index: int, name: str,
                  segments: list[Segment], settings: PreprocessSettings, file_key: int = 0):
    """What pass 1 keeps of one chunk: (arrays for cache.write_chunk,
    (dense (n, 13) float32, labels (n,) uint8), info); rows in line order.

    ``file_key`` identifies the file to ``row_fraction`` (``RawFile.key``); negative
    subsampling keys on ``file_index``, as it always has."""
    split = split_of_lines(segments, rows.lines)
    if len(split) and (split.min() < 0 or (np.diff(split) < 0).any()):
        raise CriteoInputError(name, None,
                               "has more lines than when it was counted: it changed while "
                               "being preprocessed; run again")
    sampled = fraction_mask(settings.row_fraction, settings.subsample_seed, file_key, rows.lines)
    keep = sampled & keep_mask(rows.labels, split == 0, settings.negative_subsampling,
                               settings.subsample_seed, file_index, rows.lines)
    skipped = Counter(rows.skipped)
    sampled_out = int(len(sampled) - np.count_nonzero(sampled))
    subsampled = int(len(sampled) - np.count_nonzero(keep)) - sampled_out
    if sampled_out:
        skipped[SAMPLED_OUT] += sampled_out
    if subsampled:
        skipped[SUBSAMPLED_NEGATIVE] += subsampled
    if sampled_out or subsampled:
        split, labels = split[keep], rows.labels[keep]
        dense, cats = rows.dense[:, keep], rows.cats[:, keep]
    else:
        labels, dense, cats = rows.labels, rows.dense, rows.cats
    reduce_range(cats, settings.max_ind_range, settings.per_feature_modulus)

    arrays, uniques, counts, offsets = {}, [], [], [0]
    # counts matter only to a frequency threshold; without one, presence is enough
    with_counts = settings.frequency_threshold >= 2
    for j in range(NUM_CATEGORICAL):
        arrays[f"codes_{j}"], u, c = factorize(cats[j], with_counts)
        uniques.append(u)
        counts.append(c)
        offsets.append(offsets[-1] + len(u))
    arrays["uniques"] = np.concatenate(uniques)
    arrays["unique_offsets"] = np.array(offsets, np.int64)
    # without a threshold every count is 1: store none (30% of the work folder)
    arrays["unique_counts"] = (np.concatenate(counts).astype(np.int64) if with_counts
                               else np.zeros(0, np.int64))

    per_split = np.bincount(split, minlength=len(SPLIT_ORDER))
    positives = np.bincount(split, weights=labels, minlength=len(SPLIT_ORDER))
    rows_read = chunk.n_lines
    if chunk.truncated_tail:  # the partial line after the last newline of a broken gzip
        rows_read += 1
        skipped[TRUNCATED_ROW] += 1
    info = {
        "rows_read": rows_read,
        "rows": {s: int(per_split[k]) for k, s in enumerate(SPLIT_ORDER)},
        "positives": {s: int(positives[k]) for k, s in enumerate(SPLIT_ORDER)},
        "skipped": dict(sorted(skipped.items())),
        "padded": rows.padded,
        "start": chunk.start, "end": chunk.end,
        "first_line": chunk.first_line, "end_line": chunk.first_line + chunk.n_lines,
        "truncated_gzip": chunk.truncated_tail is not None,
    }
    return arrays, (dense_features(dense), labels), info


def _count(counter: VocabCounter, parts: dict) -> None:
    off, uniques, counts = parts["unique_offsets"], parts["uniques"], parts["unique_counts"]
    if len(counts) != len(uniques):  # not stored: presence only (see _chunk_output)
        counts = np.ones(len(uniques), np.int64)
    for j in range(NUM_CATEGORICAL):
        counter.add_chunk(j, uniques[off[j]:off[j + 1]], counts[off[j]:off[j + 1]])


def _advance(offsets: dict[str, int], info: dict) -> dict[str, int]:
    """Moves ``offsets`` past ``info``'s chunk; returns where that chunk's rows start."""
    start = dict(offsets)
    for split in SPLIT_ORDER:
        offsets[split] += info["rows"][split]
    return start


@dataclass(frozen=True)
class ChunkTask:
    """One chunk's work, as sent to a worker. ``chunk.buffer`` holds the bytes of a gzip
    file's chunk; a plain file's chunk (empty buffer) is read by the worker itself."""

    file_index: int
    file_key: int  # RawFile.key: what row_fraction's numbers depend on
    path: str
    name: str
    segments: list[Segment]
    settings: PreprocessSettings
    work: str
    threads: bool  # pyarrow's own threads: only when no worker processes share the CPUs
    chunk: LineChunk


def process_chunk(task: ChunkTask) -> tuple[LineChunk, dict, np.ndarray, np.ndarray]:
    """Worker side: (chunk metadata, info, dense (n, 13) float32, labels (n,) uint8);
    the codes and distinct values are written to the work folder."""
    chunk = task.chunk
    if chunk.size == 0 and chunk.n_lines:
        data = read_range(task.path, chunk.start, chunk.end, chunk.unterminated)
        chunk = replace(chunk, buffer=data, size=len(data))
    rows = parse_chunk(chunk, task.name, task.settings.strict, threads=task.threads)
    arrays, (dense, labels), info = _chunk_output(rows, chunk, task.file_index, task.name,
                                                  task.segments, task.settings, task.file_key)
    cache.write_chunk(Path(task.work), cache.chunk_name(task.file_index, chunk.index), arrays)
    return replace(chunk, buffer=bytearray(), size=0), info, dense, labels


def run_file(file_index: int, raw: RawFile, segments: list[Segment], work: Path,
             settings: PreprocessSettings, counter: VocabCounter, writer: OffsetSplitWriter,
             offsets: dict[str, int], workers: Workers,
             on_bytes: Callable[[int], None] | None = None,
             on_chunk: Callable[[LineChunk, dict], None] | None = None) -> list[dict]:
    """Processes one raw file, resuming after its finished chunks; returns the chunk infos.

    ``offsets``: rows per split written before this file, advanced in place. A chunk's
    dense features and labels go to the split files at these offsets, its codes and
    distinct values to the work folder for pass 2; every ``settings.sync_mb`` of input the
    finished chunks are fsynced and then marked finished (their JSON files).
    """
    infos = []
    while (info := cache.chunk_info(work, cache.chunk_name(file_index, len(infos)))) is not None:
        _count(counter, cache.read_chunk(work, cache.chunk_name(file_index, len(infos)),
                                         cache.VOCAB_PARTS))
        _advance(offsets, info)
        infos.append(info)
    if cache.read_json(work / f"f{file_index:03d}.done.json") is not None:
        return infos
    last = infos[-1] if infos else None
    if last is not None and last["truncated_gzip"]:
        return _finish_file(file_index, raw, work, settings, infos)
    chunks = iter_line_chunks(raw.path, settings.chunk_bytes,
                              start=last["end"] if last else 0,
                              first_line=last["end_line"] if last else 0,
                              first_index=len(infos), progress=on_bytes, reuse_buffer=True)
    gz = is_gzip(raw.path)

    def tasks():
        for chunk in chunks:  # the reader refills its buffer: a task gets a copy or nothing
            data = bytearray(chunk.data) if gz else bytearray()
            yield ChunkTask(file_index, raw.key, str(raw.path), raw.name, segments, settings,
                            str(work), workers.in_process, replace(chunk, buffer=data, size=len(data)))

    pending, unsynced = [], 0

    def commit():  # group commit: one fsync per file for many chunks
        writer.sync()
        for name, info in pending:
            cache.commit_chunk(work, name, info)
        pending.clear()

    for chunk, info, dense, labels in workers.map_ordered(process_chunk, tasks()):
        if chunk.truncated_tail is not None and settings.strict:
            raise gzip_truncated_error(raw, chunk.first_line + chunk.n_lines + 1)
        start, lo = _advance(offsets, info), 0
        for split in SPLIT_ORDER:  # the chunk's rows: training, then test, then validation
            n = info["rows"][split]
            if n:
                writer.write(split, start[split], dense=dense[lo:lo + n], labels=labels[lo:lo + n])
            lo += n
        name = cache.chunk_name(file_index, chunk.index)
        _count(counter, cache.read_chunk(work, name, cache.VOCAB_PARTS))
        infos.append(info)
        pending.append((name, info))
        unsynced += chunk.end - chunk.start
        if unsynced >= settings.sync_bytes:
            commit()
            unsynced = 0
        if on_chunk is not None:
            on_chunk(chunk, info)
    commit()
    return _finish_file(file_index, raw, work, settings, infos)


def _finish_file(file_index: int, raw: RawFile, work: Path, settings: PreprocessSettings,
                 infos: list[dict]) -> list[dict]:
    if sum(i["rows_read"] for i in infos) == 0:
        if settings.strict:
            raise empty_file_error(raw)
        log.warning("%s: empty file, skipped", raw.name)
    if infos and infos[-1]["truncated_gzip"]:
        log.warning("%s: gzip data ends early; kept the %d complete lines before the break",
                    raw.name, infos[-1]["end_line"])
    cache.write_json(work / f"f{file_index:03d}.done.json", {"chunks": len(infos)})
    return infos
