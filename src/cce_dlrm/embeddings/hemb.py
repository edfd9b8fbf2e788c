"""``hemb``: hash embeddings (Svenstrup, Hansen & Winther, NeurIPS 2017).

The vector of id ``i`` is ``sum_j p_j(i) * T[h_j(i)]`` over ``hashes`` hash functions: ``T`` is
one shared pool of ``rows x d`` (a torchrec table, read ``hashes`` times per id in the same
fused lookup), and the importance weights ``p(i)`` (``hashes`` floats) are row
``h_p(i)`` of a second hashed table of ``K`` rows. Learned: ``rows*d + K*hashes <= P``, with
``K = floor(weight_share * P / hashes)`` and ``rows = floor((P - K*hashes) / d)``.

Importance weights are a plain parameter (their rows are ``hashes`` floats wide, below the
4-float minimum of fbgemm's fused kernels), trained by the dense optimizer.

Init rule: importance weights start at 1 and the pool uniform with std ``init_std /
sqrt(hashes)``, so the weighted sum of ``hashes`` rows starts with coordinate std
``init_std``. Every read row gets its weight times the gradient, so the effective step at
init (``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d = 16; 1 for a full
table): about ``hashes`` (2.0 with the default 2).

Example::

    emb = HashEmbedding([FeatureSpec("cat_0", 100_000)], dim=16, max_table_params=16_000,
                        init_std=0.05, seed=0)   # K = 1,000 weight rows, a pool of 875 rows
    emb(kjt).shape                               # (B, 1, 16)
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from cce_dlrm.embeddings.base import (
    ConfigError,
    FeatureLayout,
    FeatureSpec,
    TableMethod,
    feature_budget,
    fits_full,
)
from cce_dlrm.embeddings.hash_family import draw_hash_constants, universal_hash


class HashEmbedding(TableMethod):
    """Hash embeddings with a shared pool per feature; features that fit stay full."""

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None, *,
                 hashes: int = 2, weight_share: float = 0.125):
        if hashes < 1:
            raise ConfigError(f"hemb: hashes must be at least 1, got {hashes}")
        if not 0.0 < weight_share < 1.0:
            raise ConfigError(f"hemb: weight_share is a fraction of P in (0, 1), got {weight_share}")
        self.hashes, self.weight_share = int(hashes), float(weight_share)
        self.weight_rows: dict[int, int] = {}
        # the collection is rebuilt below (one pool read `hashes` times): skip allocating it twice
        super().__init__(features, dim, max_table_params, init_std, seed, device="meta")
        self.compressed = sorted(self.weight_rows)
        pool_std = init_std / math.sqrt(self.hashes)
        self.sub_tables = [dataclasses.replace(t, init_std=pool_std) if t.feature in self.weight_rows else t
                           for t in self.sub_tables]
        self.lookups = {t.feature: [f"{t.name}__h{j}" for j in range(self.hashes)]
                        if t.feature in self.weight_rows else [t.name] for t in self.sub_tables}
        real = None if device is None else torch.device(device)
        self.ebc = EmbeddingBagCollection(
            tables=[EmbeddingBagConfig(name=t.name, embedding_dim=t.dim, num_embeddings=t.rows,
                                       feature_names=self.lookups[t.feature], pooling=PoolingType.SUM)
                    for t in self.sub_tables],
            device=real)
        self.full = [i for i in range(len(self.features)) if i not in self.weight_rows]
        # lookup keys in the order forward expects: compressed features (h_0..h_{H-1}), then full
        self.sub_keys = [k for f in self.compressed for k in self.lookups[f]] + \
                        [k for f in self.full for k in self.lookups[f]]
        self._column_perm = {}
        buffer_device = "cpu" if real is None or real.type == "meta" else real
        order = torch.tensor(self.compressed + self.full)
        self.register_buffer("_inverse_order", torch.argsort(order).to(buffer_device), persistent=False)
        a, b = draw_hash_constants(seed, (len(self.features), self.hashes + 1))  # last: h_p
        self.register_buffer("hash_a", a.to(buffer_device))
        self.register_buffer("hash_b", b.to(buffer_device))
        rows = [self.layouts[f].rows[0][0] for f in self.compressed]
        k_rows = [self.weight_rows[f] for f in self.compressed]
        offsets = [sum(k_rows[:i]) for i in range(len(k_rows))]
        for name, value in (("_compressed", self.compressed), ("_full_idx", self.full), ("_pool_rows", rows),
                            ("_weight_rows", k_rows), ("_weight_offsets", offsets)):
            self.register_buffer(name, torch.tensor(value, dtype=torch.int64, device=buffer_device),
                                 persistent=False)
        # no compressed feature (no budget): no weights, rather than an empty parameter
        self.importance = nn.Parameter(torch.empty(sum(k_rows), self.hashes, device=real)) \
            if self.compressed else None
        if real is None or real.type != "meta":
            self.reset_parameters()

    def layout(self, index: int, feature: FeatureSpec) -> FeatureLayout:
        if fits_full(feature.num_ids, self.dim, self.max_table_params):
            return FeatureLayout(rows=((feature.num_ids,),))
        budget = feature_budget(feature.num_ids, self.dim, self.max_table_params)
        k = max(1, int(self.weight_share * budget) // self.hashes)
        rows = (budget - k * self.hashes) // self.dim
        if rows < 1:
            raise ConfigError(f"hemb: max_table_params={self.max_table_params} leaves no pool rows for "
                              f"{feature.name} after {k} x {self.hashes} importance weights")
        self.weight_rows[index] = k
        return FeatureLayout(rows=((rows,),))

    def reset_parameters(self) -> None:
        """Importance weights 1; pools uniform (sharded pools: the training code's table init)."""
        if self.importance is not None:
            with torch.no_grad():
                self.importance.fill_(1.0)
        if isinstance(self.ebc, EmbeddingBagCollection):
            super().reset_parameters()

    def table_kjt(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Logical ids -> the pool lookups (h_0..h_{H-1} of each compressed id), then full ids."""
        ids = features.values().view(len(self.features), -1).to(torch.int64)
        batch = ids.shape[1]
        c = self._compressed
        pools = universal_hash(ids[c].unsqueeze(1), self.hash_a[c, :-1].unsqueeze(-1),
                               self.hash_b[c, :-1].unsqueeze(-1), self._pool_rows.view(-1, 1, 1))
        values = torch.cat([pools.reshape(-1), ids[self._full_idx].reshape(-1)])
        lengths = torch.ones(len(self.sub_keys) * batch, dtype=torch.int32, device=values.device)
        return KeyedJaggedTensor(keys=self.sub_keys, values=values, lengths=lengths)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """features: KJT (F keys, one id each) -> (B, F, d)."""
        pooled = self.ebc(self.table_kjt(features))
        values = pooled.values()
        keys = tuple(pooled.keys())
        if list(keys) != self.sub_keys:  # a sharded collection may order its outputs otherwise
            if keys not in self._column_perm:
                self._column_perm[keys] = self._make_column_perm(pooled)
            values = values.index_select(1, self._column_perm[keys].to(values.device))
        batch, fc = values.shape[0], len(self.compressed)
        full = values[:, fc * self.hashes * self.dim :].view(batch, len(self.full), self.dim)
        if not fc:
            return full
        pools = values[:, : fc * self.hashes * self.dim].view(batch, fc, self.hashes, self.dim)
        ids = features.values().view(len(self.features), -1)[self._compressed].to(torch.int64)
        rows = universal_hash(ids, self.hash_a[self._compressed, -1].unsqueeze(-1),
                              self.hash_b[self._compressed, -1].unsqueeze(-1), self._weight_rows.view(-1, 1))
        weights = self.importance[rows + self._weight_offsets.view(-1, 1)]  # (Fc, B, H)
        mixed = (pools * weights.permute(1, 0, 2).unsqueeze(-1)).sum(dim=2)
        return torch.cat([mixed, full], dim=1).index_select(1, self._inverse_order)

    def learned_params(self) -> list[int]:
        out = super().learned_params()
        for f in self.compressed:
            out[f] += self.weight_rows[f] * self.hashes
        return out

    def aux_bytes(self) -> list[int]:
        """``hashes + 1`` pairs of hash constants per compressed feature; no per-id state."""
        return [2 * (self.hashes + 1) * 8 if f in self.weight_rows else 0 for f in range(len(self.features))]
