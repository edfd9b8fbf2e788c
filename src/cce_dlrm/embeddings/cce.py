"""``cce``: Clustered Compositional Embeddings (Tsang & Ahle, NeurIPS 2023).

The vector of id ``i`` is ``concat_j (A_j[g_j(i)] + B_j[h_j(i)])`` over ``c`` columns, where
``A_j`` and ``B_j`` are ``k x w`` torchrec tables (``k = floor(P / 2d)``, ``w = d / c``). At
start both maps are seeded universal hashes (nothing stored). A clustering round (METHODS.md,
"CCE in detail"), per column:

1. ``v(i) = A_j[g_j(i)] + B_j[h_j(i)]`` from the *current* maps, for a sample of
   ``min(n, max_points_per_centroid * k)`` ids;
2. FAISS k-means of those vectors: centroids ``C`` (``k x w``);
3. every id's nearest centroid (FAISS search, in batches) becomes ``g_j(i)``, stored in the
   narrowest integer type that holds ``k`` (int16 up to 32,767 clusters, else int32);
4. ``h_j`` becomes a fresh hash, its seed derived from (seed, round): no storage;
5. ``A_j := C``; ``B_j :=`` mean residual ``v(i) - C[g_j(i)]`` per new ``h_j`` bucket (zero
   where empty), or zero with ``residual: false``.

Every ``v(i)`` is computed from the old maps and tables, which are replaced only after all
columns of all features are done, so old and new maps are never mixed. Under model
parallelism rank 0 computes the round and broadcasts the maps and tables; every rank then
writes the tables through ``context.tables`` (each its own shards) and swaps in the maps.

Optimizer state: the paper's (and this project's default) optimizer is SGD, which has none.
The round rewrites only ``A_j`` and ``B_j``; every other parameter is untouched. Under
``trainer.optimizer=rowwise_adagrad`` the round also zeroes the Adagrad accumulators of the
rewritten ``A_j`` and ``B_j`` (every row, as for tables that start training), the same way
at every round; every other parameter keeps its state.

Init rule: ``A_j`` and ``B_j`` (two summed slots) uniform with std ``init_std / sqrt(2)``
each, so ``A_j + B_j`` has coordinate std ``init_std`` (base.py's rule for sums). Both
tables receive the full gradient of the sum, so the effective step at init
(``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d = 16; 1 for a full table):
about 2.0, twice hashing's (METHODS.md, "Fair comparison").

Example::

    emb = CCEEmbedding([FeatureSpec("cat_0", 100_000)], dim=16, max_table_params=16_000,
                       init_std=0.05, seed=0, columns=4)     # k = 500 rows per sub-table
    emb(kjt).shape                                          # (B, 1, 16)
    emb.cluster(TrainContext(tables=emb.table_access()))    # one round, outside training
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from cce_dlrm.clustering import CentroidIndex, share_moved, train_kmeans, use_two_level
from cce_dlrm.embeddings.base import (
    ConfigError,
    FeatureGroup,
    FeatureLayout,
    FeatureSpec,
    TableMethod,
    TrainContext,
    check_columns,
    feature_budget,
    fits_full,
)
from cce_dlrm.embeddings.hash_family import draw_hash_constants, universal_hash

log = logging.getLogger(__name__)

# tags that keep the seeds of the different random choices apart
_G_HASH, _H_HASH, _SAMPLE, _KMEANS = 0xCCE1, 0xCCE2, 0xCCE3, 0xCCE4
#: what ``cluster_every`` counts: batches, epochs, or a fraction of the planned training
SCHEDULE_UNITS = ("batches", "epochs", "training")
#: ids per step of the assignment pass: bounds the memory of a round whatever ``n`` is
ASSIGN_BATCH = 1 << 20


def derived_seed(*parts: int) -> int:
    """A 32-bit seed from integers (seed, tag, round, ...): the same on every rank and rerun."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def map_dtype(k: int) -> torch.dtype:
    """The narrowest integer type holding cluster ids ``0..k-1``."""
    return torch.int16 if k <= torch.iinfo(torch.int16).max else torch.int32


