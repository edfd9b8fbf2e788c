"""``full``: the DLRM baseline, one ``n x d`` table per feature (``E[i]``).

Init rule: the shared one (base.py): every entry uniform with std ``init_std``, so vectors
start with coordinate std ``init_std``. Effective step at init
(``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d = 16; 1 for a full table):
exactly 1.
"""

from __future__ import annotations

import torch

from cce_dlrm.embeddings.base import FeatureGroup, FeatureLayout, FeatureSpec, TableMethod


class FullEmbedding(TableMethod):
    """Uncompressed tables; ``max_table_params`` is ignored.

    Example::

        emb = FullEmbedding([FeatureSpec("cat_0", 10)], dim=4, max_table_params=None,
                            init_std=0.05, seed=0)
        emb(kjt).shape  # (B, 1, 4)
    """

    respects_budget = False

    def layout(self, index: int, feature: FeatureSpec) -> FeatureLayout:
        return FeatureLayout(rows=((feature.num_ids,),))

    def indices(self, group: FeatureGroup, ids: torch.Tensor) -> torch.Tensor:
        return ids.view(ids.shape[0], 1, 1, ids.shape[1])
