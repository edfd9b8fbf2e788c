"""``dhe``: Deep Hash Embedding (Kang et al., KDD 2021).

No table: id ``i`` is encoded by ``hashes`` universal hashes into ``[0, hash_range)``, mapped
to ``[-1, 1]`` (the paper's uniform encoding), and a per-feature MLP (``hidden_layers``
hidden layers of width ``h``, Mish activations) decodes that code to the ``d``-dim vector.
``h`` is the largest width whose weights and biases fit ``P``:
``hashes*h + h + (L-1)*(h*h + h) + h*d + d <= P``. The paper's batch normalisation is left
out (under a budget of 1e3-1e5 floats it would be a large share of a tiny network).

Every compressed feature has the same ``P`` (``max_table_params``), hence the same network
shape, so the features' MLPs are stacked and evaluated with batched matrix products, one
per layer for all features. Features that fit keep their full tables (one flat parameter).

Init rule: hidden layers He-uniform from the seed, biases 0, and the output layer scaled so
that each feature's vectors start with std ``init_std`` (measured on a fixed probe of 4,096
ids). The MLP's weights are shared by all ids, so one step moves every id: the effective
step at init (``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d = 16; 1 for a
full table) is far above 1, about 24 at P = 16,000.

Example::

    emb = DHEEmbedding([FeatureSpec("cat_0", 100_000)], dim=16, max_table_params=16_000,
                       init_std=0.05, seed=0)   # 64 hashes -> 91 -> 91 -> 16
    emb(kjt).shape                              # (B, 1, 16)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import (
    ConfigError,
    EmbeddingMethod,
    fill_uniform_shard,
    fits_full,
    lookup_flat_rows,
)
from cce_dlrm.embeddings.hash_family import draw_hash_constants, universal_hash

PROBE_IDS = 4096


def mlp_params(hashes: int, width: int, layers: int, dim: int) -> int:
    """Weights and biases of ``hashes -> width (x layers) -> dim``."""
    return hashes * width + width + (layers - 1) * (width * width + width) + width * dim + dim


class DHEEmbedding(EmbeddingMethod):
    """Hash-encoded ids decoded by a per-feature MLP; features that fit stay full."""

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None, *,
                 hashes: int | str = 64, hidden_layers: int = 2, hash_range: int = 1_000_000):
        super().__init__(features, dim, max_table_params, init_std, seed)
        tied = hashes == "width"  # the CCE paper's sizing: as many hashes as hidden units
        if not tied and not isinstance(hashes, int):
            raise ConfigError(f"dhe: hashes must be a positive integer or 'width', got {hashes!r}")
        if (not tied and hashes < 1) or hidden_layers < 1 or hash_range < 2:
            raise ConfigError("dhe: hashes and hidden_layers must be >= 1 and hash_range >= 2")
        self.layers, self.hash_range = int(hidden_layers), int(hash_range)
        self.hashes = 1 if tied else int(hashes)
        self.full = [i for i, f in enumerate(self.features) if fits_full(f.num_ids, dim, max_table_params)]
        self.compressed = [i for i in range(len(self.features)) if i not in self.full]
        self.width = 0
        if self.compressed:
            budget = int(max_table_params)

            def size(width: int) -> int:
                return mlp_params(width if tied else self.hashes, width, self.layers, dim)

            while size(self.width + 1) <= budget:
                self.width += 1
            if tied:
                self.hashes = max(self.width, 1)
            if self.width == 0:
                raise ConfigError(f"dhe: max_table_params={budget} cannot hold even a width-1 MLP from "
                                  f"{self.hashes} hashes; lower method.hashes")
        real = None if device is None else torch.device(device)
        buffer_device = "cpu" if real is None or real.type == "meta" else real
        a, b = draw_hash_constants(seed, (len(self.features), self.hashes))
        full_offsets = [sum(self.features[g].num_ids * dim for g in self.full[:i])
                        for i in range(len(self.full))]
        for name, value in (("hash_a", a), ("hash_b", b)):
            self.register_buffer(name, value[self.compressed].to(buffer_device))
        for name, value in (("_compressed", self.compressed), ("_full_idx", self.full),
                            ("_full_offsets", full_offsets)):
            self.register_buffer(name, torch.tensor(value, dtype=torch.int64, device=buffer_device),
                                 persistent=False)
        order = torch.tensor(self.compressed + self.full, dtype=torch.int64)
        self.register_buffer("_inverse_order", torch.argsort(order).to(buffer_device), persistent=False)
        self.register_buffer("_columns", torch.arange(dim, device=buffer_device), persistent=False)
        fc, h = len(self.compressed), self.width
        shapes = {"w_in": (fc, self.hashes, h), "b_in": (fc, 1, h),
                  "w_hidden": (fc, self.layers - 1, h, h), "b_hidden": (fc, self.layers - 1, 1, h),
                  "w_out": (fc, h, dim), "b_out": (fc, 1, dim),
                  "full_tables": (sum(self.features[g].num_ids for g in self.full) * dim,)}
        for name, shape in shapes.items():
            param = nn.Parameter(torch.empty(shape, device=real)) if math.prod(shape) else None
            self.register_parameter(name, param)  # None: no hidden-to-hidden layer, or no full table
        if real is None or real.type != "meta":
            self.reset_parameters()

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (Fc, B) -> the uniform encoding (Fc, B, hashes) in [-1, 1]."""
        codes = universal_hash(ids.to(torch.int64).unsqueeze(-1), self.hash_a.unsqueeze(1),
                               self.hash_b.unsqueeze(1), self.hash_range)
        return codes.to(torch.float32) * (2.0 / (self.hash_range - 1)) - 1.0

    def decode(self, codes: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        """codes (Fc, B, hashes) -> vectors (Fc, B, d); ``params`` overrides the parameters."""
        p = params or dict(self.named_parameters())
        x = F.mish(torch.baddbmm(p["b_in"], codes, p["w_in"]))
        for layer in range(self.layers - 1):
            x = F.mish(torch.baddbmm(p["b_hidden"][:, layer], x, p["w_hidden"][:, layer]))
        return torch.baddbmm(p["b_out"], x, p["w_out"])

    def reset_parameters(self) -> None:
        """He-uniform hidden layers, zero biases, output layer scaled to std ``init_std``."""
        gen = torch.Generator().manual_seed(self.seed)
        host = {}
        for name, param in self.named_parameters():
            if name.startswith("b_"):
                host[name] = torch.zeros(param.shape)
            elif name.startswith("w_"):
                fan_in = param.shape[-2]
                host[name] = (torch.rand(param.shape, generator=gen) * 2 - 1) * math.sqrt(6.0 / fan_in)
        if self.compressed:
            # per feature: scale the output layer so the probe ids' vectors have std init_std
            probe = torch.arange(PROBE_IDS).expand(len(self.compressed), -1)
            with torch.no_grad():
                encoded = universal_hash(probe.unsqueeze(-1), self.hash_a.cpu().unsqueeze(1),
                                         self.hash_b.cpu().unsqueeze(1), self.hash_range)
                encoded = encoded.float() * (2.0 / (self.hash_range - 1)) - 1.0
                std = self.decode(encoded, host).std(dim=(1, 2))
            host["w_out"] *= (self.init_std / std.clamp(min=1e-12)).view(-1, 1, 1)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name == "full_tables":
                    fill_uniform_shard(param.data.view(-1, 1), self.seed, "dhe.full", 0, 0, 1, self.init_std)
                else:
                    param.copy_(host[name])

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """features: KJT (F keys, one id each) -> (B, F, d)."""
        ids = features.values().view(len(self.features), -1).to(torch.int64)
        parts = []
        if self.compressed:
            parts.append(self.decode(self.encode(ids[self._compressed])))  # (Fc, B, d)
        if self.full:
            parts.append(lookup_flat_rows(self.full_tables, ids[self._full_idx], self._full_offsets,
                                          self._columns))  # (Ff, B, d)
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        return out.index_select(0, self._inverse_order).transpose(0, 1)

    def learned_params(self) -> list[int]:
        per_mlp = mlp_params(self.hashes, self.width, self.layers, self.dim)
        return [self.features[i].num_ids * self.dim if i in self.full else per_mlp
                for i in range(len(self.features))]

    def aux_bytes(self) -> list[int]:
        """Two hash constants per hash of each compressed feature; no per-id state."""
        return [0 if i in self.full else 2 * self.hashes * 8 for i in range(len(self.features))]
