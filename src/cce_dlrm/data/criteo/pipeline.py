"""Raw Criteo files -> the processed format of ``cce_dlrm.data.processed``, resumably.

Everything is built in a staging folder next to the output, ``<out>.building/``, and put
in place with one atomic rename (``processed.replace_folder``) once it is complete: a run
that fails or is killed leaves the previous dataset at ``<out>`` as it was, usable (the
price: disk room for both until the swap).

Before anything is read, the first line of every raw file is checked for the wrong format
(a CSV file is named as one, not rejected row by row).

Stages, each resumable (state in ``<out>.building/.work/``, every file written under a
temporary name and renamed when complete):

0. line counts of the files whose split layout needs them (Kaggle's ``train.txt``, the
   Terabyte evaluation day);
1. pass 1 (``pass1``): parse, validate and subsample each chunk, write its dense features
   and labels into the split files and its factorised categoricals into the work folder,
   and count the dictionaries; ends with ``vocab.npz`` (the dictionaries);
2. pass 2 (``pass2``): write the categorical ids into the split files;
3. rename the split files into place, write ``meta.json`` (last, with the id range of every
   feature per split), delete the work folder, swap the staging folder into place.

``meta.json`` records the fingerprints of the raw files and the settings: a later run
with the same ones has nothing to do; with other ones the outputs are stale and rebuilt
(the log says which settings and which files, with their sizes, changed).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from cce_dlrm.data.criteo import cache
from cce_dlrm.data.criteo.errors import CriteoInputError
from cce_dlrm.data.criteo.inputs import LATER_SETTINGS, PreprocessSettings, RawFile
from cce_dlrm.data.criteo.layout import SPLIT_ORDER
from cce_dlrm.data.criteo.outputs import OffsetSplitWriter, finish_split_files
from cce_dlrm.data.criteo.pass1 import empty_file_error, gzip_truncated_error, run_file
from cce_dlrm.data.criteo.pass2 import write_sparse
from cce_dlrm.data.criteo.schema import MALFORMED_KINDS, SAMPLED_OUT, SUBSAMPLED_NEGATIVE
from cce_dlrm.data.criteo.source import count_lines, fingerprint, looks_like_csv
from cce_dlrm.data.criteo.vocab import VocabCounter, Vocabulary
from cce_dlrm.data.criteo.workers import Workers, worker_count
from cce_dlrm.data.processed import (
    ARRAY_FILES, ID_RANGE_KEY, META_FILE, SPLITS, DatasetError, ProcessedDataset, replace_folder,
    split_file, write_meta,
)

log = logging.getLogger(__name__)

WORK_DIR = ".work"
STAGING_SUFFIX = ".building"
VOCAB_FILE = "vocab.npz"
COUNTS_CHECKPOINT = "counts.npz"

# on_chunk(stage, n): called after the n-th chunk (1-based, over the whole run) of a stage
# ("parse" or "write") is stored; progress reporting and tests use it.
ChunkHook = Callable[[str, int], None]


def _output_names() -> set[str]:
    """Names of everything this pipeline writes in an output folder."""
    names = [META_FILE, VOCAB_FILE]
    names += [split_file(Path(), s, k).name for s in SPLITS for k in ARRAY_FILES]
    return {WORK_DIR} | {n for name in names for n in (name, f"{name}.tmp")}


def clear_outputs(out: Path) -> None:
    """Removes everything this pipeline writes in ``out`` (and nothing else)."""
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    for name in _output_names() - {WORK_DIR}:
        (out / name).unlink(missing_ok=True)


def staging_folder(out: Path) -> Path:
    """Where the next version of ``out`` is built: ``<out>.building`` next to it."""
    return out.with_name(out.name + STAGING_SUFFIX)


def _difference(old: dict | None, new: dict, files: list[RawFile]) -> str:
    """What differs between the recorded inputs and the current ones: the settings, and the
    raw files (path, recorded and current size), e.g.
    ``settings changed: frequency_threshold 0 -> 2; train.txt changed (/data/raw/train.txt:
    size 11,045,110 -> 9,120,444 bytes)``."""
    if not old:
        return "it records no inputs"
    parts = []
    if old.get("dataset") != new["dataset"]:
        parts.append(f"dataset {old.get('dataset')!r} -> {new['dataset']!r}")
    was, now = old.get("settings") or {}, new["settings"]
    if was != now:
        def value(settings, key):  # a later setting left out is at its old behaviour
            return settings.get(key, LATER_SETTINGS.get(key))

        keys = list(now) + [k for k in was if k not in now]
        parts.append("settings changed: " + ", ".join(
            f"{k} {value(was, k)!r} -> {value(now, k)!r}" for k in keys
            if value(was, k) != value(now, k)))
    before = {f["name"]: f for f in old.get("files", [])}
    paths = {raw.name: raw.path for raw in files}
    for f in new["files"]:
        b = before.pop(f["name"], None)
        if b is None:
            parts.append(f"{f['name']} is a new input ({paths[f['name']]}: {f['size']:,} bytes)")
        elif b != f:
            size = b.get("size")
            detail = (f"size {size:,} -> {f['size']:,} bytes" if isinstance(size, int)
                      else f"{f['size']:,} bytes")
            if b.get("sha256_ends") == f["sha256_ends"] and b.get("layout") != f["layout"]:
                detail += f", role {b.get('layout')} -> {f['layout']}"
            elif size == f["size"]:
                detail += ", other content"
            parts.append(f"{f['name']} changed ({paths[f['name']]}: {detail})")
    parts += [f"{name} is no longer an input" for name in before]
    return "; ".join(parts) or "its inputs differ"


def _check_format(files: list[RawFile]) -> None:
    """Stops on a raw file that is CSV, before any work (otherwise every row would be
    rejected as a bad label, one by one)."""
    for raw in files:
        csv = looks_like_csv(raw.path)
        if csv is not None:
            raise CriteoInputError(str(raw.path), None, f"this looks like CSV ({csv}); "
                                   "expected tab-separated Criteo rows")


def _install(stage: Path, out: Path) -> None:
    """Swaps the finished ``stage`` in at ``out``, then deletes the previous dataset. Files
    in ``out`` that this pipeline did not write move over to the new folder first."""
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _output_names())
        for name in foreign:
            if not (stage / name).exists():
                os.rename(out / name, stage / name)
        if foreign:
            log.info("kept in %s: %s (not part of the processed dataset)", out, ", ".join(foreign))
    previous = replace_folder(stage, out)
    if previous is None:
        return
    clear_outputs(previous)
    left = sorted(p.name for p in previous.iterdir())
    if left:  # never delete what this pipeline did not write
        log.warning("files left in %s: %s", previous, ", ".join(left))
    else:
        previous.rmdir()


def _line_counts(files: list[RawFile], work: Path, settings: PreprocessSettings,
                 progress: bool) -> dict[int, int]:
    counts = {}
    for i, raw in enumerate(files):
        if not raw.needs_line_count:
            continue
        path = work / f"f{i:03d}.lines.json"
        info = cache.read_json(path)
        if info is None:
            with tqdm(total=raw.path.stat().st_size, unit="B", unit_scale=True,
                      desc=f"counting lines of {raw.name}", disable=not progress) as bar:
                c = count_lines(raw.path, bar.update)
            info = {"lines": c.lines, "truncated": c.truncated, "break_line": c.break_line}
            cache.write_json(path, info)
        if settings.strict and info["truncated"]:
            raise gzip_truncated_error(raw, info["break_line"])
        if settings.strict and info["lines"] == 0:
            raise empty_file_error(raw)
        counts[i] = info["lines"]
    return counts


def _pass1(files, segments, work, out, settings, progress, hook) -> list[list[dict]]:
    """Runs pass 1 unless finished; returns the chunk infos of every file."""
    def infos_of(i):
        done = cache.read_json(work / f"f{i:03d}.done.json")
        return [cache.read_json(work / f"{cache.chunk_name(i, k)}.json")
                for k in range(done["chunks"])]

    if (out / VOCAB_FILE).is_file():
        return [infos_of(i) for i in range(len(files))]
    checkpoint = work / COUNTS_CHECKPOINT
    counter, files_done = (VocabCounter.load(checkpoint) if checkpoint.is_file()
                           else (VocabCounter(), 0))
    all_infos = [infos_of(i) for i in range(files_done)]
    rows = sum(i["rows_read"] for infos in all_infos for i in infos)
    offsets = dict.fromkeys(SPLIT_ORDER, 0)  # rows per split written by the files before
    for infos in all_infos:
        for info in infos:
            for split in SPLIT_ORDER:
                offsets[split] += info["rows"][split]
    parsed = 0
    # the workers fork before any progress-bar thread exists
    with Workers(worker_count(settings.workers)) as workers, \
            tqdm(total=sum(f.path.stat().st_size for f in files), unit="B", unit_scale=True,
              initial=sum(f.path.stat().st_size for f in files[:files_done]),
              desc="pass 1/2: parse", disable=not progress) as bar:
        def on_chunk(chunk, info):
            nonlocal rows, parsed
            rows += info["rows_read"]
            parsed += 1
            bar.set_postfix(rows=f"{rows:,}", refresh=False)
            hook("parse", parsed)

        writer = OffsetSplitWriter(out)
        try:
            for i in range(files_done, len(files)):
                all_infos.append(run_file(i, files[i], segments[i], work, settings, counter,
                                          writer, offsets, workers, on_bytes=bar.update,
                                          on_chunk=on_chunk))
                if i < len(files) - 1:  # the last file's counts go straight into vocab.npz
                    counter.save(checkpoint, i + 1)
        finally:
            writer.close()
    log.info("building the id dictionaries")
    counter.finish(settings.frequency_threshold).save(out / VOCAB_FILE)
    return all_infos


def _totals(files: list[RawFile], all_infos: list[list[dict]]) -> dict:
    """Row accounting of the whole run; rows read = rows written + rows skipped."""
    per_file, skipped = [], Counter()
    for raw, infos in zip(files, all_infos):
        d = Counter()
        for info in infos:
            d.update(info["skipped"])
        read = sum(i["rows_read"] for i in infos)
        written = sum(sum(i["rows"].values()) for i in infos)
        per_file.append({"name": raw.name, "rows_read": read, "rows_written": written,
                         "rows_skipped": dict(sorted(d.items())),
                         "rows_padded": sum(i["padded"] for i in infos),
                         "empty": read == 0,
                         "truncated_gzip": bool(infos) and infos[-1]["truncated_gzip"]})
        skipped.update(d)
        if read != written + sum(d.values()):
            raise RuntimeError(f"{raw.name}: {read} rows read but {written} written and "
                               f"{sum(d.values())} skipped (internal error)")
    kinds = {k: skipped.get(k, 0) for k in (*MALFORMED_KINDS, SUBSAMPLED_NEGATIVE, SAMPLED_OUT)}
    return {
        "rows_read": sum(f["rows_read"] for f in per_file),
        "rows_written": sum(f["rows_written"] for f in per_file),
        "rows_skipped": kinds,
        "rows_padded": sum(f["rows_padded"] for f in per_file),
        "files": per_file,
    }


def build(files: list[RawFile], out_dir: Path | str, dataset: str,
          settings: PreprocessSettings, progress: bool = True,
          on_chunk: ChunkHook | None = None) -> dict:
    """Preprocesses ``files`` into ``out_dir``; returns the contents of ``meta.json``.

    Raises CriteoInputError for malformed input in strict mode (and for input no mode can
    use: corrupt gzip, no rows at all).
    """
    started = time.time()
    hook = on_chunk or (lambda stage, n: None)
    out = Path(out_dir)
    if out.is_symlink():  # e.g. to a larger disk: build next to the real folder, swap it there
        out = out.resolve()
    _check_format(files)
    stage = staging_folder(out)
    if not out.exists() and (stage / META_FILE).is_file():
        # a run stopped between the two renames of replace_folder's fallback: finish it
        _install(stage, out)
    identity = {"dataset": dataset,
                "files": [{**fingerprint(f.path), "layout": f.layout} for f in files],
                "settings": settings.output_settings()}
    old = cache.read_json(out / META_FILE)
    if old is not None:
        if old.get("build") == identity:
            try:
                # checks that every split file is there, of the right size, ids in range
                current = ProcessedDataset(out)
                log.info("%s is up to date (same raw files and settings); nothing to do", out)
                return current.meta
            except DatasetError as err:
                log.warning("%s is damaged (%s); rebuilding", out, err)
        else:
            log.warning("%s is stale: %s; rebuilding", out,
                        _difference(old.get("build"), identity, files))
        log.info("%s stays as it is until its successor, built in %s, is complete", out, stage)

    stage.mkdir(parents=True, exist_ok=True)
    work = stage / WORK_DIR
    state = {**identity, "chunk_bytes": settings.chunk_bytes}
    if cache.read_json(work / "build.json") == state:
        log.info("resuming the unfinished run in %s", work)
    else:
        if work.exists():
            log.warning("discarding unfinished work in %s (other raw files or settings)", work)
        clear_outputs(stage)
        work.mkdir(parents=True)
        cache.write_json(work / "build.json", state)

    counts = _line_counts(files, work, settings, progress)
    segments = [f.segments(counts.get(i)) for i, f in enumerate(files)]
    all_infos = _pass1(files, segments, work, stage, settings, progress, hook)
    for i, raw in enumerate(files):
        read = sum(info["rows_read"] for info in all_infos[i])
        if i in counts and read != counts[i]:
            raise CriteoInputError(raw.name, None, f"counted {counts[i]} lines but read {read}: "
                                   "the file changed during preprocessing; run again")
    totals = _totals(files, all_infos)
    if totals["rows_written"] == 0:
        skipped = {k: v for k, v in totals["rows_skipped"].items() if v}
        raise CriteoInputError(", ".join(f.name for f in files), None,
                               f"no usable rows ({totals['rows_read']} read, skipped: {skipped})")

    vocab = Vocabulary.load(stage / VOCAB_FILE)
    chunks = [(cache.chunk_name(i, k), info) for i, infos in enumerate(all_infos)
              for k, info in enumerate(infos)]
    written = 0
    with tqdm(total=totals["rows_written"], unit="rows", unit_scale=True,
              desc="pass 2/2: write", disable=not progress) as bar:
        def chunk_written(name):
            nonlocal written
            written += 1
            hook("write", written)

        rows, id_ranges = write_sparse(chunks, work, stage, vocab,
                                       worker_count(settings.workers), settings.sync_bytes,
                                       on_rows=bar.update, on_chunk=chunk_written)
    finish_split_files(stage, rows)

    positives = Counter()
    for _, info in chunks:
        positives.update(info["positives"])
    meta = {
        "dataset": dataset,
        "cardinalities": vocab.cardinalities,
        "rows": {s: rows[s] for s in SPLITS},
        "click_rate": {s: (positives[s] / rows[s] if rows[s] else None) for s in SPLITS},
        "build": identity,
        "preprocess": {
            **totals,
            "rare_values": vocab.rare_values,
            "dense": "log(max(x, 0) + 1), empty = 0",
            "categorical": "hex -> uint32 (empty is its own value), modulo max_ind_range if "
                           "set (or feature j's modulo per_feature_modulus[j]), then per-feature contiguous ids in ascending value order "
                           "(empty first); with frequency_threshold >= 2, id 0 is shared by "
                           "rarer values",
            "dictionaries": VOCAB_FILE,
        },
        "seconds": round(time.time() - started, 2),
    }
    if id_ranges is not None:  # else (work of an older version resumed) write_meta scans
        meta[ID_RANGE_KEY] = {s: id_ranges[s] for s in SPLITS}
    write_meta(stage, meta)
    shutil.rmtree(work, ignore_errors=True)
    _install(stage, out)
    _report(out, meta)
    return meta


def _report(out: Path, meta: dict) -> None:
    p = meta["preprocess"]
    skipped = {k: v for k, v in p["rows_skipped"].items() if v}
    log.info("%s: rows read %s = written %s + skipped %s %s; padded %s",
             out, f"{p['rows_read']:,}", f"{p['rows_written']:,}",
             f"{sum(skipped.values()):,}", skipped or "", f"{p['rows_padded']:,}")
    log.info("splits: %s; cardinalities sum %s; %.1f s", ", ".join(
        f"{s} {meta['rows'][s]:,}" for s in SPLIT_ORDER), f"{sum(meta['cardinalities']):,}",
        meta["seconds"])
