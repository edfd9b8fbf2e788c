"""``robe``: ROBE, random offset block embeddings (Desai, Chou & Shrivastava, MLSys 2022).

Each compressed feature owns one flat, circular array ``M`` of ``P`` learned floats. The
vector of id ``i`` is ``concat_j M[h_j(i) : h_j(i) + w]`` over ``c`` blocks of ``w = d / c``
floats (ROBE-Z with ``Z = w``), the block starting at a hashed offset anywhere in ``M``
(wrapping around its end). Features that fit keep their full table, stored row-major in
the same kind of array.

All features' arrays are one parameter, and all ``F * B * d`` reads are one gather, so the
lookup is a single vectorised op. The arrays are not torchrec tables: blocks start at any
float, which fbgemm's row lookups cannot express; they are small (``P`` per feature) and
trained by the dense optimizer (replicated under model parallelism).

Init rule: the shared one (base.py): every float of ``M`` uniform with std ``init_std``, so
every block, hence every vector, starts with coordinate std ``init_std``. Effective step at
init (``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d = 16; 1 for a full
table): about 1.0 (overlapping blocks pull each other, with zero mean).

Example::

    emb = ROBEEmbedding([FeatureSpec("cat_0", 100_000)], dim=16, max_table_params=16_000,
                        init_std=0.05, seed=0, columns=4)   # M holds 16,000 floats
    emb(kjt).shape                                          # (B, 1, 16)
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import (
    ConfigError,
    EmbeddingMethod,
    feature_budget,
    fill_uniform_shard,
    fits_full,
)
from cce_dlrm.embeddings.hash_family import draw_hash_constants, universal_hash


class ROBEEmbedding(EmbeddingMethod):
    """One circular array of ``P`` floats per compressed feature, read in ``columns`` blocks."""

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None, *, columns: int = 4):
        super().__init__(features, dim, max_table_params, init_std, seed)
        if columns < 1 or dim % columns:
            raise ConfigError(f"robe: embedding dim {dim} is not divisible by columns={columns}")
        self.columns, self.width = int(columns), dim // int(columns)
        self.full = [fits_full(f.num_ids, dim, max_table_params) for f in self.features]
        self.sizes = [f.num_ids * dim if full else feature_budget(f.num_ids, dim, max_table_params)
                      for f, full in zip(self.features, self.full)]
        offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        real = None if device is None else torch.device(device)
        buffer_device = "cpu" if real is None or real.type == "meta" else real
        a, b = draw_hash_constants(seed, (len(self.features), self.columns))
        self.register_buffer("hash_a", a.to(buffer_device))
        self.register_buffer("hash_b", b.to(buffer_device))
        for name, value in (("_sizes", self.sizes), ("_offsets", offsets), ("_full", self.full)):
            self.register_buffer(name, torch.tensor(value, device=buffer_device), persistent=False)
        # where block j of a full table's row starts, and the floats inside a block
        self.register_buffer("_block_starts", torch.arange(self.columns, device=buffer_device) * self.width,
                             persistent=False)
        self.register_buffer("_within", torch.arange(self.width, device=buffer_device), persistent=False)
        self.memory = nn.Parameter(torch.empty(sum(self.sizes), device=real))
        if real is None or real.type != "meta":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform with std ``init_std``: a composed vector is ``d`` of these floats."""
        fill_uniform_shard(self.memory.data.view(-1, 1), self.seed, "robe.memory", 0, 0, 1, self.init_std)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """features: KJT (F keys, one id each) -> (B, F, d)."""
        num = len(self.features)
        ids = features.values().view(num, 1, -1).to(torch.int64)  # (F, 1, B)
        sizes = self._sizes.view(-1, 1, 1)
        hashed = universal_hash(ids, self.hash_a.unsqueeze(-1), self.hash_b.unsqueeze(-1), sizes)
        row_major = ids * self.dim + self._block_starts.view(1, -1, 1)
        starts = torch.where(self._full.view(-1, 1, 1), row_major, hashed)  # (F, c, B)
        flat = (starts.unsqueeze(-1) + self._within) % sizes.unsqueeze(-1) + self._offsets.view(-1, 1, 1, 1)
        out = self.memory.index_select(0, flat.reshape(-1)).view(flat.shape)  # (F, c, B, w)
        return out.permute(2, 0, 1, 3).reshape(ids.shape[-1], num, self.dim)

    def learned_params(self) -> list[int]:
        return list(self.sizes)

    def aux_bytes(self) -> list[int]:
        """Two hash constants per block of each compressed feature; no per-id state."""
        return [0 if full else 2 * self.columns * 8 for full in self.full]
