"""``qr``: quotient-remainder compositional embeddings (Shi et al., KDD 2020).

Two partitions: ``op(W_r[i % m], W_q[i // m])``, ``op`` in {mult (default), add, concat}:
``ceil(n/m) + m`` rows (of width ``d``, or ``d/2`` for concat). Every id gets its own pair of
rows, so distinct ids get distinct vectors ("complementary partitions"). The general form
uses ``k`` partitions by the mixed-radix digits of ``i``: radices ``m_1 .. m_{k-1}`` (all
``m``) and a last one ``ceil(n / m^(k-1))``; one table per digit.

Budget: ``m`` is the smallest radix whose tables fit ``P`` (so the largest table, the
quotient's, uses the budget). If two partitions cannot fit (``P < 2 sqrt(n) d``),
``when_too_small`` says what to do, and the choice is logged per feature:

* ``partitions``: use the fewest partitions that fit (three, four, ...);
* ``hash``: hash ids into the largest ``n'`` that two partitions of ``P`` can cover, then QR.

Init rule: for ``op: mult`` with ``s`` factors (slot ``j`` holds digit ``j``: the remainder
``i % m`` is slot 0, the quotient is the last slot) every factor but the last is uniform on
``[0.5, 1.5]`` (mean 1, std ``1/sqrt(12)``, second moment ``13/12``), as the reference
(facebookresearch/dlrm ``tricks/qr_embedding_bag.py``) starts its factors near 1 in scale
(its ``uniform(sqrt(1/n), 1)``, width 1, here centred on 1); the last factor, the quotient
table with the most rows, is centred uniform with std ``init_std / (13/12) ** ((s-1)/2)``.
The product then has mean 0 and coordinate std exactly ``init_std`` (the shared rule), and
the near-1 factors carry the full gradient to the quotient table: the effective step at
init (``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d = 16; 1 for a full
table) is ``(13/12) ** (s-1)`` plus a little, measured 1.09 with 2 partitions and 1.20 with 3
(it was 0.10 and 0.05 with every factor at std ``init_std ** (1/s)``). ``op: add`` keeps the
shared rule for sums (each slot ``init_std / sqrt(s)``, effective step about ``s``),
``op: concat`` the plain one (each part ``init_std``, step about 1); features that fit stay
full tables with std ``init_std``.

Example::

    emb = QREmbedding([FeatureSpec("cat_0", 10_000)], dim=16, max_table_params=4_000,
                      init_std=0.05, seed=0)     # m = 50: tables of 50 and 200 rows
    emb(kjt).shape                               # (B, 1, 16)
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import torch

from cce_dlrm.embeddings.base import (
    ConfigError,
    FeatureGroup,
    FeatureLayout,
    FeatureSpec,
    SubTable,
    TableMethod,
    feature_budget,
    fits_full,
)
from cce_dlrm.embeddings.hash_family import draw_hash_constants, universal_hash

log = logging.getLogger(__name__)

OPS = {"mult": "prod", "add": "sum", "concat": None}
# std of the near-1 factors of ``mult``: uniform on [0.5, 1.5], the reference's width 1
# (its uniform(sqrt(1/n), 1)) centred on 1
NEAR_ONE_STD = 1.0 / math.sqrt(12.0)


def mixed_radices(n: int, partitions: int, m: int) -> list[int]:
    """Radices ``[m] * (k-1) + [ceil(n / m^(k-1))]``: every id < n has a distinct digit tuple."""
    return [m] * (partitions - 1) + [math.ceil(n / m ** (partitions - 1))]


def fitting_radices(n: int, partitions: int, rows: int) -> list[int] | None:
    """The radices with the smallest ``m`` whose digit tables hold at most ``rows`` rows in all.

    The total row count falls with ``m`` up to about ``n^(1/k)``, so the search stops there.
    """
    for m in range(2, math.ceil(n ** (1 / partitions)) + 2):
        radices = mixed_radices(n, partitions, m)
        if sum(radices) <= rows:
            return radices
    return None


def largest_covered(partitions: int, rows: int) -> tuple[int, list[int]]:
    """The largest id range ``n'`` (and its radices) that ``partitions`` tables of ``rows`` cover."""
    best = (0, [])
    for m in range(1, rows // partitions + 1):
        last = rows - (partitions - 1) * m
        if last >= 1 and m ** (partitions - 1) * last > best[0]:
            best = (m ** (partitions - 1) * last, [m] * (partitions - 1) + [last])
    return best


def mult_init(table: SubTable, slots: int, init_std: float) -> SubTable:
    """The init of one sub-table of a feature composed by ``mult`` (see the module docstring).

    Every factor but the last (slot ``s-1``, the quotient) is uniform on ``[1 - 1/2, 1 + 1/2]``
    (mean 1, second moment ``1 + 1/12``); the last is centred uniform with std
    ``init_std / (1 + 1/12) ** ((s - 1) / 2)``, so the product has coordinate std ``init_std``.
    A feature that fits (one slot, a full table) keeps the shared rule.
    """
    if slots == 1:
        return table
    if table.slot < slots - 1:
        return replace(table, init_std=NEAR_ONE_STD, init_mean=1.0)
    return replace(table, init_std=init_std / (1.0 + NEAR_ONE_STD ** 2) ** ((slots - 1) / 2), init_mean=0.0)


class QREmbedding(TableMethod):
    """Quotient-remainder (complementary partition) embeddings; features that fit stay full."""

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None, *,
                 op: str = "mult", partitions: int = 2, when_too_small: str = "partitions"):
        if op not in OPS:
            raise ConfigError(f"qr: op must be one of {sorted(OPS)}, got {op!r}")
        if partitions < 2:
            raise ConfigError(f"qr: partitions must be at least 2, got {partitions}")
        if when_too_small not in ("partitions", "hash"):
            raise ConfigError(f"qr: when_too_small must be 'partitions' or 'hash', got {when_too_small!r}")
        if op == "concat" and (dim % partitions or (dim // partitions) % 4):
            raise ConfigError(f"qr: op=concat splits dim {dim} into {partitions} parts that must be "
                              "multiples of 4 wide (fbgemm's fused kernels)")
        self.op, self.partitions, self.when_too_small = op, int(partitions), when_too_small
        self.plans: dict[int, tuple[int, list[int]]] = {}  # feature -> (hashed range or 0, radices)
        super().__init__(features, dim, max_table_params, init_std, seed, device)
        if op == "mult":
            self.sub_tables = [mult_init(t, self.layouts[t.feature].slots, self.init_std)
                               for t in self.sub_tables]
            if device is None or torch.device(device).type != "meta":
                self.reset_parameters()
        buffer_device = "cpu" if device is None or torch.device(device).type == "meta" else device
        num = len(self.features)
        a, b = draw_hash_constants(seed, (num,))
        hashed = [self.plans.get(i, (0, []))[0] for i in range(num)]
        self.register_buffer("hash_a", a.to(buffer_device))
        self.register_buffer("hash_b", b.to(buffer_device))
        self.register_buffer("_hashed", torch.tensor(hashed, device=buffer_device), persistent=False)
        for g, group in enumerate(self.groups):
            digits = group.key[0] if op != "concat" else group.key[1]
            radices = [self.plans.get(f, (0, [1]))[1] for f in group.features]
            divisors = [[math.prod(r[:j]) for j in range(digits)] for r in radices]
            self.register_buffer(f"_div{g}", torch.tensor(divisors, device=buffer_device), persistent=False)
            self.register_buffer(f"_mod{g}", torch.tensor(radices, device=buffer_device), persistent=False)

    def _rows_budget(self, budget: int, partitions: int) -> int:
        # concat splits d over the partitions, so each table row holds d/k floats
        return budget * (partitions if self.op == "concat" else 1) // self.dim

    def _more_partitions(self, n: int) -> list[int]:
        """Partition counts to try after ``self.partitions``: concat needs d/k a multiple of 4."""
        if self.op == "concat":
            return [k for k in range(self.partitions + 1, self.dim // 4 + 1)
                    if self.dim % k == 0 and (self.dim // k) % 4 == 0]
        return list(range(self.partitions + 1, max(3, math.ceil(math.log2(n))) + 1))

    def _plan(self, index: int, feature: FeatureSpec) -> tuple[int, list[int]]:
        """(hashed range n' or 0, radices) for a compressed feature, logged when not the default."""
        n, budget = feature.num_ids, feature_budget(feature.num_ids, self.dim, self.max_table_params)
        radices = fitting_radices(n, self.partitions, self._rows_budget(budget, self.partitions))
        if radices is not None:
            return 0, radices
        if self.when_too_small == "partitions":
            for k in self._more_partitions(n):
                radices = fitting_radices(n, k, self._rows_budget(budget, k))
                if radices is not None:
                    log.warning("qr: %s (n=%d) does not fit %d partitions in P=%d; using %d "
                                "partitions %s", feature.name, n, self.partitions, budget, k, radices)
                    return 0, radices
        covered, radices = largest_covered(self.partitions, self._rows_budget(budget, self.partitions))
        if covered < 2:
            raise ConfigError(f"qr: max_table_params={self.max_table_params} is too small for "
                              f"{self.partitions} partitions of {feature.name}")
        log.warning("qr: %s (n=%d) does not fit %d partitions in P=%d; hashing its ids into "
                    "n'=%d first (radices %s)", feature.name, n, self.partitions, budget, covered, radices)
        return covered, radices

    def layout(self, index: int, feature: FeatureSpec) -> FeatureLayout:
        if fits_full(feature.num_ids, self.dim, self.max_table_params):
            return FeatureLayout(rows=((feature.num_ids,),))
        self.plans[index] = plan = self._plan(index, feature)
        radices = tuple(plan[1])
        if self.op == "concat":
            return FeatureLayout(rows=(radices,))
        return FeatureLayout(rows=tuple((r,) for r in radices), reducer=OPS[self.op])

    def indices(self, group: FeatureGroup, ids: torch.Tensor) -> torch.Tensor:
        """ids (Fg, B) -> digits (Fg, k, 1, B) (mult/add) or (Fg, 1, k, B) (concat)."""
        x = ids.to(torch.int64)
        if group.key == (1, 1, "sum"):  # the features that fit: full tables
            return x.view(x.shape[0], 1, 1, x.shape[1])
        g = self.groups.index(group)
        feats = self.group_features(group)
        hashed = self._hashed[feats].view(-1, 1)
        mixed = universal_hash(x, self.hash_a[feats].view(-1, 1), self.hash_b[feats].view(-1, 1),
                               hashed.clamp(min=1))
        x = torch.where(hashed > 0, mixed, x).unsqueeze(1)  # (Fg, 1, B)
        digits = (x // getattr(self, f"_div{g}").unsqueeze(-1)) % getattr(self, f"_mod{g}").unsqueeze(-1)
        if self.op == "concat":
            return digits.unsqueeze(1)
        return digits.unsqueeze(2)

    def aux_bytes(self) -> list[int]:
        """Hash constants only for features whose ids are hashed first; no per-id state."""
        return [16 if self.plans.get(i, (0,))[0] else 0 for i in range(len(self.features))]
