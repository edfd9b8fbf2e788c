"""Summary statistics of categorical data: how long the tail is, how heavy the head is.

Used to set the synthetic data beside real Criteo rows (``scripts/data_stats.py``). For one
categorical column of ``N`` rows with ``D`` distinct values:

* ``once``: the share of the ``D`` distinct values that occur exactly once (the long tail
  a full table can only memorise);
* ``head``: the share of the ``N`` rows covered by the most frequent ``ceil(D / 100)``
  values (the top 1% of values, at least one);
* over all columns, ``once`` pools the distinct values of every column (each column's
  values are its own), ``head`` is the mean of the per-column shares; ``click rate`` is the
  mean label.

Example::

    column_stats(np.array([5, 5, 5, 7, 9]))   # ColumnStats(rows=5, distinct=3, once=2, head_rows=3)
    # once share 2/3, head share 3/5 (top 1% of 3 values: the single most frequent one)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

LABEL_COLUMN = 0
FIRST_SPARSE_COLUMN = 14  # label, 13 integer features, then 26 categorical ones
NUM_SPARSE = 26


@dataclass(frozen=True)
class ColumnStats:
    """Counts of one categorical column (shares are derived properties)."""

    rows: int
    distinct: int
    once: int
    head_rows: int

    @property
    def once_share(self) -> float:
        return self.once / self.distinct if self.distinct else 0.0

    @property
    def head_share(self) -> float:
        return self.head_rows / self.rows if self.rows else 0.0


def column_stats(values: np.ndarray) -> ColumnStats:
    """Stats of one column of hashable values (ints, or strings for raw Criteo fields)."""
    _, counts = np.unique(np.asarray(values), return_counts=True)
    top = max(1, math.ceil(counts.size / 100)) if counts.size else 0
    head = int(np.sort(counts)[::-1][:top].sum())
    return ColumnStats(rows=int(np.asarray(values).shape[0]), distinct=int(counts.size),
                       once=int((counts == 1).sum()), head_rows=head)


@dataclass(frozen=True)
class TableStats:
    """Stats of every categorical column of a sample and its click rate."""

    columns: list[ColumnStats]
    click_rate: float

    @property
    def rows(self) -> int:
        return self.columns[0].rows if self.columns else 0

    @property
    def once_share(self) -> float:
        distinct = sum(c.distinct for c in self.columns)
        return sum(c.once for c in self.columns) / distinct if distinct else 0.0

    @property
    def head_share(self) -> float:
        return float(np.mean([c.head_share for c in self.columns])) if self.columns else 0.0


def table_stats(sparse: np.ndarray, labels: np.ndarray) -> TableStats:
    """sparse (N, F) ids or strings, labels (N,) 0/1 -> per-column stats and the click rate."""
    sparse = np.asarray(sparse)
    return TableStats([column_stats(sparse[:, f]) for f in range(sparse.shape[1])],
                      float(np.mean(labels)) if len(labels) else 0.0)


def read_criteo_text(path: Path | str, max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw Criteo Kaggle rows (``label \\t I1..I13 \\t C1..C26``) -> (sparse (N, 26) str, labels (N,)).

    An empty categorical field is its own value (as the preprocessing treats it); rows whose
    trailing empty fields were stripped are padded with empty fields.
    """
    sparse, labels = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if max_rows is not None and len(labels) >= max_rows:
                break
            fields = line.rstrip("\r\n").split("\t")
            fields += [""] * (FIRST_SPARSE_COLUMN + NUM_SPARSE - len(fields))
            labels.append(int(fields[LABEL_COLUMN]))
            sparse.append(fields[FIRST_SPARSE_COLUMN : FIRST_SPARSE_COLUMN + NUM_SPARSE])
    return np.array(sparse, dtype=object).astype(str), np.array(labels, dtype=np.int64)


def markdown_table(samples: Sequence[tuple[str, TableStats]]) -> str:
    """One row per feature plus an overall row; for each sample its once and head shares."""
    head = ["feature"] + [f"{name}: {kind}" for name, _ in samples for kind in ("once", "top 1%")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    features = len(samples[0][1].columns)
    for f in range(features):
        cells = [f"C{f + 1}"]
        for _, stats in samples:
            col = stats.columns[f]
            cells += [f"{col.once_share:.3f} ({col.distinct:,})", f"{col.head_share:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["all"]
    for _, stats in samples:
        cells += [f"{stats.once_share:.3f} ({sum(c.distinct for c in stats.columns):,})",
                  f"{stats.head_share:.3f}"]
    lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| sample | rows | click rate |")
    lines.append("|---|---|---|")
    for name, stats in samples:
        lines.append(f"| {name} | {stats.rows:,} | {stats.click_rate:.3f} |")
    return "\n".join(lines) + "\n"
