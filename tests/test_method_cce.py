"""CCE: budget, hashing, the clustering round and its invariants, ranks that agree."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchrec import KeyedJaggedTensor

from cce_dlrm.clustering import adjusted_rand_index
from cce_dlrm.embeddings.base import ConfigError, FeatureSpec, TrainContext
from cce_dlrm.embeddings.cce import CCEEmbedding, cluster_column, map_dtype
from cce_dlrm.embeddings.hash_family import universal_hash

FEATURES = [FeatureSpec("small", 7), FeatureSpec("mid", 3000), FeatureSpec("large", 20000)]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: OpenMP's second thread only adds wake-up latency (and 10x more on a busy
    machine)."""
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)


def make(features=FEATURES, dim=16, budget=2048, seed=0, **kwargs) -> CCEEmbedding:
    return CCEEmbedding(features, dim=dim, max_table_params=budget, init_std=0.05, seed=seed, **kwargs)


def all_ids(features) -> KeyedJaggedTensor:
    """Every id of every feature once (ids wrap for the smaller features)."""
    size = max(f.num_ids for f in features)
    ids = torch.stack([torch.arange(size) % f.num_ids for f in features])
    return KeyedJaggedTensor(keys=[f.name for f in features], values=ids.reshape(-1),
                             lengths=torch.ones(len(features) * size, dtype=torch.int32))


def context(method, **kwargs) -> TrainContext:
    return TrainContext(tables=method.table_access(), **kwargs)


@pytest.mark.parametrize("n, dim, budget, k", [(3000, 16, 2048, 64), (20000, 16, 16000, 500),
                                               (100_000, 64, 40_000, 312), (1000, 8, 4000, 250)])
