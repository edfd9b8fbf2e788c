import json

import numpy as np

from cce_dlrm.data.processed import ProcessedDataset, split_file
from cce_dlrm.data.synthetic import KAGGLE_CARDINALITIES, build, scaled_cardinalities


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


def test_other_seed_rebuilds_same_seed_reuses(tmp_path):
    path = build(tmp_path / "d", rows=5_000, max_cardinality=500, seed=1, progress=False)
    stamp = (path / "meta.json").stat().st_mtime_ns
    build(path, rows=5_000, max_cardinality=500, seed=1, progress=False)
    assert (path / "meta.json").stat().st_mtime_ns == stamp
    build(path, rows=5_000, max_cardinality=500, seed=2, progress=False)
    assert json.loads((path / "meta.json").read_text())["generator"]["seed"] == 2
