"""Which rows go to which split: day arithmetic of the DLRM reference, by line number.

Kaggle's ``train.txt`` is cut into 7 contiguous "days" of equal size (the first
``N % 7`` days get one row more); days 0..5 are training, day 6 is halved: its first half
is the test split, its second half validation (``np.array_split`` order, so the first half
gets the odd row). Terabyte: days 0..22 are training, day 23 is halved the same way.

Rows are assigned by their line number in the file, so a row skipped as malformed never
moves another row to a different split.

Example: ``kaggle_segments(45_840_617)`` gives train 39,291,958 rows, test 3,274,330 and
val 3,274,329.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KAGGLE_DAYS = 7
SPLIT_ORDER = ("train", "test", "val")  # the order in which splits appear in a file


@dataclass(frozen=True)
class Segment:
    """Lines [start, stop) of one file belong to ``split`` (stop None: to the end)."""

    split: str
    start: int
    stop: int | None


def day_sizes(total: int, days: int = KAGGLE_DAYS) -> list[int]:
    """Rows per day when ``total`` rows are cut into ``days`` contiguous, equal days."""
    q, r = divmod(total, days)
    return [q + (1 if d < r else 0) for d in range(days)]


def halves(n: int) -> tuple[int, int]:
    """(test, val) sizes of an evaluation day: first half test, gets the odd row."""
    return (n + 1) // 2, n // 2


def eval_day_segments(lines: int, start: int = 0) -> list[Segment]:
    test, val = halves(lines)
    return [Segment("test", start, start + test), Segment("val", start + test, start + test + val)]


def kaggle_segments(lines: int) -> list[Segment]:
    """Segments of Kaggle's single ``train.txt`` of ``lines`` rows."""
    sizes = day_sizes(lines)
    train = sum(sizes[:-1])
    return [Segment("train", 0, train), *eval_day_segments(sizes[-1], train)]


def terabyte_segments(is_eval_day: bool, lines: int | None = None) -> list[Segment]:
    """Segments of one Terabyte day file: all training, or (the last day) test then val."""
    if not is_eval_day:
        return [Segment("train", 0, None)]
    if lines is None:
        raise ValueError("the evaluation day's line count is needed to halve it")
    return eval_day_segments(lines)


def split_of_lines(segments: list[Segment], lines: np.ndarray) -> np.ndarray:
    """(n,) sorted line numbers -> (n,) int8 index into SPLIT_ORDER (-1 outside every segment)."""
    out = np.full(len(lines), -1, np.int8)
    for seg in segments:
        lo = np.searchsorted(lines, seg.start, side="left")
        hi = len(lines) if seg.stop is None else np.searchsorted(lines, seg.stop, side="left")
        out[lo:hi] = SPLIT_ORDER.index(seg.split)
    return out


def split_rows(segments: list[Segment]) -> dict[str, int]:
    """Rows per split of a file whose segments all have a known end."""
    rows = dict.fromkeys(SPLIT_ORDER, 0)
    for seg in segments:
        rows[seg.split] += seg.stop - seg.start
    return rows
