"""The cap at which a method's BCE curve meets the full-table baseline.

A curve is BCE (test BCE at the best validation, mean over seeds, or one seed's) against
the swept caps; x is log(cap). "Meets" means the BCE comes down to the baseline or below,
going from smaller to larger caps (compressed methods can beat the full table: the curve
may dip under the baseline and come back up, as in the paper's Figure 4a).

Rules (written into every table's notes, ``RULES``):

- **Interpolation** when the grid reaches the baseline at some swept cap above the
  smallest: the first swept cap at or below the baseline and the one before it, joined
  linearly in log(cap).
- **Fits**, for the paper's range: least-squares polynomials of degree 1 and 2 in log(cap)
  through the ``FIT_POINTS`` swept points nearest the crossing: nearest in log(cap) to the
  interpolated cap; the largest caps when the grid never reaches the baseline (extrapolation
  upwards); the smallest caps when the smallest cap already reaches it (downwards). A fit
  meets the baseline where it comes down through it (the root with negative slope; a
  parabola has at most one). Extrapolated crossings must lie beyond the grid on the side
  being extrapolated, at most ``EXTRAPOLATION_LIMIT`` (10) times beyond the swept caps (a
  curve that is nearly flat puts its fitted crossing anywhere, up to absurd factors), and
  every crossing below the largest full table (at or above it the method keeps every table
  full: no compression).
- Without interpolation, the point estimate is the **conservative** fit (the larger cap).
  Where neither fit meets the baseline the status is ``not reached`` and there is no cap.
  Where the smallest swept cap already reaches the baseline and no fit places the crossing
  lower, the cap is only bounded: at most the smallest swept cap (``below grid``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

FIT_POINTS = 4
DEGREES = (1, 2)
#: how far beyond the swept caps a fitted crossing may lie (a factor in cap)
EXTRAPOLATION_LIMIT = 10.0

RULES = (
    f"The cap where a method meets the baseline: linear interpolation of BCE against log(cap) between the "
    f"two swept caps where the curve first comes down to the baseline; otherwise extrapolation. The range "
    f"comes from degree-1 and degree-2 least-squares fits in log(cap) through the {FIT_POINTS} swept points "
    f"nearest the crossing (nearest the interpolated cap; the largest caps when extrapolating upwards; the "
    f"smallest when the smallest cap already reaches the baseline). A fit counts where it comes down through "
    f"the baseline, beyond the grid when extrapolating (at most {EXTRAPOLATION_LIMIT:g}x beyond the swept caps), and "
    f"below the largest full table. Extrapolated point "
    f"estimates take the conservative fit (the larger cap). 'not reached': neither fit meets the baseline."
)


@dataclass
class Crossing:
    """Where a curve meets the baseline.

    ``status``: ``interpolated``, ``extrapolated``, ``below grid`` (``cap`` is an upper
    bound: the smallest swept cap), ``not reached`` (``cap`` is None) or ``no data``.
    ``fits`` maps degree -> the cap where that fit meets the baseline (None: it does not);
    ``fit_caps`` are the swept caps the fits used.
    """

    status: str
    cap: float | None = None
    fits: dict[int, float | None] = field(default_factory=dict)
    fit_caps: list[float] = field(default_factory=list)

    @property
    def is_bound(self) -> bool:
        return self.status == "below grid"

    def fit_range(self) -> tuple[float, float] | None:
        caps = [c for c in self.fits.values() if c is not None]
        return (min(caps), max(caps)) if caps else None


def fit_crossing(xs: Sequence[float], ys: Sequence[float], baseline: float, degree: int) -> float | None:
    """x where the least-squares polynomial of ``degree`` comes down through ``baseline``.

    >>> round(fit_crossing([0, 1, 2], [3.0, 2.0, 1.0], 1.5, 1), 9)
    1.5
    >>> fit_crossing([0, 1, 2], [1.0, 0.0, 1.0], -1.0, 2) is None   # a parabola above it
    True
    """
    if len(xs) < degree + 1:
        return None
    poly = np.polynomial.Polynomial.fit(np.asarray(xs, float), np.asarray(ys, float), degree)
    # in the fit's scaled window the coefficients are comparable: a leading one at rounding
    # level (points on a line fitted with degree 2) would put a spurious root anywhere
    coef = (poly - baseline).coef
    while len(coef) > 1 and abs(coef[-1]) <= 1e-9 * np.abs(coef).max():
        coef = coef[:-1]
    shifted = np.polynomial.Polynomial(coef, domain=poly.domain, window=poly.window)
    slope = poly.deriv()
    found = [r.real for r in shifted.roots() if abs(r.imag) < 1e-9 and slope(r.real) < 0]
    return float(min(found)) if found else None


def _nearest(xs: Sequence[float], x0: float, k: int) -> list[int]:
    order = sorted(range(len(xs)), key=lambda i: (abs(xs[i] - x0), xs[i]))
    return sorted(order[:k])


def find_crossing(caps: Sequence[float], bce: Sequence[float], baseline: float, max_cap: float | None = None,
                  fit_points: int = FIT_POINTS) -> Crossing:
    """The cap at which the curve (``caps``, ``bce``) meets ``baseline``; see the module rules.

    >>> c = find_crossing([1e3, 1e4, 1e5], [0.47, 0.45, 0.44], 0.46)
    >>> c.status, round(c.cap)
    ('interpolated', 3162)
    """
    points = sorted((float(c), float(b)) for c, b in zip(caps, bce) if b is not None and not math.isnan(b))
    if not points:
        return Crossing("no data")
    xs = [math.log(c) for c, _ in points]
    ys = [b for _, b in points]
    reach = math.log(EXTRAPOLATION_LIMIT)
    limit = min(math.log(max_cap) if max_cap else math.inf, xs[-1] + reach)
    floor = xs[0] - reach
    first = next((i for i, y in enumerate(ys) if y <= baseline), None)

    if first is not None and first > 0:  # the grid brackets the crossing
        x0, x1, y0, y1 = xs[first - 1], xs[first], ys[first - 1], ys[first]
        x_cross = x0 + (y0 - baseline) / (y0 - y1) * (x1 - x0)
        chosen = _nearest(xs, x_cross, fit_points)
        fits = _fits(xs, ys, chosen, baseline, lambda x: floor < x < limit)
        return Crossing("interpolated", math.exp(x_cross), fits, [points[i][0] for i in chosen])

    if first is None:  # never reached inside the grid: extrapolate upwards
        chosen = list(range(max(0, len(xs) - fit_points), len(xs)))
        fits = _fits(xs, ys, chosen, baseline, lambda x: xs[-1] < x < limit)
    else:  # reached already at the smallest cap: extrapolate downwards
        chosen = list(range(min(fit_points, len(xs))))
        fits = _fits(xs, ys, chosen, baseline, lambda x: floor < x < min(xs[0], limit))
    found = [c for c in fits.values() if c is not None]
    fit_caps = [points[i][0] for i in chosen]
    if found:
        return Crossing("extrapolated", max(found), fits, fit_caps)
    if first is None:
        return Crossing("not reached", None, fits, fit_caps)
    return Crossing("below grid", points[0][0], fits, fit_caps)


def _fits(xs, ys, chosen, baseline, allowed) -> dict[int, float | None]:
    out: dict[int, float | None] = {}
    for degree in DEGREES:
        x = fit_crossing([xs[i] for i in chosen], [ys[i] for i in chosen], baseline, degree)
        out[degree] = math.exp(x) if x is not None and allowed(x) else None
    return out
