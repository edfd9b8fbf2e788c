"""``pq``: post-training product quantization of a trained full model (the paper's static baseline).

Training is exactly ``full``: one ``n x d`` torchrec table per feature. After the last step
(``on_train_end``) every feature whose full table exceeds ``P`` is quantized column by
column: its ``n x w`` block (``w = d / c``) is clustered by FAISS k-means into
``k = floor(P / d)`` centroids, and each id keeps the ``c`` codes of its nearest centroids.
The model is then evaluated as it would be deployed, each vector rebuilt from its codes
(``concat_j C_j[code_j(i)]``), without any further training: the point the paper makes is
that PQ cannot be used while training.

Accounting after quantization: ``k * d`` learned floats (the codebooks) and ``n * c`` codes of
auxiliary memory (int16 up to 32,767 centroids, else int32). Before it, the full table's
``n * d``. For evaluation the rebuilt vectors are written into the full tables (so the
lookup stays the fused one); the codes and codebooks are kept as buffers, which are the
compressed model.

Init rule: the shared one (base.py), as ``full``: the table uniform with std ``init_std``.
Effective step at init (``scripts/effective_step.py``: lr 1, 20,000 ids, P = 16,000, d = 16;
1 for a full table): exactly 1, as ``full`` (quantization happens after training).

Example::

    emb = PQEmbedding([FeatureSpec("cat_0", 100_000)], dim=16, max_table_params=16_000,
                      init_std=0.05, seed=0)                   # trains a 100,000 x 16 table
    emb.quantize(TrainContext(tables=emb.table_access()))       # 1,000 centroids per column
    emb.learned_params(), emb.aux_bytes()                       # [16000], [800000]
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from cce_dlrm.clustering import CentroidIndex, train_kmeans, use_two_level
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

log = logging.getLogger(__name__)


def code_dtype(k: int) -> torch.dtype:
    return torch.int16 if k <= torch.iinfo(torch.int16).max else torch.int32


class PQEmbedding(TableMethod):
    """Full tables while training; product-quantized (``columns`` codes per id) at the end."""

    report_final_only = True

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None, *,
                 columns: int = 4, niter: int = 50, max_points_per_centroid: int = 256,
                 two_level_above_cap: int | None = 160_000):
        if columns < 1 or dim % columns:
            raise ConfigError(f"pq: embedding dim {dim} is not divisible by columns={columns}")
        super().__init__(features, dim, max_table_params, init_std, seed, device)
        self.columns = int(columns)
        self.niter, self.max_points_per_centroid = int(niter), int(max_points_per_centroid)
        self.two_level = use_two_level(max_table_params, two_level_above_cap)
        self.compressed = [i for i, f in enumerate(self.features)
                           if not fits_full(f.num_ids, dim, max_table_params)]
        self.centroids = {i: feature_budget(self.features[i].num_ids, dim, max_table_params) // dim
                          for i in self.compressed}
        k_max = max(self.centroids.values(), default=1)
        buffer_device = "cpu" if device is None or torch.device(device).type == "meta" else device
        # the compressed model, empty until on_train_end: codes (sum of n, c), codebooks (sum of k, d)
        self.register_buffer("codes", torch.empty(0, self.columns, dtype=code_dtype(k_max),
                                                  device=buffer_device))
        self.register_buffer("codebooks", torch.empty(0, dim, device=buffer_device))

    @property
    def quantized(self) -> bool:
        return self.codes.shape[0] > 0

    @property
    def respects_budget(self) -> bool:  # the trained full model does not; the quantized one does
        return self.quantized

    def layout(self, index: int, feature: FeatureSpec) -> FeatureLayout:
        return FeatureLayout(rows=((feature.num_ids,),))

    def indices(self, group: FeatureGroup, ids: torch.Tensor) -> torch.Tensor:
        return ids.to(torch.int64).view(ids.shape[0], 1, 1, ids.shape[1])

    def learned_params(self) -> list[int]:
        out = super().learned_params()
        if self.quantized:
            for f, k in self.centroids.items():
                out[f] = k * self.dim
        return out

    def aux_bytes(self) -> list[int]:
        out = [0] * len(self.features)
        if self.quantized:
            for f in self.compressed:
                out[f] = self.features[f].num_ids * self.columns * self.codes.element_size()
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("codes", "codebooks"):  # a quantized checkpoint: make room before loading
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty(saved.shape, dtype=saved.dtype,
                                                device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def on_train_end(self, context: TrainContext) -> dict[str, float]:
        return self.quantize(context)

    def quantize(self, context: TrainContext) -> dict[str, float]:
        """Quantizes every compressed feature (collective: every rank calls it).

        One feature at a time (a Criteo table is up to 10M x d): every rank reads the table,
        rank 0 clusters it, codes and codebook are broadcast, every rank rebuilds the vectors
        and writes its shards. Returns seconds, mean k-means iterations and the relative
        reconstruction error ``||E - E_pq||^2 / ||E||^2`` over all compressed features.
        """
        started = time.perf_counter()
        tables = context.tables if context.tables is not None else self.table_access()
        work, w = self.codes.device, self.dim // self.columns
        all_codes, all_books = [], []
        stats = torch.zeros(3, dtype=torch.float64, device=work)  # error, norm, iterations
        for f in self.compressed:
            name = f"{self.features[f].name}__s0c0"
            weight = tables.read(name).to(work)
            codes = torch.zeros(weight.shape[0], self.columns, dtype=self.codes.dtype, device=work)
            book = torch.zeros(self.centroids[f], self.dim, device=work)
            if context.rank == 0:
                error, iterations = self._quantize_feature(f, weight, codes, book)
                stats += torch.tensor([error, float(weight.double().pow(2).sum()), iterations],
                                      dtype=torch.float64, device=work)
            # int16 codes travel as bytes: not every backend broadcasts int16
            codes = context.broadcast(codes.view(torch.uint8), 0).view(codes.dtype)
            book = context.broadcast(book, 0)
            index = codes.to(torch.int64)
            rebuilt = torch.cat([book[index[:, j], j * w : (j + 1) * w] for j in range(self.columns)], 1)
            tables.write(name, rebuilt)
            all_codes.append(codes)
            all_books.append(book)
        stats = context.broadcast(stats, 0).cpu()
        if all_codes:
            self.codes, self.codebooks = torch.cat(all_codes), torch.cat(all_books)
        out = {"pq/seconds": time.perf_counter() - started,
               "pq/relative_error": float(stats[0] / stats[1]) if stats[1] > 0 else 0.0,
               "pq/iterations": float(stats[2]) / max(len(self.compressed) * self.columns, 1)}
        if context.rank == 0:
            log.info("pq: %d features quantized in %.1f s, relative reconstruction error %.4f",
                     len(self.compressed), out["pq/seconds"], out["pq/relative_error"])
        return out

    def _quantize_feature(self, f: int, weight: torch.Tensor, codes: torch.Tensor,
                          book: torch.Tensor) -> tuple[float, float]:
        """Fills ``codes`` (n, c) and ``book`` (k, d) for one table; returns (squared error, iterations)."""
        n, k, w = weight.shape[0], book.shape[0], self.dim // self.columns
        m = min(n, self.max_points_per_centroid * k)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x9E, f]))
        sample = torch.from_numpy(np.sort(rng.choice(n, size=m, replace=False))).to(weight.device)
        error, iterations = 0.0, 0
        for j in range(self.columns):
            block = weight[:, j * w : (j + 1) * w]
            km = train_kmeans(block.index_select(0, sample), k, niter=self.niter,
                              max_points_per_centroid=self.max_points_per_centroid,
                              seed=int(rng.integers(2**31 - 1)), two_level=self.two_level)
            labels, distances = CentroidIndex(km.centroids, gpu="auto" if km.gpu else None).search(block)
            codes[:, j] = torch.from_numpy(labels).to(codes.device, codes.dtype)
            book[:, j * w : (j + 1) * w] = torch.from_numpy(km.centroids).to(book.device)
            error += float(distances.astype(np.float64).sum())
            iterations += km.iterations
        return error, iterations
