"""DLRM from torchrec's building blocks, with the embedding module injected.

``DenseArch`` (bottom MLP), ``InteractionArch`` (pairwise dot products) and ``OverArch``
(top MLP) are torchrec's; the sparse part is any embedding method (ids in, ``(B, F, d)``
out), chosen by config and built outside the model.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchrec import KeyedJaggedTensor
from torchrec.models.dlrm import DenseArch, InteractionArch, OverArch

from cce_dlrm.embeddings.base import ConfigError, EmbeddingMethod


class DLRM(nn.Module):
    """Deep Learning Recommendation Model (Naumov et al. 2019).

    Args:
        embedding: the embedding method, ``KJT (F keys, one id each) -> (B, F, d)``.
        dense_in_features: number of dense features (13 for Criteo).
        bottom_mlp: bottom MLP layer sizes; the last must equal ``d``.
        top_mlp: top MLP layer sizes; the last is 1 (a logit).

    Example::

        model = DLRM(FullEmbedding(features, 16, None, 0.05, 0), 13, [64, 16], [64, 1])
        logits = model(dense, kjt)   # dense (B, 13), kjt with 26 keys -> (B,)
    """

    def __init__(self, embedding: EmbeddingMethod, dense_in_features: int,
                 bottom_mlp: Sequence[int], top_mlp: Sequence[int]):
        super().__init__()
        dim = embedding.dim
        if bottom_mlp[-1] != dim:
            raise ConfigError(
                f"the bottom MLP must end at the embedding dim ({dim}), got {list(bottom_mlp)}"
            )
        if top_mlp[-1] != 1:
            raise ConfigError(f"the top MLP must end in 1 output, got {list(top_mlp)}")
        num_features = len(embedding.features)
        self.embedding = embedding
        self.dense_arch = DenseArch(dense_in_features, list(bottom_mlp))
        self.inter_arch = InteractionArch(num_sparse_features=num_features)
        over_in = dim + num_features * (num_features + 1) // 2
        self.over_arch = OverArch(over_in, list(top_mlp))

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """dense (B, 13), sparse KJT -> logits (B,)."""
        embedded = self.embedding(sparse)
        bottom = self.dense_arch(dense)
        return self.over_arch(self.inter_arch(bottom, embedded)).squeeze(-1)
