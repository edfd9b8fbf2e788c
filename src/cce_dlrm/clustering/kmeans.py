"""FAISS k-means (flat, or two-level for many centroids) and batched nearest-centroid search.

Both run on the GPU when FAISS has one (``faiss.get_num_gpus() > 0``: the GPU build and a
visible device), on the CPU otherwise. The one visible difference is ``KMeansResult.gpu``
(logged with each clustering round); the algorithm and its settings are the same.

Two-level k-means (``two_level=True``): flat Lloyd iterations cost ``m * k`` distances each,
which for ``k = 50,000`` centroids and ``m = 1M`` points is about 10 s per iteration on two
CPU cores (8 minutes for one 4-wide column). Above the threshold the points are first
clustered into ``sqrt(k)`` coarse groups, then each group into its share of the ``k``
centroids, every step a FAISS k-means (as FAISS's own ``contrib.clustering.two_level_clustering``
does, with empty groups and exact allocation handled). Its objective is within a few percent
of the flat one (measured on 1M Gaussian 4-d points, k = 50,000: +5%, in 3.5 s instead of
470 s for flat k-means on a shared machine; tests/test_clustering.py checks a small case).

Who gets it (:func:`use_two_level`, one rule for every method that clusters, cce and pq):
only on the CPU, and only when the run's ``max_table_params`` is above the method's
``two_level_above_cap``. The rule counts the cap, not ``k``, because pq's ``k = P/d`` is twice
cce's ``k = P/2d``: a threshold on ``k`` gave pq the approximation at caps where cce had flat
k-means. On a GPU flat k-means is affordable and always used.

Example::

    km = train_kmeans(x, k=1000, niter=50, max_points_per_centroid=256, seed=0)
    km.centroids.shape, km.iterations   # (1000, 4), e.g. 50
    labels, sq_dist = CentroidIndex(km.centroids).search(x)   # (m,) int64, (m,) float32
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Iterator

# faiss logs at INFO which of its builds it loads (and that the AVX2 one is absent): noise in
# every training log
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

import faiss  # noqa: E402
import numpy as np  # noqa: E402

#: rows per FAISS search call: bounds the query copy (and GPU memory) whatever ``m`` is
SEARCH_BATCH = 1 << 20
#: below this many distances per pass (points x centroids), one CPU thread is faster than two
ONE_THREAD_BELOW = 100_000_000


@dataclass
class KMeansResult:
    """Centroids ``(k, w)`` float32, FAISS's final objective (sum of squared distances of the
    training points at the last iteration; summed over groups for two-level), the Lloyd
    iterations actually run (FAISS stops early once the objective stops decreasing; for two
    levels the most any fine group ran), wall seconds, and whether the GPU was used."""

    centroids: np.ndarray
    objective: float
    iterations: int
    seconds: float
    gpu: bool
    two_level: bool = False


def faiss_gpu_device() -> int | None:
    """The CUDA device FAISS should use (this process's current one), or None for the CPU."""
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return None
    import torch

    return torch.cuda.current_device() if torch.cuda.is_available() else 0


_GPU_RESOURCES: dict[int, object] = {}


def _flat_index(dim: int, gpu: int | None):
    index = faiss.IndexFlatL2(dim)
    if gpu is None:
        return index
    # one resources object per device: creating one allocates scratch memory
    resources = _GPU_RESOURCES.setdefault(gpu, faiss.StandardGpuResources())
    return faiss.index_cpu_to_gpu(resources, gpu, index)


@contextlib.contextmanager
def _cpu_small_problems(threads: int | None = None) -> Iterator[None]:
    """FAISS 1.15's brute-force search only uses BLAS from 128,000 queries on; below, its
    per-query path is 10-20x slower for 4-wide vectors (measured), and OpenMP's spinning
    threads make small k-means problems (5,000 points) up to 100x slower than one thread.
    Both are process-wide settings, so they are set for the duration and restored."""
    old_threshold = faiss.cvar.distance_compute_blas_threshold
    old_threads = faiss.omp_get_max_threads()
    faiss.cvar.distance_compute_blas_threshold = 20
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = old_threshold
        faiss.omp_set_num_threads(old_threads)


def _as_points(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected points of shape (m, w), got {x.shape}")
    return x


def _flat_kmeans(x: np.ndarray, k: int, niter: int, max_points_per_centroid: int, seed: int,
                 gpu: int | None) -> tuple[np.ndarray, float, int]:
    params = faiss.ClusteringParameters()
    params.niter = int(niter)
    params.max_points_per_centroid = int(max_points_per_centroid)
    # FAISS warns below 39 points per centroid; CCE's sample is min(n, 256 k) by definition
    params.min_points_per_centroid = 1
    params.seed = int(seed) % (2**31 - 1)
    clustering = faiss.Clustering(x.shape[1], int(k), params)
    if gpu is not None:
        clustering.train(x, _flat_index(x.shape[1], gpu))
    else:
        points = min(len(x), int(max_points_per_centroid) * int(k))
        with _cpu_small_problems(1 if points * int(k) < ONE_THREAD_BELOW else None):
            clustering.train(x, _flat_index(x.shape[1], gpu))
    centroids = faiss.vector_float_to_array(clustering.centroids).reshape(int(k), x.shape[1])
    stats = clustering.iteration_stats
    last = stats.at(stats.size() - 1).obj if stats.size() else 0.0
    return centroids.astype(np.float32, copy=False), float(last), int(stats.size())


def allocate_centroids(sizes: np.ndarray, k: int) -> np.ndarray:
    """Splits ``k`` centroids over groups proportionally to ``sizes`` (largest remainders).

    Every group gets at most as many centroids as it has points (needs ``k <= sizes.sum()``).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if k > total:
        raise ValueError(f"{k} centroids for {total} points")
    quota = sizes * k
    alloc, frac = quota // total, quota % total
    # sum(frac) / total == k - sum(alloc), and frac > 0 implies alloc < size: always enough
    extra = np.argsort(-frac, kind="stable")[: k - int(alloc.sum())]
    alloc[extra] += 1
    return alloc


def _two_level_kmeans(x: np.ndarray, k: int, niter: int, max_points_per_centroid: int, seed: int,
                      gpu: int | None) -> tuple[np.ndarray, float, int]:
    coarse_k = max(1, int(round(math.sqrt(k))))
    coarse, _, _ = _flat_kmeans(x, coarse_k, niter, max_points_per_centroid, seed, gpu)
    groups, _ = CentroidIndex(coarse, gpu=gpu).search(x)
    sizes = np.bincount(groups, minlength=coarse_k)
    alloc = allocate_centroids(sizes, k)
    order = np.argsort(groups, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    parts, objective, iterations = [], 0.0, 0
    for g in np.flatnonzero(alloc):
        points = x[order[starts[g] : starts[g + 1]]]
        if alloc[g] == len(points):  # as many centroids as points: the points themselves
            parts.append(points)
            continue
        sub_seed = (int(seed) * 1_000_003 + int(g) + 1) % (2**31 - 1)
        centroids, obj, its = _flat_kmeans(points, int(alloc[g]), niter, max_points_per_centroid,
                                           sub_seed, gpu)
        parts.append(centroids)
        objective += obj
        iterations = max(iterations, its)
    return np.concatenate(parts).astype(np.float32, copy=False), objective, iterations


def use_two_level(max_table_params: int | None, above_cap: int | None) -> bool:
    """Two-level k-means for this run? Only on the CPU and above the cap (see module docstring)."""
    if above_cap is None or max_table_params is None:
        return False
    return int(max_table_params) > int(above_cap) and faiss_gpu_device() is None


def train_kmeans(x, k: int, *, niter: int = 50, max_points_per_centroid: int = 256, seed: int = 0,
                 two_level: bool = False, gpu: int | None | str = "auto") -> KMeansResult:
    """FAISS k-means of ``x`` (``(m, w)``, numpy or torch) into ``k`` centroids.

    FAISS subsamples ``x`` to ``max_points_per_centroid * k`` points itself. ``gpu``: a CUDA
    device index, None (CPU) or "auto" (:func:`faiss_gpu_device`). ``two_level``: the
    approximation for many centroids (module docstring); at ``k = 1`` it is flat anyway.
    """
    x = _as_points(x)
    if not 1 <= k <= len(x):
        raise ValueError(f"k-means needs 1 <= k <= number of points, got k={k} for {len(x)} points")
    device = faiss_gpu_device() if gpu == "auto" else gpu
    started = time.perf_counter()
    two_level = bool(two_level) and k > 1
    if two_level:
        centroids, objective, iterations = _two_level_kmeans(x, k, niter, max_points_per_centroid,
                                                             seed, device)
    else:
        centroids, objective, iterations = _flat_kmeans(x, k, niter, max_points_per_centroid,
                                                        seed, device)
    return KMeansResult(centroids, objective, iterations, time.perf_counter() - started,
                        gpu=device is not None, two_level=two_level)


class CentroidIndex:
    """Exact nearest-centroid search over ``centroids`` ``(k, w)`` (FAISS flat L2).

    ``search`` takes any number of points and queries FAISS ``SEARCH_BATCH`` rows at a time,
    so its working memory is bounded by the batch, not by the number of points.
    """

    def __init__(self, centroids, gpu: int | None | str = "auto"):
        centroids = _as_points(centroids)
        self.gpu = faiss_gpu_device() if gpu == "auto" else gpu
        self.index = _flat_index(centroids.shape[1], self.gpu)
        self.index.add(centroids)

    def search(self, x) -> tuple[np.ndarray, np.ndarray]:
        """``x`` ``(m, w)`` -> nearest centroid ``(m,)`` int64 and its squared distance ``(m,)``."""
        x = _as_points(x)
        labels = np.empty(len(x), dtype=np.int64)
        distances = np.empty(len(x), dtype=np.float32)
        small = len(x) * self.index.ntotal < ONE_THREAD_BELOW
        cpu = _cpu_small_problems(1 if small else None) if self.gpu is None else contextlib.nullcontext()
        with cpu:
            for start in range(0, len(x), SEARCH_BATCH):
                dist, idx = self.index.search(x[start : start + SEARCH_BATCH], 1)
                labels[start : start + len(idx)] = idx[:, 0]
                distances[start : start + len(idx)] = dist[:, 0]
        return labels, distances