def test_parameter_count_matches_the_formula(n, dim, budget, k):
    """k = floor(P / 2d) rows in each A_j and B_j: 2*k*d learned floats; full tables stay full."""
    method = make([FeatureSpec("f", n), FeatureSpec("fits", budget // dim)], dim=dim, budget=budget,
                  columns=2 if dim == 8 else 4)
    assert method.rows[0] == k
    assert method.learned_params() == [2 * k * dim, budget // dim * dim]
    assert 2 * k * dim <= budget
    # before any round the maps are hashes: only 4 constants per column are stored
    assert method.aux_bytes() == [4 * method.columns * 8, 0]


def test_cluster_ids_use_the_narrowest_integer_type():
    assert map_dtype(2) == map_dtype(32767) == torch.int16
    assert map_dtype(32768) == torch.int32
    wide = make([FeatureSpec("f", 70_000)], dim=4, budget=2 * 32768 * 4, columns=1)
    assert wide.rows[0] == 32768 and wide.cluster_ids.dtype == torch.int32


def test_bad_configurations_are_config_errors():
    with pytest.raises(ConfigError, match="not divisible"):
        make(columns=3)
    with pytest.raises(ConfigError, match="multiple of 4"):
        make(dim=8, columns=4)
    with pytest.raises(ConfigError, match="2\\*dim"):
        make(budget=20)
    with pytest.raises(ConfigError, match="last_cluster"):
        make(last_cluster=1.5)


def test_hashing_is_deterministic_from_the_seed():
    kjt = all_ids(FEATURES)
    a, b, other = make(seed=3), make(seed=3), make(seed=4)
    for group in a.groups:
        ids = kjt.values().view(len(FEATURES), -1)[group.features]
        torch.testing.assert_close(a.indices(group, ids), b.indices(group, ids), rtol=0, atol=0)
        if group.key[0] == 2:
            assert not torch.equal(a.indices(group, ids), other.indices(group, ids))
    # the fresh h of a round comes from (seed, round): two modules agree round after round
    for _ in range(2):
        a.cluster(context(a))
        b.cluster(context(b))
        assert torch.equal(a.h_a, b.h_a) and torch.equal(a.cluster_ids, b.cluster_ids)
    assert not torch.equal(a.h_a, other.h_a)


def test_a_round_keeps_every_h_bucket_mean_so_maps_are_never_mixed():
    """With B := mean residual per new h bucket, each bucket's mean embedding is unchanged.

    This holds only if every v(i) was computed from the old maps and tables: a round that read
    the new h (or new g) for some ids would shift those buckets' means.
    """
    method = make(residual=True)
    kjt = all_ids(FEATURES)
    for _ in range(2):  # from hashed maps, then from stored cluster ids
        with torch.no_grad():
            before = method(kjt)
        method.cluster(context(method))
        with torch.no_grad():
            after = method(kjt)
        for f in method.compressed:
            n, w = FEATURES[f].num_ids, method.dim // method.columns
            ids = torch.arange(n)
            for j in range(method.columns):
                bucket = universal_hash(ids, method.h_a[f, j], method.h_b[f, j], method.rows[f])
                diff = (after[:n, f, j * w:(j + 1) * w] - before[:n, f, j * w:(j + 1) * w]).double()
                sums = torch.zeros(method.rows[f], w, dtype=torch.float64).index_add_(0, bucket, diff)
                assert sums.abs().max() < 1e-4, f"bucket means moved (feature {f}, column {j})"
        # the full feature is not touched by a round
        torch.testing.assert_close(after[:, 0], before[:, 0], rtol=0, atol=0)


def test_one_id_per_bucket_leaves_every_embedding_unchanged():
    """The column round itself, with an injective new h: n ids, 8 centroids, 64 buckets.

    (Inside CCE every bucket holds n/k > 2 ids; the round is the same code.)
    """
    gen = torch.Generator().manual_seed(0)
    n, k, w = 50, 8, 4
    vectors = torch.randn(n, w, generator=gen)
    old_g = torch.randint(0, k, (n,), generator=gen)

    def run(residual):
        return cluster_column(lambda ids: (vectors[ids], old_g[ids]), n, k, lambda ids: ids,
                              torch.arange(n), residual=residual, buckets=64, batch=16,
                              kmeans_args={"niter": 10, "seed": 1})

    result = run(True)
    assert result.labels.unique().numel() == k  # a real clustering: ids share centroids
    rebuilt = result.centroids[result.labels] + result.residuals[torch.arange(n)]
    torch.testing.assert_close(rebuilt, vectors, rtol=0, atol=1e-6)
    # B := 0 instead: every id becomes its centroid
    assert run(False).residuals.abs().max() == 0


def test_planted_clusters_are_recovered_and_the_loss_drops():
    """Ids whose target vectors come from 32 planted clusters: fit, one round, fit again.

    The hashed start can hold about 2k/n of each id's own target (here 90%), so the vectors it
    learns carry the cluster structure; one round turns it into the maps. Three seeds: with
    consecutive ids a few percent of universal hash functions spread unevenly, which weakens
    the hashed fit of that seed.
    """
    n, k, dim, planted = 140, 64, 16, 32
    kjt = all_ids([FeatureSpec("f", n)])
    aris = []
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, planted, (n,), generator=gen)
        targets = torch.randn(planted, dim, generator=gen)[labels]

        def fit(method, steps):
            opt = torch.optim.Adam(method.parameters(), lr=0.1)
            for _ in range(steps):
                loss = ((method(kjt)[:, 0] - targets) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            return loss.item()

        method = make([FeatureSpec("f", n)], dim=dim, budget=2 * k * dim, seed=seed, columns=1)
        fit(method, 300)
        twin = make([FeatureSpec("f", n)], dim=dim, budget=2 * k * dim, seed=seed, columns=1)
        twin.load_state_dict(method.state_dict())
        hashed = method.indices(method.groups[0], torch.arange(n).view(1, -1))[0, 0, 0]
        assert abs(adjusted_rand_index(hashed, labels)) < 0.05  # the hash knows nothing
        stats = method.cluster(context(method))
        aris.append(adjusted_rand_index(method.cluster_ids[:, 0], labels))
        assert 0 < stats["cluster/moved"] <= 1 and stats["cluster/iterations"] >= 1
        clustered_loss, hashed_loss = fit(method, 100), fit(twin, 100)
        assert clustered_loss < 0.5 * hashed_loss, (seed, clustered_loss, hashed_loss)
    assert np.mean(aris) > 0.4 and min(aris) > 0.3, f"adjusted Rand indices {aris}"


def _rounds_at(total=100, steps_per_epoch=0, **kwargs):
    method = make([FeatureSpec("f", 300)], budget=1024, **kwargs)
    done = []
    for step in range(1, total + 1):
        if method.on_train_step(step, total, context(method, steps_per_epoch=steps_per_epoch)):
            done.append(step)
    assert int(method.cluster_round) == len(done)
    return done


def test_schedule_every_batches_or_fraction_until_last_cluster():
    common = dict(max_rounds=None)
    assert _rounds_at(cluster_every=20, cluster_unit="batches", last_cluster=0.5, **common) == [20, 40]
    assert _rounds_at(cluster_every=0.25, cluster_unit="training", last_cluster=1.0, **common) == [25, 50, 75, 100]
    assert _rounds_at(cluster_every=0, cluster_unit="batches", last_cluster=1.0, **common) == []


def test_the_papers_schedules():
    """PAPER.md: 10 epochs, a round at the end of each of the first 6 ("ct6 cf300000");
    1 epoch, rounds at 1/4 and 1/2 of it ("ct2 cf75000")."""
    ten = _rounds_at(total=100, steps_per_epoch=10, cluster_every=1, cluster_unit="epochs", max_rounds=6)
    assert ten == [10, 20, 30, 40, 50, 60]
    one = _rounds_at(total=40, steps_per_epoch=40, cluster_every=0.25, cluster_unit="epochs", max_rounds=2)
    assert one == [10, 20]
    with pytest.raises(ConfigError, match="batches per epoch"):
        _rounds_at(total=40, steps_per_epoch=0, cluster_every=0.25, cluster_unit="epochs")
    with pytest.raises(ConfigError, match="cluster_unit"):
        make(cluster_unit="weeks")


def test_a_checkpoint_after_a_round_loads_into_a_fresh_module():
    method = make()
    method.cluster(context(method))
    fresh = make()
    fresh.load_state_dict(method.state_dict())
    kjt = all_ids(FEATURES)
    assert fresh.clustered and int(fresh.cluster_round) == 1
    torch.testing.assert_close(fresh(kjt), method(kjt), rtol=0, atol=0)
    assert fresh.aux_bytes()[2] == 4 * 4 * 8 + 20000 * 4 * 2  # int16 ids for k = 64


class _Model(torch.nn.Module):
    """The smallest model DistributedModelParallel shards: CCE plus one dense layer."""

    def __init__(self, embedding):
        super().__init__()
        self.embedding = embedding
        self.dense = torch.nn.Linear(16, 1)

    def forward(self, kjt):
        return self.dense(self.embedding(kjt)).pow(2).mean()


def _broadcast(tensor, src):
    dist.broadcast(tensor, src)
    return tensor


def _trained_rank(rank: int, store: str, embedding, sharding: str, **optimizer_args):
    """One rank of a 2-process gloo DMP run of ``_Model(embedding)``, trained 3 steps on every
    id. Returns (model, optimizer, method, table access, the ids)."""
    import os

    from cce_dlrm.training.distributed import init_runtime, shard_model, unwrap
    from cce_dlrm.training.table_access import ShardedTableAccess

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    faiss.omp_set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    runtime = init_runtime("cpu")
    model, optimizer = shard_model(_Model(embedding), runtime, sharding, **optimizer_args)
    method = unwrap(model).embedding
    access = ShardedTableAccess(model, "embedding", method, runtime.device, optimizer)
    access.reset(method)
    kjt = all_ids(FEATURES)
    for _ in range(3):
        loss = model(kjt)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer, method, access, kjt


def _two_rank_worker(rank: int, store: str, out: str, sharding: str) -> None:
    """One rank of a 2-process gloo DMP run: train 3 steps, one round, train 1 step."""
    model, optimizer, method, access, kjt = _trained_rank(
        rank, store, make(device="meta", residual=True), sharding, lr=0.1)
    with torch.no_grad():
        before = method(kjt)
    method.cluster(TrainContext(tables=access, rank=rank, world_size=2, broadcast=_broadcast))
    with torch.no_grad():
        after = method(kjt)
    loss = model(kjt)  # training goes on with the new maps
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    torch.save({"maps": method.cluster_ids, "h": (method.h_a, method.h_b), "before": before,
                "after": after, "tables": {t.name: access.read(t.name) for t in method.sub_tables}},
               f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_dmp_ranks_end_a_round_with_identical_maps_and_updated_shards(tmp_path):
    """Column-wise sharding splits every table over both ranks: rank 0's round must reach the
    shards of rank 1, and both must look up the same new vectors."""
    mp.spawn(_two_rank_worker, args=(str(tmp_path / "store"), str(tmp_path), "column_wise"), nprocs=2)
    zero, one = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert zero["maps"].shape == (23000, 4) and zero["maps"].dtype == torch.int16
    assert torch.equal(zero["maps"], one["maps"])
    assert all(torch.equal(a, b) for a, b in zip(zero["h"], one["h"]))
    for name, table in zero["tables"].items():
        assert torch.equal(table, one["tables"][name]), name
    torch.testing.assert_close(zero["after"], one["after"], rtol=0, atol=0)
    # the lookups after the round are the new ones (bucket means kept, vectors changed)
    assert (zero["after"] - zero["before"])[:, 1:].abs().max() > 1e-3
    for f, n in ((1, 3000), (2, 20000)):
        for j in range(4):
            bucket = universal_hash(torch.arange(n), zero["h"][0][f, j], zero["h"][1][f, j], 64)
            diff = (zero["after"] - zero["before"])[:n, f, 4 * j : 4 * j + 4].double()
            sums = torch.zeros(64, 4, dtype=torch.float64).index_add_(0, bucket, diff)
            assert sums.abs().max() < 1e-4


def _table_states(optimizer) -> dict[str, float]:
    """Sum of |state| per table over this rank's pieces (step counters left out)."""
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    out = {}
    for key, entry in optimizer.state_dict()["state"].items():
        if ".embedding_bags." not in key:
            continue
        name = key.rsplit(".", 2)[-2]
        for field, value in entry.items():
            if field == "step":
                continue
            pieces = [s.tensor for s in value.local_shards()] if isinstance(value, ShardedTensor) else [value]
            out[name] = out.get(name, 0.0) + sum(float(p.abs().sum()) for p in pieces)
    return out


def _adagrad_worker(rank: int, store: str, out: str, sharding: str) -> None:
    """One rank of a 2-process run under row-wise Adagrad: 3 steps, one round, the states."""
    _, optimizer, method, access, _ = _trained_rank(rank, store, make(device="meta"), sharding,
                                                    lr=0.01, optimizer="rowwise_adagrad")
    before = _table_states(optimizer)
    method.cluster(TrainContext(tables=access, rank=rank, world_size=2, broadcast=_broadcast))
    after = _table_states(optimizer)
    rewritten = [t.name for t in method.sub_tables if t.feature in set(method.compressed)]
    torch.save({"before": before, "after": after, "rewritten": rewritten}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["column_wise", "data_parallel"])
def test_a_round_resets_the_rowwise_adagrad_state_of_a_and_b_only(tmp_path, sharding):
    """Fused (sharded) and Python (data-parallel) row-wise Adagrad: after a round the
    accumulators of the rewritten A_j, B_j are zero on every rank, every other table's are kept."""
    mp.spawn(_adagrad_worker, args=(str(tmp_path / "store"), str(tmp_path), sharding), nprocs=2)
    seen, kept_seen = set(), set()
    for rank in (0, 1):  # a rank holds state only for the tables (or columns) it holds
        saved = torch.load(tmp_path / f"rank{rank}.pt")
        before, after, rewritten = saved["before"], saved["after"], set(saved["rewritten"])
        assert set(after) == set(before)
        for name in before:
            if name in rewritten:
                assert after[name] == 0.0, name
                seen.add(name)
            else:
                assert after[name] == before[name] and before[name] > 0, name
                kept_seen.add(name)
        assert sum(before[n] for n in before if n in rewritten) > 0  # training had filled them
    assert seen == rewritten and kept_seen, "every A_j, B_j reset somewhere; the full table kept"
