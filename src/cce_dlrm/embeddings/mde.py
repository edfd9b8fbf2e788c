"""``mde``: mixed-dimension embeddings (Ginart et al., ISIT 2021; the ``--md-flag`` of the DLRM reference).

Each feature gets its own table width ``d_f`` from a popularity power law and a projection
to the common ``d``::

    d_f  = d * (n_min / n_f) ** alpha          (rounded to a multiple of 4, in [4, d])
    e(i) = E_f[i] @ W_f                        E_f: n_f x d_f, W_f: d_f x d (no W_f if d_f = d)

Popularity: like the reference (``md_solver(ln_emb, md_temperature, d0=m_spa)``), the
vocabulary size stands in for it: the smallest vocabulary ``n_min`` (over all features) gets
``d``, larger vocabularies (rarer ids on average) get narrower tables. ``alpha`` is the
reference's temperature (``--md-temperature``, 0.3 by default); ``alpha = 0`` gives every
feature ``d``. The reference rounds to integers (optionally powers of 2); here widths are
rounded to multiples of 4 because fbgemm's fused kernels need them.

Budget rule (``P = min(n_f*d, max_table_params)``): a feature whose full table fits stays a
full table. Otherwise its table has ``n_f`` rows if ``n_f*d_f + d_f*d <= P``; where the cap
cannot hold that table plus its projection, ids are hashed (the shared universal family) into
the ``r = floor((P - d_f*d) / d_f)`` rows that fit, and the log says which features.

Init rule: tables uniform with std ``init_std``; each projection uniform, then scaled so
that ``||W_f||_F^2 = d`` exactly. The output coordinates then have mean variance
``init_std^2 * ||W_f||_F^2 / d = init_std^2``: the same scale as every method.
Effective step at init (``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d = 16;
1 for a full table): about 1.0 (a lone feature is the smallest vocabulary, so it keeps width
d and is hashed: the measurement is hashing's).

Auxiliary memory: two int64 hash constants for each hashed feature; nothing per id.

Example::

    emb = MDEEmbedding([FeatureSpec("a", 10), FeatureSpec("b", 100_000)], dim=16,
                       max_table_params=16_000, init_std=0.05, seed=0, alpha=0.3)
    emb.table_dims                     # [16, 4]: b's width from (10 / 100,000) ** 0.3
    emb.table_rows                     # [10, 3_984]: b hashed into (16,000 - 4*16) / 4 rows
    emb(kjt).shape                     # (B, 2, 16)
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor

from cce_dlrm.embeddings.base import (
    ConfigError,
    EmbeddingMethod,
    FeatureLayout,
    FeatureSpec,
    SubTable,
    TableMethod,
    feature_budget,
    fill_uniform_shard,
    fits_full,
)
from cce_dlrm.embeddings.hash_family import draw_hash_constants, universal_hash

log = logging.getLogger(__name__)


def mde_dims(num_ids: list[int], dim: int, alpha: float) -> list[int]:
    """Table widths by the power law, rounded to multiples of 4 in ``[4, dim]``.

    >>> mde_dims([10, 1_000, 100_000], 16, 0.3)
    [16, 4, 4]
    >>> mde_dims([10, 1_000, 100_000], 64, 0.3)
    [64, 16, 4]
    >>> mde_dims([10, 1_000, 100_000], 64, 0.0)
    [64, 64, 64]
    """
    smallest = min(num_ids)
    out = []
    for n in num_ids:
        raw = dim * (smallest / n) ** alpha
        out.append(int(min(dim, max(4, 4 * round(raw / 4)))))
    return out


class MDEEmbedding(TableMethod):
    """Per-feature widths from popularity, projected to ``d``; hashed rows where the cap is short."""

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None, *, alpha: float = 0.3):
        # The base class builds sub-tables of one width per layout column; here every feature
        # has its own width, so the sub-tables are described directly and the collection is
        # built by the base class's make_collection (same precision option, same sharding).
        EmbeddingMethod.__init__(self, features, dim, max_table_params, init_std, seed)
        if dim % 4:
            raise ConfigError(f"mde: embedding dim {dim} must be a multiple of 4 (fbgemm's fused kernels)")
        if alpha < 0:
            raise ConfigError(f"mde: alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        widths = mde_dims([f.num_ids for f in self.features], dim, self.alpha)
        self.table_dims, self.table_rows, self.hashed = [], [], []
        for f, width in zip(self.features, widths):
            if fits_full(f.num_ids, dim, max_table_params):
                self.table_dims.append(dim)
                self.table_rows.append(f.num_ids)
                continue
            budget = feature_budget(f.num_ids, dim, max_table_params)
            projection = width * dim if width < dim else 0
            rows = f.num_ids
            if rows * width + projection > budget:
                rows = (budget - projection) // width
                if rows < 1:
                    raise ConfigError(
                        f"mde: {f.name}: max_table_params={budget} cannot hold a {width}-wide row "
                        f"plus its {width}x{dim} projection; raise the cap or alpha")
                self.hashed.append(len(self.table_rows))
            self.table_dims.append(width)
            self.table_rows.append(rows)
        if self.hashed:
            log.warning("mde: %d feature(s) do not fit their table plus projection in P=%s; their ids are "
                        "hashed into the rows that fit: %s", len(self.hashed), max_table_params,
                        ", ".join(f"{self.features[i].name} (n={self.features[i].num_ids}) -> "
                                  f"{self.table_rows[i]} x {self.table_dims[i]}" for i in self.hashed))
        self.layouts = [FeatureLayout(rows=((r,),)) for r in self.table_rows]  # widths: table_dims
        self.groups = []  # no shared layout shapes: forward does its own lookup
        self.sub_tables = [SubTable(name=f"{f.name}__s0c0", feature=i, slot=0, column=0, rows=r, dim=w,
                                    init_std=self.init_std)
                           for i, (f, r, w) in enumerate(zip(self.features, self.table_rows, self.table_dims))]
        self.sub_keys = [t.name for t in self.sub_tables]
        self.table_precision = "fp32"
        self._column_perm = {}
        real = None if device is None else torch.device(device)
        self.ebc = self.make_collection(device)

        buffer_device = "cpu" if real is None or real.type == "meta" else real
        a, b = draw_hash_constants(seed, (len(self.features),))
        self.register_buffer("hash_a", a[self.hashed].to(buffer_device))
        self.register_buffer("hash_b", b[self.hashed].to(buffer_device))
        self.register_buffer("_hashed", torch.tensor(self.hashed, dtype=torch.int64, device=buffer_device),
                             persistent=False)
        self.register_buffer("_hashed_rows", torch.tensor([self.table_rows[i] for i in self.hashed],
                                                          dtype=torch.int64, device=buffer_device),
                             persistent=False)
        # projected features grouped by width: one (Fw, w, d) parameter per width, batched matmul
        self.proj_widths = sorted({w for w in self.table_dims if w < dim})
        self.proj_features = {w: [i for i, x in enumerate(self.table_dims) if x == w] for w in self.proj_widths}
        for w in self.proj_widths:
            shape = (len(self.proj_features[w]), w, dim)
            self.register_parameter(f"proj_w{w}", nn.Parameter(torch.empty(shape, device=real)))
        if real is None or real.type != "meta":
            self.reset_parameters()

    def layout(self, index: int, feature: FeatureSpec) -> FeatureLayout:
        return self.layouts[index]

    def reset_parameters(self) -> None:
        """Tables while unsharded (DMP fills sharded ones); projections with ``||W||_F^2 = d``."""
        if isinstance(self.ebc, EmbeddingBagCollection):
            TableMethod.reset_parameters(self)
        for w in getattr(self, "proj_widths", []):
            param = getattr(self, f"proj_w{w}")
            if param.device.type == "meta":
                continue
            host = torch.empty(param.shape)
            fill_uniform_shard(host.view(-1, self.dim), self.seed, f"mde.proj_w{w}", 0, 0, self.dim, 1.0)
            host *= (self.dim ** 0.5) / host.flatten(1).norm(dim=1).view(-1, 1, 1)
            with torch.no_grad():
                param.copy_(host)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """features: KJT (F keys, one id each) -> (B, F, d)."""
        ids = features.values().view(len(self.features), -1).to(torch.int64)
        if self.hashed:
            hashed = universal_hash(ids[self._hashed], self.hash_a.view(-1, 1), self.hash_b.view(-1, 1),
                                    self._hashed_rows.view(-1, 1))
            ids = ids.index_copy(0, self._hashed, hashed)
        lengths = torch.ones(ids.numel(), dtype=torch.int32, device=ids.device)
        pooled = self.ebc(KeyedJaggedTensor(keys=self.sub_keys, values=ids.reshape(-1), lengths=lengths))
        rows = {k: v.float() for k, v in pooled.to_dict().items()}  # unsharded fp16 tables return fp16
        out: list[torch.Tensor | None] = [None] * len(self.features)
        for w in self.proj_widths:
            feats = self.proj_features[w]
            stacked = torch.stack([rows[self.sub_keys[f]] for f in feats])  # (Fw, B, w)
            projected = torch.bmm(stacked, getattr(self, f"proj_w{w}"))  # (Fw, B, d)
            for n, f in enumerate(feats):
                out[f] = projected[n]
        for f, width in enumerate(self.table_dims):
            if width == self.dim:
                out[f] = rows[self.sub_keys[f]]
        return torch.stack(out, dim=1)

    def learned_params(self) -> list[int]:
        return [r * w + (w * self.dim if w < self.dim else 0) for r, w in zip(self.table_rows, self.table_dims)]

    def aux_bytes(self) -> list[int]:
        """Two int64 hash constants for each hashed feature."""
        return [16 if i in self.hashed else 0 for i in range(len(self.features))]
