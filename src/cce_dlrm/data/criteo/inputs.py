"""What to preprocess: the raw files of a Criteo dataset and the settings of a run."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from cce_dlrm.data.criteo.layout import Segment, kaggle_segments, terabyte_segments
from cce_dlrm.data.criteo.schema import NUM_CATEGORICAL

KAGGLE = "kaggle"
TERABYTE = "terabyte"
TERABYTE_DAYS = 24

# Output settings added after datasets were first built, with the value that reproduces the
# outputs of before: left out of meta.json at that value, so those datasets stay up to date.
LATER_SETTINGS = {"row_fraction": 1.0, "per_feature_modulus": None}


class PreprocessConfigError(ValueError):
    """A setting or a path of the preprocessing run is wrong (or the raw data is missing)."""


@dataclass(frozen=True)
class RawFile:
    """One raw file and its role in the split layout."""

    path: Path
    layout: str  # "kaggle" (days by line count), "train_day" or "eval_day" (Terabyte)
    # what identifies the file to row sampling: the day number of a Terabyte day file (so
    # day_23 keeps the same rows whichever other days are listed), 0 for Kaggle's one file
    key: int = 0

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def needs_line_count(self) -> bool:
        return self.layout in ("kaggle", "eval_day")

    def segments(self, lines: int | None) -> list[Segment]:
        if self.layout == "kaggle":
            return kaggle_segments(lines)
        return terabyte_segments(self.layout == "eval_day", lines)


@dataclass(frozen=True)
class PreprocessSettings:
    """Settings of a run. All but ``chunk_mb``, ``sync_mb`` and ``workers`` change the output."""

    mode: str = "strict"  # strict: stop at the first malformed row; lenient: skip and count
    frequency_threshold: int = 0  # >= 2: values seen fewer times share id 0
    max_ind_range: int = 0  # > 0: raw categorical value modulo this before the mapping
    negative_subsampling: float = 0.0  # fraction of training negatives dropped
    subsample_seed: int = 0  # seeds both negative_subsampling and row_fraction
    chunk_mb: float = 32.0  # MB of raw text per chunk: what bounds memory
    # MB of input between fsyncs that make finished chunks durable (0: after every chunk);
    # an interrupted run redoes at most this much. fsync waits for the disk.
    sync_mb: float = 1024.0
    workers: int = 0  # worker processes (0: one per CPU; 1: all in this process)
    # fraction of ALL rows kept (every split), each row kept or not by its own uniform
    # number from (subsample_seed, file, line): 1.0 keeps everything
    row_fraction: float = 1.0
    # 26 moduli, or None: categorical feature j's raw value modulo per_feature_modulus[j]
    # before the id mapping (empty stays its own value); excludes max_ind_range
    per_feature_modulus: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.mode not in ("strict", "lenient"):
            raise PreprocessConfigError(f"mode must be 'strict' or 'lenient', not {self.mode!r}")
        if not 0.0 <= self.negative_subsampling < 1.0:
            raise PreprocessConfigError(
                f"negative_subsampling is the fraction of training negatives dropped, in [0, 1); "
                f"got {self.negative_subsampling}")
        if self.frequency_threshold < 0 or self.max_ind_range < 0:
            raise PreprocessConfigError("frequency_threshold and max_ind_range must be >= 0")
        if self.max_ind_range > 2**32:
            raise PreprocessConfigError("max_ind_range above 2^32 has no effect on 32-bit values")
        if self.chunk_mb <= 0 or self.sync_mb < 0 or self.workers < 0:
            raise PreprocessConfigError("chunk_mb must be positive, sync_mb and workers >= 0")
        if isinstance(self.row_fraction, bool) or not 0.0 < self.row_fraction <= 1.0:
            raise PreprocessConfigError(
                f"row_fraction is the fraction of all rows kept, in (0, 1]; got {self.row_fraction!r}")
        moduli = self.per_feature_modulus
        if moduli is not None:
            if (not isinstance(moduli, (list, tuple)) or len(moduli) != NUM_CATEGORICAL
                    or any(isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 2**32
                           for m in moduli)):
                raise PreprocessConfigError(
                    f"per_feature_modulus must be null or {NUM_CATEGORICAL} integers in "
                    f"1..2^32 (one per categorical feature C1..C26); got {moduli!r}")
            if not isinstance(moduli, tuple):  # frozen settings: hashable, compared by value
                object.__setattr__(self, "per_feature_modulus", tuple(moduli))
            if self.max_ind_range:
                raise PreprocessConfigError(
                    "set max_ind_range or per_feature_modulus, not both (max_ind_range: 0)")

    @property
    def strict(self) -> bool:
        return self.mode == "strict"

    @property
    def chunk_bytes(self) -> int:
        return max(1024, int(self.chunk_mb * (1 << 20)))

    @property
    def sync_bytes(self) -> int:
        return int(self.sync_mb * (1 << 20))

    def output_settings(self) -> dict:
        """The settings recorded in meta.json: changing one makes existing outputs stale."""
        out = asdict(self)
        del out["chunk_mb"], out["sync_mb"], out["workers"]
        if out["per_feature_modulus"] is not None:  # as JSON gives it back: a list
            out["per_feature_modulus"] = list(out["per_feature_modulus"])
        for key, value in LATER_SETTINGS.items():
            if out[key] == value:
                del out[key]
        return out


def find_raw(raw_dir: Path, name: str, hint: str) -> Path:
    """``raw_dir/name`` or ``raw_dir/name.gz``, else an error that says how to get it."""
    for candidate in (raw_dir / name, raw_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise PreprocessConfigError(f"{raw_dir / name} not found (nor {name}.gz). {hint}")


def parse_days(days) -> list[int]:
    """Day numbers from what a command line or a config gives, as a sorted unique list.

    Accepts ``"0-23"``, ``"0,23"``, ``"0-3,23"``, ``7``, ``[0, 1, 23]`` or ``["0-3", 23]``
    (Hydra reads an unquoted ``0-3`` list item as a string), e.g.
    ``parse_days("0-3,23") == [0, 1, 2, 3, 23]``.
    """
    items = [days] if isinstance(days, (int, str)) else list(days)
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise PreprocessConfigError(f"days: cannot read {days!r} (use e.g. 0-23 or 0,1,23)")
        if isinstance(item, int):
            out.append(item)
            continue
        for part in item.replace(" ", "").split(","):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m or int(m[2] or m[1]) < int(m[1]):
                raise PreprocessConfigError(
                    f"days: cannot read {days!r} (use e.g. 0-23 or 0,1,23)")
            out += range(int(m[1]), int(m[2] or m[1]) + 1)
    days = sorted(set(out))
    if not days or days[0] < 0 or days[-1] >= TERABYTE_DAYS:
        raise PreprocessConfigError(f"days must be within 0..{TERABYTE_DAYS - 1}, got {days}")
    return days


def kaggle_files(raw_dir: Path | str, file: str = "train.txt") -> list[RawFile]:
    hint = ("Run `make download-criteo DATASET=criteo_kaggle`, or download the Kaggle Display "
            "Advertising Challenge archive from https://ailab.criteo.com/ressources/ (accept "
            "its terms), unpack it and put train.txt there.")
    return [RawFile(find_raw(Path(raw_dir), file, hint), "kaggle")]


def terabyte_files(raw_dir: Path | str, days="0-23") -> list[RawFile]:
    """Day files in order; the last listed day is the evaluation day (test, then val)."""
    days = parse_days(days)
    if len(days) < 2:
        raise PreprocessConfigError(
            "Terabyte needs at least one training day and the evaluation day")
    hint = "Run `make download-criteo DATASET=criteo_terabyte DAYS=...` (day_N or day_N.gz)."
    return [RawFile(find_raw(Path(raw_dir), f"day_{d}", hint),
                    "eval_day" if d == days[-1] else "train_day", key=d) for d in days]
