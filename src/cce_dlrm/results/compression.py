"""Compression factors as Table 1 of the CCE paper counts them.

The factor counts **all tables**: (sum over features of the full tables' parameters) /
(sum over features of the method's learned parameters), where a feature whose full table
fits under the cap stays full. The paper counts rows; for table methods the ratio is the
same, and parameters also cover DHE and TT, whose "tables" are networks or cores.

The paper's own example (vocabularies 10, 100, 10**6 at d = 16, cap 8,000 parameters):

>>> full = full_params([10, 100, 10**6], 16)
>>> capped = capped_params(full, 8_000)
>>> capped
[160, 1600, 8000]
>>> round(factor_all_tables(full, capped)), round(factor_largest_table(full, capped))
(1640, 2000)

which is (10 + 100 + 10**6) / (10 + 100 + 500) rows, about 1,640x over all tables, and
2,000x counting the largest table only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def full_params(vocab_sizes: Sequence[int], dim: int) -> list[int]:
    """Parameters of each feature's full table: ``n * d`` per feature."""
    return [int(n) * int(dim) for n in vocab_sizes]


def capped_params(full: Sequence[int], cap: float) -> list[float]:
    """A table method's learned parameters per feature at ``cap``: ``min(n * d, cap)``.

    ``full`` holds ``n * d`` per feature (``full_params``); a feature that fits stays full.
    """
    return [min(p, cap) for p in full]


def factor_all_tables(full: Sequence[float], learned: Sequence[float]) -> float:
    """sum(full) / sum(learned): the paper's Table 1 measure."""
    _check_lengths(full, learned)
    return sum(full) / sum(learned)


def factor_largest_table(full: Sequence[float], learned: Sequence[float]) -> float:
    """The largest full table / the method's parameters for that same feature."""
    _check_lengths(full, learned)
    largest = max(range(len(full)), key=lambda i: full[i])
    return full[largest] / learned[largest]


def _check_lengths(full: Sequence[float], learned: Sequence[float]) -> None:
    if len(full) != len(learned) or not full:
        raise ValueError(f"per-feature counts differ in length: {len(full)} full tables, {len(learned)} learned")


def learned_at_cap(cap: float, full: Sequence[float], measured: Mapping[float, Sequence[float]]) -> list[float]:
    """A method's learned parameters per feature at any cap, from its actual runs.

    ``measured`` maps each swept cap to the method's ``learned_params_per_feature`` there
    (the runs' own counts: DHE's MLPs, TT's cores, rounding of rows). Per feature, the
    ratio of the measured count to the table formula ``min(n * d, cap)`` is interpolated
    linearly in log(cap) between the swept caps and held at the nearest swept cap beyond
    the grid; the result is that ratio times the formula at ``cap``. At a swept cap this is
    exactly the measured count; for a table method whose counts follow the formula it is
    the formula. With nothing measured it is the formula.

    >>> learned_at_cap(4_000, [160, 16_000_000], {2_000: [160, 2_400], 8_000: [160, 9_600]})
    [160.0, 4800.0]
    """
    formula = capped_params(full, cap)
    if not measured:
        return [float(v) for v in formula]
    caps = sorted(measured)
    out = []
    for f, base in enumerate(formula):
        ratios = [measured[c][f] / capped_params(full, c)[f] for c in caps]
        out.append(float(base * _interp_log(cap, caps, ratios)))
    return out


def _interp_log(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """Piecewise-linear interpolation in log(x), constant beyond the ends."""
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    raise AssertionError("unreachable: xs is sorted")