@dataclass
class ColumnRound:
    """What one column's clustering produced: new maps/tables and what to log."""

    labels: torch.Tensor    # (n,) int64, the new g_j
    centroids: torch.Tensor  # (k, w), the new A_j
    residuals: torch.Tensor  # (k, w), the new B_j
    objective: float
    iterations: int
    moved: float
    gpu: bool
    kmeans_seconds: float


def cluster_column(current: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], n: int, k: int,
                   new_bucket: Callable[[torch.Tensor], torch.Tensor], sample: torch.Tensor, *,
                   residual: bool, kmeans_args: dict, buckets: int | None = None,
                   batch: int = ASSIGN_BATCH) -> ColumnRound:
    """Steps 2-5 of a round for one column of ``n`` ids, ``k`` rows of A (and of B).

    ``current(ids)`` gives ``(v(ids), g(ids))`` from the *old* maps and tables, ``(m, w)`` and
    ``(m,)``; ``new_bucket(ids)`` gives the new ``h`` rows ``(m,)`` in ``[0, buckets)``
    (``buckets`` defaults to ``k``, as in CCE; the tests use more); ``sample`` holds the ids
    k-means trains on. Ids are visited ``batch`` at a time, so memory is bounded by ``batch``
    (plus the ``(n,)`` label arrays).
    """
    buckets = k if buckets is None else buckets
    vectors = current(sample)[0]
    device, dtype = vectors.device, vectors.dtype
    km = train_kmeans(vectors, k, **kmeans_args)
    index = CentroidIndex(km.centroids, gpu="auto" if km.gpu else None)
    centroids = torch.from_numpy(km.centroids).to(device)
    labels = torch.empty(n, dtype=torch.int64, device=device)
    old_labels = torch.empty(n, dtype=torch.int64, device=device)
    sums = torch.zeros(buckets, vectors.shape[1], dtype=dtype, device=device)
    counts = torch.zeros(buckets, dtype=torch.int64, device=device)
    for start in range(0, n, batch):
        ids = torch.arange(start, min(n, start + batch), device=device)
        vectors, old_g = current(ids)
        assigned = torch.from_numpy(index.search(vectors)[0]).to(device)
        labels[start : start + len(ids)] = assigned
        old_labels[start : start + len(ids)] = old_g
        if residual:
            bucket = new_bucket(ids)
            sums.index_add_(0, bucket, vectors - centroids.index_select(0, assigned))
            counts += torch.bincount(bucket, minlength=buckets)
    residuals = sums / counts.clamp(min=1).unsqueeze(1).to(dtype)
    return ColumnRound(labels, centroids.to(dtype), residuals, km.objective, km.iterations,
                       share_moved(old_labels, labels, k, k), km.gpu, km.seconds)


