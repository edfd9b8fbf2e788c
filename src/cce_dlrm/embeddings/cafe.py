"""``cafe``: hot ids get rows of their own, the rest share hashed rows (Zhang et al., SIGMOD 2024).

CAFE ("Towards Compact, Adaptive, and Fast Embedding for Large-scale Recommendation
Models") keeps a HotSketch of id importance (accumulated gradient norms): a table of
``W`` buckets of ``c`` slots, each slot holding an id and its score. Here every slot owns one
row of a hot table, so an id present in the sketch ("hot") has a row of its own::

    e(i) = T[ c*b(i) + s ]           if i sits in slot s of its bucket b(i) = h_b(i) mod W
    e(i) = T[ H + h(i) mod r ]       otherwise (shared hashed rows)

``T`` is one torchrec table of ``H + r`` rows per compressed feature (``H = W*c`` hot rows,
then ``r`` hashed rows). Importance: after every training step the L2 norm of the gradient of
each sample's output vector (the gradient its row receives) is added to that id's score
(gathered from every rank, so every rank holds the same sketch; the sketch and the migrations
are updated every ``update_every`` steps from the norms recorded since). Insertion follows the
sketch's SpaceSaving rule: an id not in the sketch enters its bucket's empty slot, or else
replaces the bucket's lowest-scored slot, inheriting that score plus its own. Migration: an
id that enters a slot starts from its current shared (hashed) vector, copied into the slot's
hot row; an evicted id falls back to its hashed row (its hot vector is dropped, as in CAFE).

Budget rule (``P`` per compressed feature): ``floor(P/d)`` rows in all; ``hot_share`` of them
(rounded down to whole buckets) are hot rows, the rest hashed: ``(H + r) * d <= P``. Features
whose full table fits stay full.

Auxiliary memory: the sketch, 12 bytes per slot (int64 id, float32 score), and two hash
constants per feature; it is what decides hotness, so no per-id state is stored.

Init rule: the table uniform with std ``init_std`` (hot and hashed rows alike), so vectors
start with coordinate std ``init_std``.
Effective step at init (``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d = 16;
1 for a full table): about 1.0 (at init no id is hot yet).

Deviations from the paper: one migration per bucket per step (the highest-scored newcomer
of the bucket; the paper inserts ids one by one), no multi-level hashing for medium ids,
and every sketch slot is a hot row (the paper can keep more candidates than hot rows). With
SpaceSaving's always-replace rule the lowest-scored slot of a full bucket turns over whenever
a newcomer arrives; ids with large accumulated scores keep their rows.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import (
    ConfigError,
    FeatureGroup,
    FeatureLayout,
    FeatureSpec,
    TableMethod,
    TrainContext,
    feature_budget,
    fits_full,
)
from cce_dlrm.embeddings.hash_family import draw_hash_constants, universal_hash

EMPTY = -1


def cafe_sizes(budget: int, dim: int, hot_share: float, slots: int) -> tuple[int, int]:
    """``(W, r)``: sketch buckets (``W*slots`` hot rows) and shared hashed rows.

    >>> cafe_sizes(16_000, 16, 0.5, 4)
    (125, 500)
    """
    total = budget // dim
    buckets = int(total * hot_share) // slots
    return buckets, total - buckets * slots


class CAFEEmbedding(TableMethod):
    """Sketch-selected hot rows and shared hashed rows in one table per compressed feature."""

    rewrites_table_rows = True   # migrations write hot rows: SGD only

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None, *,
                 hot_share: float = 0.5, slots_per_bucket: int = 4, update_every: int = 1):
        if not 0 < hot_share < 1 or slots_per_bucket < 1 or update_every < 1:
            raise ConfigError(f"cafe: hot_share must be in (0, 1), slots_per_bucket and update_every >= 1, got "
                              f"{hot_share}, {slots_per_bucket}, {update_every}")
        self.hot_share, self.slots, self.update_every = float(hot_share), int(slots_per_bucket), int(update_every)
        self.compressed = [i for i, f in enumerate(features) if not fits_full(f.num_ids, dim, max_table_params)]
        self.buckets = self.hashed_rows = 0
        if self.compressed:
            self.buckets, self.hashed_rows = cafe_sizes(int(max_table_params), dim, hot_share, self.slots)
            if self.buckets < 1 or self.hashed_rows < 1:
                raise ConfigError(f"cafe: max_table_params={max_table_params} holds {int(max_table_params) // dim} "
                                  f"rows: too few for one bucket of {self.slots} hot rows plus hashed rows")
        super().__init__(features, dim, max_table_params, init_std, seed, device)
        real = None if device is None else torch.device(device)
        buffer_device = "cpu" if real is None or real.type == "meta" else real
        a, b = draw_hash_constants(seed, (len(self.features), 2))  # [:, 0] bucket hash, [:, 1] row hash
        self.register_buffer("hash_a", a.to(buffer_device))
        self.register_buffer("hash_b", b.to(buffer_device))
        fc = len(self.compressed)
        self.register_buffer("sketch_ids", torch.full((fc, self.buckets, self.slots), EMPTY, dtype=torch.int64,
                                                      device=buffer_device))
        self.register_buffer("sketch_scores", torch.zeros(fc, self.buckets, self.slots, device=buffer_device))
        self.register_buffer("_compressed", torch.tensor(self.compressed, dtype=torch.int64, device=buffer_device),
                             persistent=False)
        # slot of each feature in the sketch (-1: a full table)
        slot_of = [self.compressed.index(i) if i in self.compressed else -1 for i in range(len(self.features))]
        self.register_buffer("_sketch_row", torch.tensor(slot_of, dtype=torch.int64, device=buffer_device),
                             persistent=False)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def layout(self, index: int, feature: FeatureSpec) -> FeatureLayout:
        if fits_full(feature.num_ids, self.dim, self.max_table_params):
            return FeatureLayout(rows=((feature.num_ids,),))
        return FeatureLayout(rows=((self.buckets * self.slots + self.hashed_rows,),))

    # --- id -> row ----------------------------------------------------------------
    def _bucket(self, ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """ids (Fg, B) of compressed features -> their sketch bucket (Fg, B)."""
        return universal_hash(ids, self.hash_a[feats, 0].view(-1, 1), self.hash_b[feats, 0].view(-1, 1),
                              self.buckets)

    def hot_rows(self, ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """ids (Fg, B) of compressed features -> their hot row, or -1 where not in the sketch."""
        bucket = self._bucket(ids, feats)
        sk = self._sketch_row[feats].view(-1, 1)
        stored = self.sketch_ids[sk, bucket]  # (Fg, B, c)
        match = stored == ids.unsqueeze(-1)
        slot = match.to(torch.int64).argmax(-1)
        return torch.where(match.any(-1), bucket * self.slots + slot, torch.full_like(slot, -1))

    def indices(self, group: FeatureGroup, ids: torch.Tensor) -> torch.Tensor:
        feats = self.group_features(group)
        ids = ids.to(torch.int64)
        if not self.compressed:
            return ids.view(ids.shape[0], 1, 1, -1)
        full = self._sketch_row[feats].view(-1, 1) < 0
        shared = self.buckets * self.slots + universal_hash(
            ids, self.hash_a[feats, 1].view(-1, 1), self.hash_b[feats, 1].view(-1, 1), self.hashed_rows)
        hot = self.hot_rows(ids, feats)  # meaningless for full features, which `full` overrides
        rows = torch.where(hot >= 0, hot, shared)
        return torch.where(full, ids, rows).view(ids.shape[0], 1, 1, -1)

    # --- importance -----------------------------------------------------------------
    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """features: KJT (F keys, one id each) -> (B, F, d); in training, records gradient norms."""
        out = super().forward(features)
        if self.compressed and self.training and out.requires_grad:
            ids = features.values().view(len(self.features), -1)[self._compressed].detach().to(torch.int64)

            def record(grad: torch.Tensor) -> None:
                norms = grad.detach().index_select(1, self._compressed).norm(dim=-1).t()  # (Fc, B)
                self._pending.append((ids, norms.to(self.sketch_scores.dtype)))
                # training consumes them every `update_every` steps; forward/backward passes
                # without on_train_step (benchmarks) must not grow this list without bound
                del self._pending[:-self.update_every]

            out.register_hook(record)
        return out

    def on_train_step(self, step: int, total_steps: int, context: TrainContext) -> dict[str, float]:
        if not self.compressed or step % self.update_every:
            return {}
        pending, self._pending = self._pending, []
        fc = len(self.compressed)
        ids = torch.cat([p[0] for p in pending], dim=1) if pending else torch.zeros(fc, 0, dtype=torch.int64)
        norms = torch.cat([p[1] for p in pending], dim=1) if pending else torch.zeros(fc, 0)
        if dist.is_initialized() and dist.get_world_size() > 1:
            # every rank must hold the same sketch: update it from every rank's ids
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (ids.cpu(), norms.cpu()))
            ids = torch.cat([g[0] for g in gathered], dim=1)
            norms = torch.cat([g[1] for g in gathered], dim=1)
        device = self.sketch_ids.device
        moves = self.update_sketch(ids.to(device), norms.to(device))
        if moves:
            self._migrate(moves, context)
        return {"cafe/migrations": float(sum(len(m[1]) for m in moves.values())),
                "cafe/hot_ids": float((self.sketch_ids != EMPTY).sum())}

    def update_sketch(self, ids: torch.Tensor, scores: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Adds ``scores`` (Fc, N) of ``ids`` (Fc, N); returns {feature slot: (hot rows, new ids)} moved in."""
        moves = {}
        with torch.no_grad():
            for k, f in enumerate(self.compressed):
                uniq, inverse = torch.unique(ids[k], return_inverse=True)
                if uniq.numel() == 0:
                    continue
                total = torch.zeros(uniq.numel(), device=ids.device).index_add_(0, inverse, scores[k])
                feats = torch.full((1,), f, dtype=torch.int64, device=ids.device)
                hot = self.hot_rows(uniq.view(1, -1), feats)[0]
                flat_ids, flat_scores = self.sketch_ids[k].view(-1), self.sketch_scores[k].view(-1)
                present = hot >= 0
                flat_scores.index_add_(0, hot[present], total[present])
                # newcomers: the highest-scored per bucket enters (empty slot, or the lowest-scored)
                new, new_scores = uniq[~present], total[~present]
                if new.numel() == 0:
                    continue
                bucket = self._bucket(new.view(1, -1), feats)[0]
                best = torch.full((self.buckets,), -1.0, device=ids.device).scatter_reduce(
                    0, bucket, new_scores, reduce="amax")
                winner = (new_scores == best[bucket]) & (new_scores > 0)
                # ties within a bucket: the smallest id wins (`new` is sorted; the same on every rank)
                chosen = torch.full((self.buckets,), -1, dtype=torch.int64, device=ids.device)
                cand = torch.nonzero(winner).flatten()
                chosen.scatter_reduce_(0, bucket[cand], cand, reduce="amin", include_self=False)
                buckets = torch.nonzero(chosen >= 0).flatten()
                if buckets.numel() == 0:
                    continue
                cand = chosen[buckets]
                scores_b = self.sketch_scores[k, buckets]  # (nb, c); empty slots score 0
                empty = self.sketch_ids[k, buckets] == EMPTY
                slot = torch.where(empty.any(-1), empty.to(torch.int64).argmax(-1), scores_b.argmin(-1))
                inherited = torch.where(empty.any(-1), torch.zeros_like(new_scores[cand]),
                                        scores_b.gather(1, slot.view(-1, 1)).flatten())
                rows = buckets * self.slots + slot
                flat_ids[rows] = new[cand]
                flat_scores[rows] = inherited + new_scores[cand]
                moves[k] = (rows, new[cand])
        return moves

    def _migrate(self, moves: dict, context: TrainContext) -> None:
        """Copies each newcomer's shared (hashed) vector into its new hot row."""
        tables = context.tables if context.tables is not None else self.table_access()
        for k, f in enumerate(self.compressed):  # every rank reads/writes the same tables in order
            if k not in moves:
                continue
            name = f"{self.features[f].name}__s0c0"
            weight = tables.read(name)
            rows, new_ids = moves[k]
            feats = torch.full((1,), f, dtype=torch.int64)
            shared = self.buckets * self.slots + universal_hash(
                new_ids.cpu().view(1, -1), self.hash_a[feats, 1].cpu().view(-1, 1),
                self.hash_b[feats, 1].cpu().view(-1, 1), self.hashed_rows)[0]
            weight[rows.cpu()] = weight[shared]
            tables.write(name, weight)

    # --- accounting -----------------------------------------------------------------
    def aux_bytes(self) -> list[int]:
        """The sketch (int64 id + float32 score per slot) and two hash constants per hash."""
        per = self.buckets * self.slots * 12 + 2 * 2 * 8
        return [per if i in self.compressed else 0 for i in range(len(self.features))]
