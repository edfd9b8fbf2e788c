import json
import math

import numpy as np
import pytest

from cce_dlrm.data.processed import ProcessedDataset, split_file
from cce_dlrm.data.synthetic import (
    KAGGLE_CARDINALITIES,
    build,
    latent_world,
    scaled_cardinalities,
    variance_shares,
)
from cce_dlrm.embeddings.base import ConfigError

from conftest import compose_config


def test_cardinalities_keep_kaggle_shape():
    cards = scaled_cardinalities(100_000)
    assert max(cards) == 100_000
    assert len(cards) == 26
    # the order of sizes is Kaggle's: the largest features stay the largest
    assert np.argmax(cards) == np.argmax(KAGGLE_CARDINALITIES)
    assert cards[KAGGLE_CARDINALITIES.index(3)] == 3


def test_deterministic_and_criteo_shaped(tmp_path):
    a = build(tmp_path / "a", rows=20_000, max_cardinality=2_000, seed=3, progress=False)
    b = build(tmp_path / "b", rows=20_000, max_cardinality=2_000, seed=3, progress=False)
    for split in ("train", "val", "test"):
        for kind in ("dense", "sparse", "labels"):
            assert split_file(a, split, kind).read_bytes() == split_file(b, split, kind).read_bytes()
    ds = ProcessedDataset(a)
    assert ds.rows == {"train": 18_000, "val": 1_000, "test": 1_000}
    train = ds.split("train")
    assert train.dense.shape == (18_000, 13) and train.sparse.shape == (18_000, 26)
    assert (train.dense >= 0).all()  # log(x + 1) of non-negative counts
    assert ((train.sparse >= 0) & (train.sparse < np.array(ds.cardinalities))).all()
    assert 0.2 < ds.meta["click_rate"] < 0.3
    # Zipf: the most frequent id of the largest feature is far above the mean frequency
    counts = np.bincount(train.sparse[:, 2])
    assert counts.max() > 50 * counts.mean()
    assert ds.meta["variance_shares"] == pytest.approx({"coarse": 1 / 3, "subgroup": 1 / 3, "id": 1 / 3})


def test_other_seed_rebuilds_same_seed_reuses(tmp_path):
    path = build(tmp_path / "d", rows=5_000, max_cardinality=500, seed=1, progress=False)
    stamp = (path / "meta.json").stat().st_mtime_ns
    build(path, rows=5_000, max_cardinality=500, seed=1, progress=False)
    assert (path / "meta.json").stat().st_mtime_ns == stamp
    build(path, rows=5_000, max_cardinality=500, seed=2, progress=False)
    assert json.loads((path / "meta.json").read_text())["generator"]["seed"] == 2


def test_hierarchy_is_finer_than_any_codebook_for_the_large_features():
    """Default sizes: the largest feature has n/4 sub-groups, far above the largest k of any
    grid (10,000: PQ at cap 1.6e5, d = 16), and about sqrt(n) coarse groups."""
    cfg = compose_config([])
    n = max(scaled_cardinalities(cfg.dataset.build.max_cardinality))
    groups = latent_world(max_cardinality=20_000).groups[2]  # a smaller instance, same rule
    assert groups.coarse_of.size == math.ceil(20_000 / 4)
    assert int(groups.coarse_of.max()) + 1 == math.ceil(math.sqrt(20_000))
    assert np.bincount(groups.subgroup_of).max() == 4  # balanced: 4 ids per sub-group
    assert math.ceil(n / cfg.dataset.build.ids_per_subgroup) > 10 * 10_000


def _pair_similarity(latents, first, second):
    return float((latents[first] * latents[second]).sum(1).mean())


