"""``hashing``: the hashing trick (Weinberger et al. 2009), ``T[h(i)]`` with ``r = floor(P/d)``.

Init rule: the shared one (base.py): the hashed table (and any full table) uniform with std
``init_std``, so vectors start with coordinate std ``init_std``. Effective step at init
(``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d = 16; 1 for a full table):
about 1.0 (colliding ids pull each other, with zero mean).
"""

from __future__ import annotations

import torch

from cce_dlrm.embeddings.base import (
    FeatureGroup,
    FeatureLayout,
    FeatureSpec,
    TableMethod,
    feature_budget,
    fits_full,
)
from cce_dlrm.embeddings.hash_family import draw_hash_constants, universal_hash


class HashingEmbedding(TableMethod):
    """One hashed table of ``floor(P/d)`` rows per feature; features that fit stay full."""

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None):
        super().__init__(features, dim, max_table_params, init_std, seed, device)
        a, b = draw_hash_constants(seed, (len(self.features),))
        self.register_buffer("hash_a", a)
        self.register_buffer("hash_b", b)
        rows = [lay.rows[0][0] for lay in self.layouts]
        full = [fits_full(f.num_ids, dim, max_table_params) for f in self.features]
        self.register_buffer("_rows", torch.tensor(rows, dtype=torch.int64), persistent=False)
        self.register_buffer("_full", torch.tensor(full), persistent=False)

    def layout(self, index: int, feature: FeatureSpec) -> FeatureLayout:
        if fits_full(feature.num_ids, self.dim, self.max_table_params):
            return FeatureLayout(rows=((feature.num_ids,),))
        budget = feature_budget(feature.num_ids, self.dim, self.max_table_params)
        return FeatureLayout(rows=((budget // self.dim,),))

    def indices(self, group: FeatureGroup, ids: torch.Tensor) -> torch.Tensor:
        idx = self.group_features(group)
        rows = self._rows[idx].view(-1, 1)
        hashed = universal_hash(ids, self.hash_a[idx].view(-1, 1), self.hash_b[idx].view(-1, 1), rows)
        out = torch.where(self._full[idx].view(-1, 1), ids.to(torch.int64), hashed)
        return out.view(ids.shape[0], 1, 1, ids.shape[1])
