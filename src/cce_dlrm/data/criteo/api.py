"""``preprocess``: a Criteo dataset from its raw folder to the processed format, in one call."""

from __future__ import annotations

from pathlib import Path

from cce_dlrm.data.criteo.inputs import (
    KAGGLE, TERABYTE, PreprocessConfigError, PreprocessSettings, kaggle_files, terabyte_files,
)
from cce_dlrm.data.criteo.pipeline import ChunkHook, build


def preprocess(
    kind: str,
    raw_dir: Path | str,
    out_dir: Path | str,
    *,
    name: str | None = None,
    file: str = "train.txt",
    days: str | list[int] = "0-23",
    mode: str = "strict",
    frequency_threshold: int = 0,
    max_ind_range: int = 0,
    negative_subsampling: float = 0.0,
    subsample_seed: int = 0,
    chunk_mb: float = 32.0,
    sync_mb: float = 1024.0,
    workers: int = 0,
    progress: bool = True,
    on_chunk: ChunkHook | None = None,
) -> dict:
    """Preprocesses Criteo ``kind`` ("kaggle": ``raw_dir/file``; "terabyte": ``raw_dir/day_N``
    for ``days``, plain or .gz) into ``out_dir``; returns the written ``meta.json``.

    Example::

        preprocess("kaggle", "data/raw/criteo_kaggle", "data/processed/criteo_kaggle")
    """
    settings = PreprocessSettings(mode, int(frequency_threshold), int(max_ind_range),
                                  float(negative_subsampling), int(subsample_seed),
                                  float(chunk_mb), float(sync_mb), int(workers))
    if kind == KAGGLE:
        files = kaggle_files(raw_dir, file)
    elif kind == TERABYTE:
        files = terabyte_files(raw_dir, days)
    else:
        raise PreprocessConfigError(f"kind must be {KAGGLE!r} or {TERABYTE!r}, not {kind!r}")
    return build(files, out_dir, name or f"criteo_{kind}", settings, progress, on_chunk)