class CCEEmbedding(TableMethod):
    """CCE with ``columns`` columns; features whose full table fits stay full.

    Args (besides the contract's): ``columns`` (c); ``cluster_every``: the interval between
    rounds, counted in ``cluster_unit`` (``batches``, ``epochs`` or ``training``: a fraction of
    the planned steps); ``max_rounds``: at most this many rounds (None: no limit);
    ``last_cluster``: no round after this fraction of training; ``residual``: ``B := mean
    residual`` (True, this project's variant) or ``0`` (False, the paper's Algorithm 3); ``niter``,
    ``max_points_per_centroid``: FAISS k-means; ``two_level_above_cap``: caps above which k-means is
    two-level (None: always flat), see ``cce_dlrm.clustering.kmeans``.
    """

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None, *,
                 columns: int = 4, cluster_every: float = 0.25, cluster_unit: str = "epochs",
                 max_rounds: int | None = 2, last_cluster: float = 1.0,
                 residual: bool = False, niter: int = 50, max_points_per_centroid: int = 256,
                 two_level_above_cap: int | None = 160_000):
        check_columns("cce", dim, columns)
        if not 0.0 <= last_cluster <= 1.0:
            raise ConfigError(f"cce: last_cluster is a fraction of training, got {last_cluster}")
        if cluster_every < 0:
            raise ConfigError(f"cce: cluster_every must be >= 0 (0: never), got {cluster_every}")
        if cluster_unit not in SCHEDULE_UNITS:
            raise ConfigError(f"cce: cluster_unit must be one of {', '.join(SCHEDULE_UNITS)}, "
                              f"got {cluster_unit!r}")
        if cluster_unit == "batches" and cluster_every and cluster_every != int(cluster_every):
            raise ConfigError(f"cce: cluster_every={cluster_every} batches is not a whole number")
        if max_rounds is not None and int(max_rounds) < 0:
            raise ConfigError(f"cce: max_rounds must be >= 0 or null, got {max_rounds}")
        if max_table_params is not None and any(
            not fits_full(f.num_ids, dim, max_table_params) and int(max_table_params) < 2 * dim
            for f in features
        ):
            raise ConfigError(f"cce: max_table_params={max_table_params} is below 2*dim={2 * dim}: "
                              "A and B need at least one row each")
        self.columns = int(columns)
        super().__init__(features, dim, max_table_params, init_std, seed, device)
        self.cluster_every = float(cluster_every)
        self.cluster_unit = cluster_unit
        self.max_rounds = None if max_rounds is None else int(max_rounds)
        self.last_cluster = float(last_cluster)
        self.residual = bool(residual)
        self.niter = int(niter)
        self.max_points_per_centroid = int(max_points_per_centroid)
        self.two_level = use_two_level(max_table_params, two_level_above_cap)

        num = len(self.features)
        self.compressed = [i for i, f in enumerate(self.features)
                           if not fits_full(f.num_ids, dim, max_table_params)]
        self.rows = [self.layouts[i].rows[0][0] for i in range(num)]  # k (or n if full)
        offsets, total = [0] * num, 0
        for i in self.compressed:
            offsets[i], total = total, total + self.features[i].num_ids
        self.total_ids = total
        k_max = max((self.rows[i] for i in self.compressed), default=1)

        buffer_device = "cpu" if device is None or torch.device(device).type == "meta" else device
        g_a, g_b = draw_hash_constants(derived_seed(seed, _G_HASH), (num, self.columns))
        h_a, h_b = self._h_constants(0)
        for name, value in (("g_a", g_a), ("g_b", g_b), ("h_a", h_a), ("h_b", h_b)):
            self.register_buffer(name, value.to(buffer_device))
        self.register_buffer("cluster_round", torch.zeros((), dtype=torch.int64, device=buffer_device))
        # the stored cluster ids of every compressed feature, stacked: (sum of n, c); empty
        # until the first round, when g stops being a hash
        self.register_buffer("cluster_ids", torch.empty(0, self.columns, dtype=map_dtype(k_max),
                                                        device=buffer_device))
        self.register_buffer("_rows", torch.tensor(self.rows, device=buffer_device), persistent=False)
        self.register_buffer("_offsets", torch.tensor(offsets, device=buffer_device), persistent=False)

    # --- layout and lookup --------------------------------------------------------
    def layout(self, index: int, feature: FeatureSpec) -> FeatureLayout:
        if fits_full(feature.num_ids, self.dim, self.max_table_params):
            return FeatureLayout(rows=((feature.num_ids,),))
        k = feature_budget(feature.num_ids, self.dim, self.max_table_params) // (2 * self.dim)
        return FeatureLayout(rows=((k,) * self.columns, (k,) * self.columns), reducer="sum")

    @property
    def clustered(self) -> bool:
        return self.cluster_ids.shape[0] > 0

    def _h_constants(self, round_: int) -> tuple[torch.Tensor, torch.Tensor]:
        """h's constants for a round, (F, c) each: a fresh hash per round, derived, not stored."""
        return draw_hash_constants(derived_seed(self.seed, _H_HASH, round_),
                                   (len(self.features), self.columns))

    def indices(self, group: FeatureGroup, ids: torch.Tensor) -> torch.Tensor:
        """ids (Fg, B) -> rows (Fg, 2, c, B): slot 0 is g (A's row), slot 1 is h (B's row)."""
        if group.key[0] == 1:  # features that fit: their full table
            return ids.to(torch.int64).view(ids.shape[0], 1, 1, ids.shape[1])
        feats = self.group_features(group)
        x = ids.to(torch.int64).unsqueeze(1)  # (Fg, 1, B)
        rows = self._rows[feats].view(-1, 1, 1)
        h = universal_hash(x, self.h_a[feats].unsqueeze(-1), self.h_b[feats].unsqueeze(-1), rows)
        if self.clustered:
            flat = (self._offsets[feats].view(-1, 1) + x.squeeze(1)).reshape(-1)
            g = self.cluster_ids[flat].to(torch.int64).view(ids.shape[0], ids.shape[1], -1)
            g = g.permute(0, 2, 1)
        else:
            g = universal_hash(x, self.g_a[feats].unsqueeze(-1), self.g_b[feats].unsqueeze(-1), rows)
        return torch.stack((g, h), dim=1)

    def _old_rows(self, f: int, j: int, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The current g_j, h_j of feature f for ids (m,) int64: rows of A_j and B_j."""
        k = self.rows[f]
        if self.clustered:
            g = self.cluster_ids[self._offsets[f] + ids, j].to(torch.int64)
        else:
            g = universal_hash(ids, self.g_a[f, j], self.g_b[f, j], k)
        return g, universal_hash(ids, self.h_a[f, j], self.h_b[f, j], k)

    # --- accounting -----------------------------------------------------------------
    def aux_bytes(self) -> list[int]:
        """Per compressed feature: 4 hash constants per column, plus its stored cluster ids."""
        out = [0] * len(self.features)
        per_id = self.columns * self.cluster_ids.element_size() if self.clustered else 0
        for f in self.compressed:
            out[f] = 4 * self.columns * 8 + self.features[f].num_ids * per_id
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint taken after a round holds n*c cluster ids: make room before loading
        saved = state_dict.get(prefix + "cluster_ids")
        if saved is not None and saved.shape != self.cluster_ids.shape:
            self.cluster_ids = torch.empty(saved.shape, dtype=saved.dtype, device=self.cluster_ids.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- clustering -----------------------------------------------------------------
    def round_interval(self, total_steps: int, steps_per_epoch: int) -> int:
        """Batches between rounds (0: never), from ``cluster_every`` in its unit."""
        if not self.cluster_every:
            return 0
        if self.cluster_unit == "batches":
            return int(self.cluster_every)
        if self.cluster_unit == "training":
            return max(1, round(self.cluster_every * total_steps))
        if steps_per_epoch <= 0:
            raise ConfigError("cce: cluster_unit=epochs needs the number of batches per epoch")
        return max(1, round(self.cluster_every * steps_per_epoch))

    def is_round_step(self, step: int, total_steps: int, steps_per_epoch: int, rounds_done: int) -> bool:
        """Does the schedule put a round after batch ``step`` (``rounds_done`` rounds so far)?"""
        every = self.round_interval(total_steps, steps_per_epoch)
        return (bool(every) and bool(self.compressed) and step % every == 0
                and step <= self.last_cluster * total_steps
                and (self.max_rounds is None or rounds_done < self.max_rounds))

    def on_train_step(self, step: int, total_steps: int, context: TrainContext) -> dict[str, float]:
        if not self.is_round_step(step, total_steps, context.steps_per_epoch, int(self.cluster_round)):
            return {}
        return self.cluster(context, step)

    def cluster(self, context: TrainContext, step: int = 0) -> dict[str, float]:
        """One clustering round of every compressed feature (collective: every rank calls it)."""
        started = time.perf_counter()
        tables = context.tables if context.tables is not None else self.table_access()
        round_ = int(self.cluster_round) + 1
        new_h_a, new_h_b = self._h_constants(round_)
        work = self.h_a.device
        mine = [t for t in self.sub_tables if t.feature in set(self.compressed)]
        old = {t.name: tables.read(t.name).to(work) for t in mine}  # same order on every rank
        starts = np.cumsum([0] + [t.rows * t.dim for t in mine])
        where = {t.name: (int(s), t.rows, t.dim) for t, s in zip(mine, starts)}
        maps = torch.zeros(self.total_ids, self.columns, dtype=self.cluster_ids.dtype, device=work)
        flat_tables = torch.zeros(int(starts[-1]), device=work)
        # per feature and column: objective, moved share, iterations, gpu, k-means seconds
        stats = torch.zeros(len(self.compressed), self.columns, 5, dtype=torch.float64, device=work)
        if context.rank == 0:
            with torch.no_grad():
                for fi, f in enumerate(self.compressed):
                    sample = self._sample(f, round_, work)
                    offset = int(self._offsets[f])
                    for j in range(self.columns):
                        a_name = f"{self.features[f].name}__s0c{j}"
                        b_name = f"{self.features[f].name}__s1c{j}"
                        col = self._cluster_column(f, j, old[a_name], old[b_name],
                                                   (new_h_a[f, j], new_h_b[f, j]), sample, round_)
                        maps[offset : offset + self.features[f].num_ids, j] = col.labels.to(maps.dtype)
                        for name, value in ((a_name, col.centroids), (b_name, col.residuals)):
                            s, r, w = where[name]
                            flat_tables[s : s + r * w] = value.reshape(-1)
                        stats[fi, j] = torch.tensor([col.objective, col.moved, col.iterations,
                                                     float(col.gpu), col.kmeans_seconds],
                                                    dtype=torch.float64)
        # every rank ends the round with rank 0's maps, tables and numbers (int16 maps go as
        # bytes: not every backend broadcasts int16)
        maps = context.broadcast(maps.view(torch.uint8), 0).view(maps.dtype)
        flat_tables = context.broadcast(flat_tables, 0)
        stats = context.broadcast(stats, 0).cpu()
        for name, (s, r, w) in where.items():
            tables.write(name, flat_tables[s : s + r * w].view(r, w))
        tables.reset_optimizer_state(list(where))  # A_j, B_j start afresh (SGD: nothing to reset)
        self.cluster_ids = maps
        self.h_a.copy_(new_h_a)
        self.h_b.copy_(new_h_b)
        self.cluster_round.fill_(round_)
        return self._report(stats, time.perf_counter() - started, round_, step, context)

    def _sample(self, f: int, round_: int, device) -> torch.Tensor:
        """The ids whose vectors k-means sees: min(n, max_points_per_centroid * k) of them."""
        n = self.features[f].num_ids
        m = min(n, self.max_points_per_centroid * self.rows[f])
        if m == n:
            return torch.arange(n, device=device)
        rng = np.random.default_rng(derived_seed(self.seed, _SAMPLE, round_, f))
        return torch.from_numpy(np.sort(rng.choice(n, size=m, replace=False))).to(device)

    def _cluster_column(self, f: int, j: int, table_a: torch.Tensor, table_b: torch.Tensor,
                        new_h: tuple[torch.Tensor, torch.Tensor], sample: torch.Tensor,
                        round_: int) -> ColumnRound:
        k = self.rows[f]

        def current(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            g, h = self._old_rows(f, j, ids)  # the maps as they were before this round
            return table_a.index_select(0, g) + table_b.index_select(0, h), g

        kmeans_args = dict(niter=self.niter, max_points_per_centroid=self.max_points_per_centroid,
                           seed=derived_seed(self.seed, _KMEANS, round_, f, j),
                           two_level=self.two_level)
        return cluster_column(current, self.features[f].num_ids, k,
                              lambda ids: universal_hash(ids, new_h[0], new_h[1], k), sample,
                              residual=self.residual, kmeans_args=kmeans_args)

    def _report(self, stats: torch.Tensor, seconds: float, round_: int, step: int,
                context: TrainContext) -> dict[str, float]:
        sizes = torch.tensor([self.features[f].num_ids for f in self.compressed], dtype=torch.float64)
        moved = float((stats[:, :, 1].mean(dim=1) * sizes).sum() / sizes.sum())
        out = {
            "cluster/round": float(round_),
            "cluster/seconds": seconds,
            "cluster/objective": float(stats[:, :, 0].sum()),
            "cluster/moved": moved,
            "cluster/iterations": float(stats[:, :, 2].mean()),
            "cluster/gpu": float(stats[:, :, 3].max()),
            "cluster/kmeans_seconds": float(stats[:, :, 4].sum()),
        }
        for fi, f in enumerate(self.compressed):
            name = self.features[f].name
            context.log(f"cluster/{name}/objective", float(stats[fi, :, 0].sum()), step)
            context.log(f"cluster/{name}/moved", float(stats[fi, :, 1].mean()), step)
            context.log(f"cluster/{name}/iterations", float(stats[fi, :, 2].mean()), step)
        if context.rank == 0:
            log.info("cce round %d at step %d: %.1f s, objective %.4g, %.1f%% of ids moved, "
                     "%.1f k-means iterations on average (%s)", round_, step, seconds,
                     out["cluster/objective"], 100 * moved, out["cluster/iterations"],
                     "GPU" if out["cluster/gpu"] else "CPU")
        return out
