"""Is CCE's lead (or lag) over the next best method larger than the seeds' spread?

Rule (written into every table's notes, ``RULE``): a difference counts as **beyond noise**
when the two methods' per-seed ranges do not overlap: every seed of one is better than every
seed of the other (min-max ranges apart). Anything else is **within noise**. With fewer than
two seeds on either side there is no spread to compare against: **not judged**. For BCE,
lower is better; for compression factors, higher is better, a seed that does not reach the
baseline counts as a factor of at most 1 and a seed reaching it already at the smallest cap
as at least its factor there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

RULE = (
    "Noise: CCE against the next best method (lowest mean test BCE at a cap; largest factor for the "
    "compression) is 'beyond noise' when their per-seed min-max ranges do not overlap (every seed of one "
    "better than every seed of the other), 'within noise' otherwise, and 'not judged' with fewer than 2 "
    "seeds on either side. The gap and the sum of the two standard deviations are shown for reference."
)

BEYOND_BETTER = "CCE better, beyond noise"
BEYOND_WORSE = "CCE worse, beyond noise"
WITHIN = "within noise"
NOT_JUDGED = "not judged (fewer than 2 seeds)"


def compare_intervals(cce: Sequence[tuple[float, float]], other: Sequence[tuple[float, float]],
                      higher_is_better: bool) -> str:
    """Verdict from per-seed intervals ``(low, high)`` (a measured value is ``(v, v)``).

    >>> compare_intervals([(0.44, 0.44), (0.441, 0.441)], [(0.45, 0.45), (0.452, 0.452)], False)
    'CCE better, beyond noise'
    >>> compare_intervals([(0.44, 0.44), (0.451, 0.451)], [(0.45, 0.45), (0.452, 0.452)], False)
    'within noise'
    """
    if len(cce) < 2 or len(other) < 2:
        return NOT_JUDGED
    cce_low, cce_high = min(lo for lo, _ in cce), max(hi for _, hi in cce)
    oth_low, oth_high = min(lo for lo, _ in other), max(hi for _, hi in other)
    if higher_is_better:
        ahead, behind = cce_low > oth_high, cce_high < oth_low
    else:
        ahead, behind = cce_high < oth_low, cce_low > oth_high
    if ahead:
        return BEYOND_BETTER
    if behind:
        return BEYOND_WORSE
    return WITHIN


def factor_interval(status: str, factor: float | None) -> tuple[float, float] | None:
    """A seed's compression factor as an interval, for ``compare_intervals``."""
    if status in ("interpolated", "extrapolated") and factor is not None:
        return (factor, factor)
    if status == "below grid" and factor is not None:
        return (factor, math.inf)
    if status == "not reached":
        return (0.0, 1.0)
    return None
