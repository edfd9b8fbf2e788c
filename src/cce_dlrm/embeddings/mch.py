"""``mch``: torchrec's managed-collision tables (``torchrec.modules.mc_modules``).

Each compressed feature gets a table of ``r = floor(P/d)`` rows and a
``MCHManagedCollisionModule`` that remaps raw ids to rows: the module keeps up to ``r - 1``
raw ids, each with a row of its own (``T[m(i)]``), and sends every other id to the table's
last row, shared by all ids that are not kept (``T[r - 1]``). Every ``eviction_interval``
training steps the ids seen since the last eviction are merged with the kept ones and the
policy keeps the ``r - 1`` best: ``lfu`` ranks by the number of times an id was seen,
``distance_lfu`` by that count divided by ``(steps since last seen + 1) ** decay_exponent``.
A newly admitted id takes the row of the id it evicts; under DistributedModelParallel that
row is reset to the init distribution first (torchrec resets evicted rows in its sharded
module; the unsharded module, used only in unit tests, leaves them as they are).

The modules are torchrec's, wrapped in a ``ManagedCollisionEmbeddingBagCollection``; its
sharder supports only row-wise sharding, so every managed-collision table is sharded row-wise
(each rank's shard has its own remapper, its own share ``r / world_size`` of the rows and its
own shared last row, so ``r - world_size`` ids are kept in all; ids are split over the shards
by value, in ``world_size`` equal blocks of the feature's id range). Features whose full
table fits ``P`` keep a plain full table (a torchrec ``EmbeddingBagCollection``, sharded like
any other method's tables).

Source: torchrec's managed collision modules (``MCHManagedCollisionModule``, "MCH" = managed
collision handling), the production way to serve more ids than rows. The idea of giving
frequent ids collision-free rows and evicting the rest by frequency is that of Monolith's
collisionless embedding tables (Liu et al., "Monolith: Real Time Recommendation System With
Collisionless Embedding Table", 2022).

Budget rule: ``r = floor(P/d)`` rows per compressed feature (``P = min(n*d,
max_table_params)``), learned floats ``r*d <= P``; features that fit keep ``n*d``.

Init rule: the shared one (base.py): rows uniform with std ``init_std``, so vectors start
with coordinate std ``init_std``. Unsharded, the tables are filled from ``seed`` (base's
deterministic fill); under DMP torchrec fills each shard with the table's ``init_fn``, the
same uniform distribution, from the global RNG (seeded by the run), and evicted rows are
drawn again from it. Effective step at init (``scripts/effective_step.py``: lr 1, 20,000 ids,
P = 16,000, d = 16; 1 for a full table): about 0.84 +- 0.10 (the first training forward keeps
999 of the batch's 1,950 distinct ids, which move by 1; the others share one row, whose pull
has zero mean and a wide spread).

Auxiliary memory (per compressed feature): the remapping state, int64 per row: the sorted
kept raw ids, their rows, and the policy's metadata (``counts``; ``distance_lfu`` also
``last_access_iter``), i.e. ``8 * r * (2 + metadata)`` bytes. The transient history of ids
seen since the last eviction (``1.25 * ids per step * eviction_interval`` int64, not part of
the state torchrec checkpoints) is working memory, not counted.

Checkpoints: the remapping state is in the DMP state dict (torchrec exposes each rank's
share as a row-wise ShardedTensor) and reloads with it; the history since the last eviction
is not, so a run resumed from a checkpoint continues exactly only when the checkpoint was
written right after an eviction (always with ``eviction_interval: 1``, the default).

Table precision: fp32 only (the method is not a TableMethod; fp16 is refused by the entry
point).

Example::

    emb = MCHEmbedding([FeatureSpec("cat_0", 100_000)], dim=16, max_table_params=16_000,
                       init_std=0.05, seed=0)   # 1,000 rows: 999 kept ids + 1 shared row
    emb(kjt).shape                              # (B, 1, 16)
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.mc_embeddingbag import ManagedCollisionEmbeddingBagCollectionSharder
from torchrec.distributed.types import ShardingType
from torchrec.modules.mc_embedding_modules import ManagedCollisionEmbeddingBagCollection
from torchrec.modules.mc_modules import (
    DistanceLFU_EvictionPolicy,
    LFU_EvictionPolicy,
    ManagedCollisionCollection,
    MCHManagedCollisionModule,
)
from torchrec.sparse.jagged_tensor import JaggedTensor

from cce_dlrm.embeddings.base import (
    ConfigError,
    EmbeddingMethod,
    feature_budget,
    fill_uniform_shard,
    fits_full,
)

POLICIES = ("lfu", "distance_lfu")


def _uniform_init(std: float):
    half_width = std * math.sqrt(3.0)
    return partial(torch.nn.init.uniform_, a=-half_width, b=half_width)


class _RowWiseTablesSharder(EmbeddingBagCollectionSharder):
    """torchrec's collection sharder, also offering row-wise sharding on CPU.

    torchrec lists row-wise for CUDA only, so its managed-collision sharder (row-wise only)
    offers nothing on CPU; fbgemm's CPU kernels serve row-wise shards all the same
    (tests/test_method_mch.py trains mch on 2 CPU processes).
    """

    def sharding_types(self, compute_device_type: str) -> list[str]:
        types = super().sharding_types(compute_device_type)
        return types if ShardingType.ROW_WISE.value in types else [*types, ShardingType.ROW_WISE.value]


class _Sharder(ManagedCollisionEmbeddingBagCollectionSharder):
    """torchrec's managed-collision sharder, with row-wise tables on CPU too.

    On CPU it offers only the fused kernel (torchrec's list includes UVM kernels whatever the
    device, which its planner cannot place without a GPU).
    """

    def __init__(self):
        super().__init__(ebc_sharder=_RowWiseTablesSharder())

    def compute_kernels(self, sharding_type: str, compute_device_type: str) -> list[str]:
        kernels = super().compute_kernels(sharding_type, compute_device_type)
        return kernels if compute_device_type == "cuda" else [EmbeddingComputeKernel.FUSED.value]


class MCHEmbedding(EmbeddingMethod):
    """Managed-collision tables of ``floor(P/d)`` rows per feature; features that fit stay full."""

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None, *,
                 eviction_policy: str = "lfu", eviction_interval: int = 1, decay_exponent: float = 1.0):
        super().__init__(features, dim, max_table_params, init_std, seed)
        if eviction_policy not in POLICIES:
            raise ConfigError(f"mch: eviction_policy must be one of {list(POLICIES)}, got {eviction_policy!r}")
        if int(eviction_interval) < 1:
            raise ConfigError(f"mch: eviction_interval must be >= 1 step, got {eviction_interval}")
        if float(decay_exponent) < 0:
            raise ConfigError(f"mch: decay_exponent must be >= 0, got {decay_exponent}")
        self.eviction_policy = eviction_policy
        self.eviction_interval = int(eviction_interval)
        self.decay_exponent = float(decay_exponent)
        self.full = [i for i, f in enumerate(self.features) if fits_full(f.num_ids, dim, max_table_params)]
        self.managed = [i for i in range(len(self.features)) if i not in self.full]
        self.rows = [f.num_ids if i in self.full else feature_budget(f.num_ids, dim, max_table_params) // dim
                     for i, f in enumerate(self.features)]
        # one bucket of ids per rank: each row-wise shard remaps a block of the id range into
        # its own rows, and needs at least one kept id and its shared row
        world = dist.get_world_size() if dist.is_initialized() else 1
        for i in self.managed:
            if self.rows[i] < 2 * world:
                raise ConfigError(f"mch: max_table_params={max_table_params} gives {self.features[i].name} "
                                  f"{self.rows[i]} rows of dim {dim}, fewer than 2 per rank on {world} "
                                  "rank(s) (one kept id and the shared row)")
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.ebc = EmbeddingBagCollection(tables=self._configs(self.full), device=dev) if self.full else None
        self.mc = None
        if self.managed:
            configs = self._configs(self.managed)
            modules = {
                cfg.name: MCHManagedCollisionModule(
                    zch_size=cfg.num_embeddings, device=dev, eviction_policy=self._policy(),
                    eviction_interval=self.eviction_interval,
                    input_hash_size=self.features[i].num_ids, name=cfg.name, buckets=world)
                for i, cfg in zip(self.managed, configs)
            }
            self.mc = ManagedCollisionEmbeddingBagCollection(
                EmbeddingBagCollection(tables=configs, device=dev),
                ManagedCollisionCollection(modules, configs),
                return_remapped_features=False,
            )
        # index buffers hold values even when the tables are built on 'meta' (DMP moves them)
        order = [*self.managed, *self.full]
        self.register_buffer("_managed_idx", torch.tensor(self.managed, dtype=torch.int64), persistent=False)
        self.register_buffer("_full_idx", torch.tensor(self.full, dtype=torch.int64), persistent=False)
        self.register_buffer("_inverse_order", torch.argsort(torch.tensor(order)), persistent=False)
        if dev.type != "meta":
            self.reset_parameters()

    # --- construction -----------------------------------------------------------------
    def _configs(self, indices: list[int]) -> list[EmbeddingBagConfig]:
        return [EmbeddingBagConfig(name=self.features[i].name, embedding_dim=self.dim,
                                   num_embeddings=self.rows[i], feature_names=[self.features[i].name],
                                   pooling=PoolingType.SUM, init_fn=_uniform_init(self.init_std))
                for i in indices]

    def _policy(self):
        if self.eviction_policy == "lfu":
            return LFU_EvictionPolicy()
        return DistanceLFU_EvictionPolicy(decay_exponent=self.decay_exponent)

    def _tables(self) -> list[tuple[nn.Module, list[int]]]:
        """(torchrec collection, its features) pairs; the collections' tables are the features."""
        out = []
        if self.mc is not None:
            out.append((self.mc._embedding_bag_collection, self.managed))
        if self.ebc is not None:
            out.append((self.ebc, self.full))
        return out

    def reset_parameters(self) -> None:
        """Deterministic init of the unsharded tables from ``seed`` (uniform, std ``init_std``)."""
        for collection, indices in self._tables():
            for i in indices:
                name = self.features[i].name
                weight = collection.embedding_bags[name].weight
                fill_uniform_shard(weight.data, self.seed, f"mch.{name}", 0, 0, self.dim, self.init_std)

    # --- what the training code asks of a method (base.EmbeddingMethod) -----------------
    def table_modules(self) -> list[nn.Module]:
        return [m for m in (self.mc, self.ebc) if m is not None]

    def table_names(self) -> list[str]:
        return [self.features[i].name for i in (*self.managed, *self.full)]

    def sharders(self) -> list:
        return [_Sharder()] if self.mc is not None else []

    def allowed_sharding_types(self) -> dict[str, list[str]]:
        """torchrec's managed-collision sharder supports row-wise sharding only."""
        return {self.features[i].name: [ShardingType.ROW_WISE.value] for i in self.managed}

    # --- forward ----------------------------------------------------------------------
    def _kjt(self, ids: torch.Tensor, indices: list[int]) -> KeyedJaggedTensor:
        batch = ids.shape[1]
        keys = [self.features[i].name for i in indices]
        return KeyedJaggedTensor(keys=keys, values=ids.reshape(-1),
                                 lengths=torch.ones(len(keys) * batch, dtype=torch.int32, device=ids.device),
                                 stride=batch, length_per_key=[batch] * len(keys),
                                 offset_per_key=list(range(0, (len(keys) + 1) * batch, batch)))

    def _lookup(self, pooled, indices: list[int]) -> torch.Tensor:
        """A KeyedTensor of the features' pooled vectors -> (B, len(indices), d), in ``indices`` order."""
        # a sharded collection may return its tables in another order: pick them by name
        per_key = pooled.to_dict()
        return torch.stack([per_key[self.features[i].name].float() for i in indices], dim=1)

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """features: KJT (F keys, one id each) -> (B, F, d)."""
        ids = features.values().view(len(self.features), -1).to(torch.int64)
        parts = []
        if self.mc is not None:
            pooled, _ = self.mc(self._kjt(ids.index_select(0, self._managed_idx), self.managed))
            parts.append(self._lookup(pooled, self.managed))
        if self.ebc is not None:
            pooled = self.ebc(self._kjt(ids.index_select(0, self._full_idx), self.full))
            parts.append(self._lookup(pooled, self.full))
        out = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return out.index_select(1, self._inverse_order) if len(parts) > 1 else out

    # --- accounting -------------------------------------------------------------------
    def learned_params(self) -> list[int]:
        return [rows * self.dim for rows in self.rows]

    def aux_bytes(self) -> list[int]:
        """int64 per row: kept raw id, its row, and the policy's metadata (per managed feature)."""
        per_row = 8 * (2 + len(self._policy().metadata_info))
        return [0 if i in self.full else per_row * self.rows[i] for i in range(len(self.features))]

    def remapped_rows(self, feature: int, ids: torch.Tensor) -> torch.Tensor:
        """The rows of the unsharded table of managed feature ``feature`` that ``ids`` look up
        now (no profiling, no eviction); kept ids have rows of their own, others ``rows - 1``."""
        name = self.features[feature].name
        module = self.mc._managed_collision_collection._managed_collision_modules[name]
        jt = JaggedTensor(values=ids.to(torch.int64), lengths=torch.ones(ids.numel(), dtype=torch.int32))
        return module.remap({name: jt})[name].values()