def test_variance_shares_are_the_stated_ones():
    """<u_i, u_j> estimates the shared variance: coarse + subgroup for ids of one sub-group,
    coarse only for ids of one coarse group but different sub-groups, about 0 otherwise;
    |u_i|^2 is 1 on average."""
    world = latent_world(max_cardinality=200_000, variance_weights={"coarse": 2, "subgroup": 1, "id": 1})
    latents, groups = world.latents[2], world.groups[2]
    assert float((latents ** 2).sum(1).mean()) == pytest.approx(1.0, abs=0.02)
    order = np.argsort(groups.subgroup_of, kind="stable")
    same_sub = order.reshape(-1, 4)  # n = 200,000: every sub-group holds exactly 4 ids
    assert _pair_similarity(latents, same_sub[:, 0], same_sub[:, 1]) == pytest.approx(0.75, abs=0.03)
    coarse = groups.coarse_of_id
    by_coarse = np.argsort(coarse, kind="stable")
    a, b = by_coarse[:-1], by_coarse[1:]
    keep = (coarse[a] == coarse[b]) & (groups.subgroup_of[a] != groups.subgroup_of[b])
    assert _pair_similarity(latents, a[keep], b[keep]) == pytest.approx(0.5, abs=0.03)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, latents.shape[0], (2, 50_000))
    keep = coarse[x] != coarse[y]
    assert abs(_pair_similarity(latents, x[keep], y[keep])) < 0.03


def test_control_shares_everything_but_the_structure(tmp_path):
    kwargs = dict(rows=20_000, max_cardinality=2_000, seed=5, progress=False)
    hier = ProcessedDataset(build(tmp_path / "h", **kwargs))
    ctrl = ProcessedDataset(build(tmp_path / "c", structure="none", **kwargs))
    assert hier.cardinalities == ctrl.cardinalities
    for split in ("train", "val"):
        # same ids row by row (same frequencies, same draws) and same dense features
        assert np.array_equal(hier.split(split).sparse, ctrl.split(split).sparse)
        assert np.array_equal(hier.split(split).dense, ctrl.split(split).dense)
    assert not np.array_equal(hier.split("train").labels, ctrl.split("train").labels)
    assert 0.2 < ctrl.meta["click_rate"] < 0.3 and 0.2 < hier.meta["click_rate"] < 0.3
    world_h = latent_world(max_cardinality=200_000)
    world_c = latent_world(max_cardinality=200_000, structure="none")
    assert np.array_equal(world_h.feature_w, world_c.feature_w)
    assert np.array_equal(world_h.partner, world_c.partner)
    # in the control, ids of one hierarchical sub-group are unrelated
    same_sub = np.argsort(world_h.groups[2].subgroup_of, kind="stable").reshape(-1, 4)
    assert abs(_pair_similarity(world_c.latents[2], same_sub[:, 0], same_sub[:, 1])) < 0.03
    assert world_c.groups[2] is None


def test_control_config_is_an_overlay_of_the_default():
    main, control = compose_config([]).dataset, compose_config(["dataset=synthetic_control"]).dataset
    assert control.name == "synthetic_control" and control.path.endswith("synthetic_control")
    assert control.build.structure == "none" and main.build.structure == "hierarchical"
    differing = {k for k in main.build if main.build[k] != control.build[k]}
    assert differing == {"structure"}


def test_bad_structure_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="structure"):
        build(tmp_path / "x", rows=100, max_cardinality=100, structure="planted", progress=False)
    with pytest.raises(ConfigError, match="variance_weights"):
        variance_shares({"coarse": 1, "id": 1})
    with pytest.raises(ConfigError, match="variance_weights"):
        variance_shares({"coarse": -1, "subgroup": 1, "id": 1})


def test_parallel_builders_of_one_dataset_take_turns(tmp_path):
    """Two sweep jobs that both find the dataset missing: one builds, the other reuses it."""
    import multiprocessing as mp

    from cce_dlrm.data.synthetic import build

    target = tmp_path / "shared"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=build, args=(str(target),),
                         kwargs=dict(rows=4000, max_cardinality=300, progress=False)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    from cce_dlrm.data.processed import ProcessedDataset

    assert ProcessedDataset(target).rows["train"] > 0
    assert not target.with_name("shared.tmp").exists()
