"""``ce``: "CE concat" of the CCE paper, a compositional embedding of ``c`` random-hash columns.

The vector of id ``i`` is ``concat_j T_j[h_j(i)]``, each ``T_j`` a ``r x w`` torchrec table
with ``r = floor(P / d)`` and ``w = d / c``: ``r * d`` learned floats, like ``hashing``, but
two ids collide only if they collide in every column. It is CCE without the clustering
(and without the second table per column), the paper's closest baseline.

Init rule: the shared one (base.py): every column table uniform with std ``init_std``, so
the concatenated vector has coordinate std ``init_std``. Effective step at init
(``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d = 16; 1 for a full table):
about 1.0.

Example::

    emb = CEEmbedding([FeatureSpec("cat_0", 100_000)], dim=16, max_table_params=16_000,
                      init_std=0.05, seed=0, columns=4)   # 4 tables of 1,000 x 4
    emb(kjt).shape                                        # (B, 1, 16)
"""

from __future__ import annotations

import torch

from cce_dlrm.embeddings.base import (
    FeatureGroup,
    FeatureLayout,
    FeatureSpec,
    TableMethod,
    check_columns,
    feature_budget,
    fits_full,
)
from cce_dlrm.embeddings.hash_family import draw_hash_constants, universal_hash


class CEEmbedding(TableMethod):
    """``c`` hashed column tables per compressed feature; features that fit stay full."""

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None, *, columns: int = 4):
        check_columns("ce", dim, columns)
        self.columns = int(columns)
        super().__init__(features, dim, max_table_params, init_std, seed, device)
        self.compressed = [i for i, f in enumerate(self.features)
                           if not fits_full(f.num_ids, dim, max_table_params)]
        buffer_device = "cpu" if device is None or torch.device(device).type == "meta" else device
        a, b = draw_hash_constants(seed, (len(self.features), self.columns))
        self.register_buffer("hash_a", a.to(buffer_device))
        self.register_buffer("hash_b", b.to(buffer_device))
        rows = [lay.rows[0][0] for lay in self.layouts]
        full = [i not in self.compressed for i in range(len(self.features))]
        self.register_buffer("_rows", torch.tensor(rows, device=buffer_device), persistent=False)
        self.register_buffer("_full", torch.tensor(full, device=buffer_device), persistent=False)

    def layout(self, index: int, feature: FeatureSpec) -> FeatureLayout:
        if fits_full(feature.num_ids, self.dim, self.max_table_params):
            return FeatureLayout(rows=((feature.num_ids,),))
        rows = feature_budget(feature.num_ids, self.dim, self.max_table_params) // self.dim
        return FeatureLayout(rows=((rows,) * self.columns,))

    def indices(self, group: FeatureGroup, ids: torch.Tensor) -> torch.Tensor:
        """ids (Fg, B) -> rows (Fg, 1, c, B): column j of id i is row h_j(i) of T_j."""
        x = ids.to(torch.int64).unsqueeze(1)  # (Fg, 1, B)
        if group.key[1] == 1 and self.columns > 1:  # the features that fit: full tables
            return x.unsqueeze(1)
        feats = self.group_features(group)
        rows = self._rows[feats].view(-1, 1, 1)
        hashed = universal_hash(x, self.hash_a[feats].unsqueeze(-1), self.hash_b[feats].unsqueeze(-1),
                                rows)  # (Fg, c, B)
        if self.columns == 1:  # full and hashed features then share one group shape
            hashed = torch.where(self._full[feats].view(-1, 1, 1), x, hashed)
        return hashed.unsqueeze(1)

    def aux_bytes(self) -> list[int]:
        """Two hash constants per column of each compressed feature; no per-id state."""
        out = [0] * len(self.features)
        for f in self.compressed:
            out[f] = 2 * self.columns * 8
        return out
