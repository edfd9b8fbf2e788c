import numpy as np
import pytest

from cce_dlrm.data.loader import SplitLoader
from cce_dlrm.data.processed import ProcessedDataset
from cce_dlrm.embeddings.base import ConfigError


@pytest.fixture(scope="module")
def dataset(data_dir):
    return ProcessedDataset(data_dir / "processed" / "synthetic_smoke")


def _row_keys(batch):
    """Identifies rows by their content (dense floats are continuous: no two rows share them)."""
    dense = batch.dense.numpy()
    return [row.tobytes() for row in dense[batch.weights.numpy() > 0]]


def test_train_epoch_splits_rows_across_ranks_without_loss_or_duplicates(dataset):
    split = dataset.split("train")
    world, batch = 2, 512
    seen = []
    per_rank = [list(SplitLoader(split, dataset.sparse_names, batch, r, world, shuffle=True, seed=5).epoch(0))
                for r in range(world)]
    assert len(per_rank[0]) == len(per_rank[1]) == len(split) // batch
    for rank_batches in per_rank:
        for b in rank_batches:
            assert b.dense.shape == (batch // world, 13)
            assert b.sparse.keys() == dataset.sparse_names
            assert b.sparse.values().shape == (26 * batch // world,)
            seen += _row_keys(b)
    assert len(seen) == len(set(seen)) == (len(split) // batch) * batch
    # the same global batches as one process sees
    single = [k for b in SplitLoader(split, dataset.sparse_names, batch, 0, 1, shuffle=True, seed=5).epoch(0)
              for k in _row_keys(b)]
    assert set(single) == set(seen)
    # a new epoch is a new order
    again = next(iter(SplitLoader(split, dataset.sparse_names, batch, 0, 1, shuffle=True, seed=5).epoch(1)))
    assert _row_keys(again) != single[:batch]


def test_kjt_is_key_major_and_matches_rows(dataset):
    split = dataset.split("val")
    b = next(iter(SplitLoader(split, dataset.sparse_names, 8).epoch()))
    ids = b.sparse.values().view(26, 8).T.numpy()
    np.testing.assert_array_equal(ids, split.sparse[:8])
    np.testing.assert_array_equal(b.labels.numpy(), split.labels[:8])


def test_eval_covers_every_row_once_with_padding(dataset):
    split = dataset.split("val")
    world, batch = 2, 1024  # 3000 rows: the last batch is padded
    keys, weights = [], 0.0
    for r in range(world):
        for b in SplitLoader(split, dataset.sparse_names, batch, r, world).epoch():
            keys += _row_keys(b)
            weights += float(b.weights.sum())
    assert len(keys) == len(set(keys)) == len(split) == weights


def test_val_and_test_never_overlap_train(dataset):
    def rows(name):
        s = dataset.split(name)
        return {d.tobytes() + c.tobytes() for d, c in zip(np.asarray(s.dense), np.asarray(s.sparse))}

    train = rows("train")
    assert not train & rows("val")
    assert not train & rows("test")
    assert not rows("val") & rows("test")


def test_batch_must_divide_over_ranks(dataset):
    with pytest.raises(ConfigError, match="not divisible"):
        SplitLoader(dataset.split("train"), dataset.sparse_names, 101, 0, 2)
