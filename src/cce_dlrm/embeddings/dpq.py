"""``dpq``: differentiable product quantization (Chen, Li & Sun, ICML 2020, "DPQ-SX").

The vector of id ``i`` is split into ``c`` columns of width ``w = d / c``; column ``j`` is one
of ``K`` learned codewords, chosen by a learned, discrete assignment::

    q_j(i)      = sum_s Q_{s,j}[h_{s,j}(i)]                       query, (w,)
    code_j(i)   = argmax_k  <q_j(i), K_j[k]> / tau                 discrete, in [0, K)
    e(i)        = concat_j  V_j[code_j(i)]                         output, (d,)

Training uses the straight-through estimator: the forward pass uses the one-hot code (so a
training vector *is* the concatenation of chosen codewords, exactly as at eval), the
backward pass differentiates ``softmax(<q_j(i), K_j> / tau)`` so that queries and keys learn.

The paper's query is a full ``n x d`` table, which no budget ``P < n*d`` can hold; here the
query of an id is composed from ``s = query_hashes`` hashed torchrec tables (summed, like
hash embeddings), so two ids share a code only where their queries collide in every table.

Budget rule (per compressed feature, ``P = max_table_params``):

* codebooks: keys ``K_j`` and values ``V_j``, ``K x w`` each per column: ``2*K*d`` floats,
  with ``K = min(codewords, floor(P / (4d)))`` so that the codebooks take at most half of ``P``;
* queries: the rest, ``s`` tables of ``r = floor((P - 2*K*d) / (s*d))`` rows (``c`` columns
  of ``r x w`` each): ``s*r*d`` floats.

Features whose full table fits ``P`` stay full tables. Codes are computed on the fly from the
queries (learned, counted in ``P``); no per-id code is stored, so auxiliary memory is the
hash constants only (16 bytes per query sub-table). Serving could instead store the ``n*c``
codes (``ceil(log2 K)`` bits each) and drop the queries; that is not what this module does.

Init rule: values ``V_j`` uniform with std ``init_std`` (an output vector is a concatenation
of value rows, so its coordinates start with std ``init_std``, like every method); keys
uniform with std ``init_std``; query tables by the shared sum rule (each of ``s`` slots with
std ``init_std / sqrt(s)``).
Effective step at init (``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d = 16;
1 for a full table): about 1.05.

Deviation from the paper: no batch normalisation of queries and keys, and the query is
hashed (see above). ``tau`` is the paper's softmax temperature (1 by default).

Example::

    emb = DPQEmbedding([FeatureSpec("cat_0", 100_000)], dim=16, max_table_params=16_000,
                       init_std=0.05, seed=0, columns=4, codewords=32, query_hashes=2)
    # codebooks 2*32*16 = 1,024 floats; queries 2 x 468 rows x 16 = 14,976 floats
    emb(kjt).shape                     # (B, 1, 16)
    emb.codes(kjt).shape               # (B, 1, 4), int64 in [0, 32)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor

from cce_dlrm.embeddings.base import (
    ConfigError,
    FeatureGroup,
    FeatureLayout,
    FeatureSpec,
    TableMethod,
    check_columns,
    fill_uniform_shard,
    fits_full,
)
from cce_dlrm.embeddings.hash_family import draw_hash_constants, universal_hash


def dpq_sizes(budget: int, dim: int, codewords: int, query_hashes: int) -> tuple[int, int]:
    """``(K, r)``: codewords per column and rows per query table for a budget ``P``.

    >>> dpq_sizes(16_000, 16, 32, 2)
    (32, 468)
    >>> dpq_sizes(400, 16, 32, 2)
    (6, 6)
    """
    k = min(int(codewords), budget // (4 * dim))
    rows = (budget - 2 * k * dim) // (query_hashes * dim)
    return k, rows


class DPQEmbedding(TableMethod):
    """Hashed queries, straight-through codes, learned codebooks; features that fit stay full."""

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None, *,
                 columns: int = 4, codewords: int = 32, query_hashes: int = 2, temperature: float = 1.0):
        check_columns("dpq", dim, columns)
        if codewords < 2 or query_hashes < 1 or temperature <= 0:
            raise ConfigError("dpq: codewords must be >= 2, query_hashes >= 1 and temperature > 0, got "
                              f"{codewords}, {query_hashes}, {temperature}")
        self.columns, self.query_hashes, self.temperature = int(columns), int(query_hashes), float(temperature)
        self.codewords = 0
        compressed = [i for i, f in enumerate(features) if not fits_full(f.num_ids, dim, max_table_params)]
        if compressed:
            self.codewords, rows = dpq_sizes(int(max_table_params), dim, codewords, query_hashes)
            if self.codewords < 2 or rows < 1:
                raise ConfigError(
                    f"dpq: max_table_params={max_table_params} cannot hold 2 codewords per column "
                    f"(2*2*{dim} floats) plus {query_hashes} query table(s) of one row "
                    f"({query_hashes}*{dim}); raise the cap or lower query_hashes")
            self._query_rows = rows
        self.compressed = compressed
        super().__init__(features, dim, max_table_params, init_std, seed, device)
        real = None if device is None else torch.device(device)
        buffer_device = "cpu" if real is None or real.type == "meta" else real
        a, b = draw_hash_constants(seed, (len(self.features), self.query_hashes, self.columns))
        self.register_buffer("hash_a", a.to(buffer_device))
        self.register_buffer("hash_b", b.to(buffer_device))
        rows = [lay.rows[0][0] for lay in self.layouts]
        full = [i not in compressed for i in range(len(self.features))]
        self.register_buffer("_rows", torch.tensor(rows, device=buffer_device), persistent=False)
        self.register_buffer("_full", torch.tensor(full, device=buffer_device), persistent=False)
        self.register_buffer("_compressed", torch.tensor(compressed, dtype=torch.int64, device=buffer_device),
                             persistent=False)
        shape = (len(compressed), self.columns, self.codewords, dim // self.columns)
        for name in ("keys", "values"):
            param = nn.Parameter(torch.empty(shape, device=real)) if compressed else None
            self.register_parameter(name, param)
        if compressed and (real is None or real.type != "meta"):
            self._reset_codebooks()

    def layout(self, index: int, feature: FeatureSpec) -> FeatureLayout:
        if fits_full(feature.num_ids, self.dim, self.max_table_params):
            return FeatureLayout(rows=((feature.num_ids,),))
        return FeatureLayout(rows=((self._query_rows,) * self.columns,) * self.query_hashes, reducer="sum")

    def indices(self, group: FeatureGroup, ids: torch.Tensor) -> torch.Tensor:
        """ids (Fg, B) -> rows (Fg, s, c, B): query table (s, j) is read at row h_{s,j}(i)."""
        slots, columns, _ = group.key
        x = ids.to(torch.int64).view(ids.shape[0], 1, 1, -1)  # (Fg, 1, 1, B)
        feats = self.group_features(group)
        if slots == 1 and columns == 1 and (self.query_hashes, self.columns) != (1, 1):
            return x  # full tables
        a = self.hash_a[feats][..., None]  # (Fg, s, c, 1)
        b = self.hash_b[feats][..., None]
        hashed = universal_hash(x, a, b, self._rows[feats].view(-1, 1, 1, 1))
        if (self.query_hashes, self.columns) == (1, 1):  # full and hashed features share a shape
            hashed = torch.where(self._full[feats].view(-1, 1, 1, 1), x, hashed)
        return hashed

    # --- parameters -----------------------------------------------------------------
    def _reset_codebooks(self) -> None:
        w = self.dim // self.columns
        for name in ("keys", "values"):
            param = getattr(self, name)
            fill_uniform_shard(param.data.view(-1, w), self.seed, f"dpq.{name}", 0, 0, w, self.init_std)

    def reset_parameters(self) -> None:
        """Codebooks always; the query/full tables only while unsharded (DMP fills sharded ones)."""
        if isinstance(self.ebc, EmbeddingBagCollection):
            super().reset_parameters()
        keys = getattr(self, "keys", None)  # None while the base class builds the tables
        if keys is not None and keys.device.type != "meta":
            self._reset_codebooks()

    # --- forward --------------------------------------------------------------------
    def _queries(self, features: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (mixed (B, F, d): full features' vectors and compressed features' queries,
        logits (B, Fc, c, K))."""
        mixed = super().forward(features)
        batch = mixed.shape[0]
        q = mixed.index_select(1, self._compressed).view(batch, len(self.compressed), self.columns, -1)
        logits = torch.einsum("bfcw,fckw->bfck", q, self.keys) / self.temperature
        return mixed, logits

    def codes(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """The discrete codes of the compressed features, (B, Fc, c) int64 in ``[0, K)``."""
        with torch.no_grad():
            return self._queries(features)[1].argmax(-1)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """features: KJT (F keys, one id each) -> (B, F, d)."""
        if not self.compressed:
            return super().forward(features)
        mixed, logits = self._queries(features)
        batch, fc = mixed.shape[0], len(self.compressed)
        codes = logits.argmax(-1)  # (B, Fc, c)
        if torch.is_grad_enabled() and self.training:
            soft = logits.softmax(-1)
            # straight-through: the one-hot code forward, the softmax's gradient backward
            weights = F.one_hot(codes, self.codewords).to(soft.dtype) + (soft - soft.detach())
            chosen = torch.einsum("bfck,fckw->bfcw", weights, self.values)
        else:
            f_idx = torch.arange(fc, device=codes.device).view(1, -1, 1)
            c_idx = torch.arange(self.columns, device=codes.device).view(1, 1, -1)
            chosen = self.values[f_idx, c_idx, codes]  # (B, Fc, c, w)
        return mixed.index_copy(1, self._compressed, chosen.reshape(batch, fc, self.dim))

    # --- accounting -----------------------------------------------------------------
    def learned_params(self) -> list[int]:
        out = super().learned_params()
        for f in self.compressed:
            out[f] += 2 * self.codewords * self.dim
        return out

    def aux_bytes(self) -> list[int]:
        """Two int64 hash constants per query sub-table of each compressed feature."""
        out = [0] * len(self.features)
        for f in self.compressed:
            out[f] = 2 * 8 * self.query_hashes * self.columns
        return out
