"""``tt``: TT-Rec, tensor-train embedding tables (Yin et al., MLSys 2021).

The ``n x d`` table is a tensor train of ``T`` cores (``cores``, default 3): ``n <= n_1...n_T``
and ``d = d_1...d_T`` (factors as equal as possible), core ``t`` of shape
``(n_t, r_{t-1}, d_t, r_t)`` with ``r_0 = r_T = 1`` and every inner rank ``r``. The vector of id
``i`` with mixed-radix digits ``(i_1, ..., i_T)`` is the contraction
``G_1[i_1] G_2[i_2] ... G_T[i_T]``, flattened to ``d``. ``r`` is the largest rank whose cores
fit ``P``: ``sum_t n_t r_{t-1} d_t r_t <= P``.

Features with the same rank are contracted together (one gather per core and one batched
matrix product per core for the whole group). Cores are plain parameters trained by the
dense optimizer: their rows are ``r_{t-1} d_t r_t`` floats and the contraction needs them
whole. Features that fit keep their full tables (one flat parameter).

Init rule: each core uniform with std ``s`` such that a composed coordinate, a sum of
``r^(T-1)`` products of ``T`` entries, has std ``init_std``: ``s^(2T) r^(T-1) =
init_std^2``. Each core gets the gradient times the product of the other (small) cores, so
the effective step at init (``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d =
16; 1 for a full table) is below 1, about 0.33 at P = 16,000.

Example::

    emb = TTEmbedding([FeatureSpec("cat_0", 100_000)], dim=16, max_table_params=16_000,
                      init_std=0.05, seed=0)   # n: 47 x 47 x 46, d: 2 x 2 x 4, rank 11
    emb(kjt).shape                             # (B, 1, 16)
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import (
    ConfigError,
    EmbeddingMethod,
    feature_budget,
    fill_uniform_shard,
    fits_full,
    lookup_flat_rows,
)


def balanced_factors(value: int, parts: int) -> list[int]:
    """``value`` as a product of ``parts`` factors as equal as possible (prime factors dealt
    largest first to the currently smallest factor)."""
    primes, rest, p = [], value, 2
    while rest > 1:
        while rest % p == 0:
            primes.append(p)
            rest //= p
        p += 1
    factors = [1] * parts
    for prime in sorted(primes, reverse=True):
        factors[factors.index(min(factors))] *= prime
    return sorted(factors)


def id_factors(n: int, parts: int) -> list[int]:
    """Radices ``n_1..n_T`` with product >= n: ``q`` each (``q`` the smallest with ``q^T >= n``),
    the last cut down to ``ceil(n / q^(T-1))``."""
    q = max(1, math.ceil(n ** (1 / parts)))
    while q**parts < n:
        q += 1
    return [q] * (parts - 1) + [math.ceil(n / q ** (parts - 1))]


def core_params(n_factors: list[int], d_factors: list[int], rank: int) -> int:
    ranks = [1] + [rank] * (len(n_factors) - 1) + [1]
    return sum(n * ranks[t] * d * ranks[t + 1] for t, (n, d) in enumerate(zip(n_factors, d_factors)))


class TTEmbedding(EmbeddingMethod):
    """TT-Rec cores of the largest rank that fits; features that fit stay full."""

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None, *, cores: int = 3):
        super().__init__(features, dim, max_table_params, init_std, seed)
        if cores < 2:
            raise ConfigError(f"tt: cores must be at least 2, got {cores}")
        self.cores = int(cores)
        self.d_factors = balanced_factors(dim, self.cores)
        self.full = [i for i, f in enumerate(self.features) if fits_full(f.num_ids, dim, max_table_params)]
        self.plans: dict[int, tuple[list[int], int]] = {}  # feature -> (n factors, rank)
        for i, f in enumerate(self.features):
            if i not in self.full:
                budget = feature_budget(f.num_ids, dim, max_table_params)
                self.plans[i] = self._plan(f.name, f.num_ids, budget)
        real = None if device is None else torch.device(device)
        buffer_device = "cpu" if real is None or real.type == "meta" else real
        # one group per rank: its features' cores stacked row-wise, one parameter per core
        self.groups: list[tuple[int, list[int]]] = []
        for rank in sorted({r for _, r in self.plans.values()}):
            self.groups.append((rank, [f for f, (_, r) in self.plans.items() if r == rank]))
        for g, (rank, feats) in enumerate(self.groups):
            ranks = [1] + [rank] * (self.cores - 1) + [1]
            for t in range(self.cores):
                rows = sum(self.plans[f][0][t] for f in feats)
                width = ranks[t] * self.d_factors[t] * ranks[t + 1]
                self.register_parameter(f"core{g}_{t}", nn.Parameter(torch.empty(rows, width, device=real)))
                offsets = [sum(self.plans[f][0][t] for f in feats[:j]) for j in range(len(feats))]
                self.register_buffer(f"_offsets{g}_{t}",
                                     torch.tensor(offsets, device=buffer_device).view(-1, 1), persistent=False)
            radices = [self.plans[f][0] for f in feats]
            divisors = [[math.prod(r[:t]) for t in range(self.cores)] for r in radices]
            self.register_buffer(f"_feats{g}", torch.tensor(feats, device=buffer_device), persistent=False)
            self.register_buffer(f"_div{g}", torch.tensor(divisors, device=buffer_device), persistent=False)
            self.register_buffer(f"_mod{g}", torch.tensor(radices, device=buffer_device), persistent=False)
        full_offsets = [sum(self.features[g].num_ids * dim for g in self.full[:i])
                        for i in range(len(self.full))]
        self.register_buffer("_full_idx", torch.tensor(self.full, dtype=torch.int64, device=buffer_device),
                             persistent=False)
        self.register_buffer("_full_offsets", torch.tensor(full_offsets, dtype=torch.int64,
                                                           device=buffer_device), persistent=False)
        self.register_buffer("_columns", torch.arange(dim, device=buffer_device), persistent=False)
        order = [f for _, feats in self.groups for f in feats] + self.full
        self.register_buffer("_inverse_order", torch.argsort(torch.tensor(order)).to(buffer_device),
                             persistent=False)
        full_size = sum(self.features[g].num_ids for g in self.full) * dim
        self.full_tables = nn.Parameter(torch.empty(full_size, device=real)) if full_size else None
        if real is None or real.type != "meta":
            self.reset_parameters()

    def _plan(self, name: str, n: int, budget: int) -> tuple[list[int], int]:
        n_factors = id_factors(n, self.cores)
        rank = 0
        while core_params(n_factors, self.d_factors, rank + 1) <= budget:
            rank += 1
        if rank == 0:
            raise ConfigError(f"tt: max_table_params={budget} cannot hold rank-1 cores for {name} "
                              f"(n={n}: {core_params(n_factors, self.d_factors, 1)} floats)")
        return n_factors, rank

    def reset_parameters(self) -> None:
        for g, (rank, _) in enumerate(self.groups):
            std = (self.init_std**2 / rank ** (self.cores - 1)) ** (1 / (2 * self.cores))
            for t in range(self.cores):
                core = getattr(self, f"core{g}_{t}")
                fill_uniform_shard(core.data, self.seed, f"tt.core{rank}_{t}", 0, 0, core.shape[1], std)
        if self.full_tables is not None:
            fill_uniform_shard(self.full_tables.data.view(-1, 1), self.seed, "tt.full", 0, 0, 1,
                               self.init_std)

    def _contract(self, g: int, ids: torch.Tensor) -> torch.Tensor:
        """ids (Fg, B) of group g -> vectors (Fg, B, d)."""
        rank, feats = self.groups[g]
        divisors, radices = getattr(self, f"_div{g}").unsqueeze(1), getattr(self, f"_mod{g}").unsqueeze(1)
        digits = (ids.unsqueeze(-1) // divisors) % radices  # (Fg, B, T) mixed-radix digits
        ranks = [1] + [rank] * (self.cores - 1) + [1]
        rows = len(feats) * ids.shape[1]
        out = None
        for t in range(self.cores):
            index = (digits[..., t] + getattr(self, f"_offsets{g}_{t}")).reshape(-1)
            core = getattr(self, f"core{g}_{t}").index_select(0, index)  # (rows, r_{t-1} d_t r_t)
            core = core.view(rows, ranks[t], self.d_factors[t] * ranks[t + 1])
            # out: (rows, d_1...d_{t-1}, r_{t-1}) times core: (rows, r_{t-1}, d_t r_t)
            out = core if out is None else torch.bmm(out, core)
            out = out.reshape(rows, -1, ranks[t + 1])
        return out.view(len(feats), ids.shape[1], self.dim)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """features: KJT (F keys, one id each) -> (B, F, d)."""
        ids = features.values().view(len(self.features), -1).to(torch.int64)
        parts = [self._contract(g, ids[getattr(self, f"_feats{g}")]) for g in range(len(self.groups))]
        if self.full:
            parts.append(lookup_flat_rows(self.full_tables, ids[self._full_idx], self._full_offsets,
                                          self._columns))  # (Ff, B, d)
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        return out.index_select(0, self._inverse_order).transpose(0, 1)

    def learned_params(self) -> list[int]:
        return [self.features[i].num_ids * self.dim if i in self.full
                else core_params(self.plans[i][0], self.d_factors, self.plans[i][1])
                for i in range(len(self.features))]

    def aux_bytes(self) -> list[int]:
        """No hashing and no per-id state: ids are split into digits on the fly."""
        return [0] * len(self.features)
