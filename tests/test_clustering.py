"""FAISS k-means wrapper, two-level k-means, batched assignment, partition agreement."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from cce_dlrm.clustering import CentroidIndex, adjusted_rand_index, share_moved, train_kmeans
from cce_dlrm.clustering import kmeans as kmeans_module
from cce_dlrm.clustering.kmeans import allocate_centroids


@pytest.fixture(autouse=True)
def one_thread():
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def planted(points_per_cluster: int, clusters: int, dim: int = 4, spread: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-1, 1, size=(clusters, dim)) * 10
    labels = np.repeat(np.arange(clusters), points_per_cluster)
    points = centers[labels] + rng.normal(scale=spread, size=(len(labels), dim))
    order = rng.permutation(len(labels))
    return points[order].astype(np.float32), labels[order]


@pytest.mark.parametrize("two_level", [False, True])
def test_kmeans_recovers_well_separated_clusters(two_level):
    points, labels = planted(60, 16)
    result = train_kmeans(points, 16, niter=30, seed=3, two_level=two_level)
    assert result.centroids.shape == (16, 4) and result.centroids.dtype == np.float32
    assert result.two_level is two_level and result.gpu is False
    assert 1 <= result.iterations <= 30
    assigned, distances = CentroidIndex(result.centroids, gpu=None).search(points)
    # random initialisation may put two centroids in one cluster and merge two others
    # (Lloyd iterations cannot undo that), so not 1.0; chance is 0
    assert adjusted_rand_index(assigned, labels) > 0.6
    assert result.objective >= 0 and np.all(distances >= 0)


def test_kmeans_is_deterministic_from_its_seed_and_reports_early_stops():
    points, _ = planted(60, 8)
    a = train_kmeans(points, 8, niter=50, seed=7)
    b = train_kmeans(torch.from_numpy(points), 8, niter=50, seed=7)  # torch input works too
    np.testing.assert_array_equal(a.centroids, b.centroids)
    # FAISS stops once the objective no longer decreases: well-separated data needs few rounds
    assert a.iterations < 50


def test_objective_is_the_sum_of_squared_distances():
    points, _ = planted(50, 10, spread=0.5)
    result = train_kmeans(points, 10, niter=50, seed=0)
    _, distances = CentroidIndex(result.centroids, gpu=None).search(points)
    # FAISS reports the objective of the last assignment, before the last centroid update
    assert result.objective == pytest.approx(float(distances.sum()), rel=0.02)


def test_two_level_allocation_is_exact_and_never_exceeds_a_group():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 50, size=rng.integers(1, 20))
        if sizes.sum() == 0:
            continue
        k = int(rng.integers(1, sizes.sum() + 1))
        alloc = allocate_centroids(sizes, k)
        assert alloc.sum() == k and np.all(alloc <= sizes) and np.all(alloc >= 0)
    with pytest.raises(ValueError):
        allocate_centroids(np.array([2, 1]), 4)


def test_two_level_gives_exactly_k_centroids_close_to_flat_quality():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(20_000, 4)).astype(np.float32)
    flat = train_kmeans(points, 400, niter=20, seed=0)
    two = train_kmeans(points, 400, niter=20, seed=0, two_level=True)
    assert two.centroids.shape == (400, 4) and two.two_level
    cost = {name: CentroidIndex(r.centroids, gpu=None).search(points)[1].sum()
            for name, r in (("flat", flat), ("two", two))}
    assert cost["two"] < 1.15 * cost["flat"], cost


def test_search_in_batches_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(2)
    centroids = rng.normal(size=(37, 8)).astype(np.float32)
    points = rng.normal(size=(1000, 8)).astype(np.float32)
    monkeypatch.setattr(kmeans_module, "SEARCH_BATCH", 128)  # 8 batches
    labels, distances = CentroidIndex(centroids, gpu=None).search(points)
    exact = ((points[:, None, :] - centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, exact.argmin(1))
    np.testing.assert_allclose(distances, exact.min(1), rtol=1e-4, atol=1e-4)


def test_kmeans_rejects_more_centroids_than_points():
    with pytest.raises(ValueError, match="k <= number of points"):
        train_kmeans(np.zeros((5, 4), dtype=np.float32), 6)


def test_agreement_measures_ignore_labels():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand_index(a, [7, 7, 3, 3, 5, 5]) == pytest.approx(1.0)
    assert adjusted_rand_index(a, [0, 1, 0, 1, 0, 1]) < 0.0 + 1e-9
    old, new = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([4, 4, 2, 2, 3])
    assert share_moved(old, new[[0, 1, 2, 3, 2]], 2, 5) == 0.0  # relabelled only
    assert share_moved(old, new, 2, 5) == pytest.approx(1 / 5)
    # the sparse path (too many label pairs for a dense table) counts the same
    assert share_moved(old * 5000, new * 5000, 5001, 20001) == pytest.approx(1 / 5)


def test_cce_and_pq_get_two_level_kmeans_by_the_same_cap_rule():
    """The rule counts the cap, so pq (k = P/d) and cce (k = P/2d) switch at the same caps."""
    from cce_dlrm.embeddings.base import FeatureSpec
    from cce_dlrm.embeddings.cce import CCEEmbedding
    from cce_dlrm.embeddings.pq import PQEmbedding

    features = [FeatureSpec("f", 100_000)]
    for cap, expected in ((80_000, False), (160_000, False), (320_000, True)):
        kwargs = dict(dim=16, max_table_params=cap, init_std=0.05, seed=0, device="meta",
                      two_level_above_cap=160_000)
        assert CCEEmbedding(features, **kwargs).two_level is expected
        assert PQEmbedding(features, **kwargs).two_level is expected
    assert not CCEEmbedding(features, dim=16, max_table_params=320_000, init_std=0.05, seed=0,
                            device="meta", two_level_above_cap=None).two_level
