"""``preprocess``: a Criteo dataset from its raw folder to the processed format, in one call."""

from __future__ import annotations

from pathlib import Path

from cce_dlrm.data.criteo.inputs import (
    KAGGLE, TERABYTE, PreprocessConfigError, PreprocessSettings, kaggle_files, terabyte_files,
)
from cce_dlrm.data.criteo.pipeline import ChunkHook, build


def _number(value, name: str) -> float:
    """A float setting as given (int or float), else a configuration error naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PreprocessConfigError(f"{name} must be a number, got {value!r}")
    return float(value)


def preprocess(
    kind: str,
    raw_dir: Path | str,
    out_dir: Path | str,
    *,
    name: str | None = None,
    file: str = "train.txt",
    days: str | list[int] | None = None,
    mode: str = "strict",
    frequency_threshold: int = 0,
    max_ind_range: int = 0,
    negative_subsampling: float = 0.0,
    subsample_seed: int = 0,
    chunk_mb: float = 32.0,
    sync_mb: float = 1024.0,
    workers: int = 0,
    row_fraction: float = 1.0,
    per_feature_modulus: list[int] | None = None,
    progress: bool = True,
    on_chunk: ChunkHook | None = None,
) -> dict:
    """Preprocesses Criteo ``kind`` ("kaggle": ``raw_dir/file``; "terabyte": ``raw_dir/day_N``
    for ``days``, plain or .gz; all 24 days when None) into ``out_dir``; returns the written
    ``meta.json``. ``days`` is refused for Kaggle, whose one file has no day files.
    The settings are those of ``PreprocessSettings``, e.g. ``row_fraction=0.125`` keeps an
    eighth of all rows, ``per_feature_modulus=[1460, 583, ...]`` (26 moduli) reduces
    feature j's raw values modulo its own number.

    Example::

        preprocess("kaggle", "data/raw/criteo_kaggle", "data/processed/criteo_kaggle")
    """
    settings = PreprocessSettings(
        mode=mode, frequency_threshold=int(frequency_threshold), max_ind_range=int(max_ind_range),
        negative_subsampling=float(negative_subsampling), subsample_seed=int(subsample_seed),
        chunk_mb=float(chunk_mb), sync_mb=float(sync_mb), workers=int(workers),
        row_fraction=_number(row_fraction, "row_fraction"), per_feature_modulus=per_feature_modulus)
    if kind == KAGGLE:
        if days is not None:
            raise PreprocessConfigError(
                f"days ({days!r}) apply to Criteo Terabyte only: Kaggle's train.txt is one file "
                "(drop DAYS=... / dataset.preprocess.days, or use DATASET=criteo_terabyte)")
        files = kaggle_files(raw_dir, file)
    elif kind == TERABYTE:
        files = terabyte_files(raw_dir, "0-23" if days is None else days)
    else:
        raise PreprocessConfigError(f"kind must be {KAGGLE!r} or {TERABYTE!r}, not {kind!r}")
    return build(files, out_dir, name or f"criteo_{kind}", settings, progress, on_chunk)
