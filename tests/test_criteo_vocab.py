"""Dictionaries as sorted arrays: counting, merging, thresholds, id layout, files."""

from collections import Counter

import numpy as np
import pytest

from cce_dlrm.data.criteo.features import factorize
from cce_dlrm.data.criteo.vocab import VocabCounter, Vocabulary, merge_keys, pack, unpack


def _chunks(rng, n_chunks=12, rows=500):
    out = []
    for _ in range(n_chunks):
        v = (rng.zipf(1.3, rows) % 3000).astype(np.int64) * 1_400_000  # spans past 2^31
        v[rng.random(rows) < 0.1] = -1  # empty
        out.append(v)
    return out


def test_factorize():
    v = np.array([7, -1, 0xFFFFFFFF, 7, 3, -1, 7], np.int64)
    codes, uniques, counts = factorize(v)
    assert uniques.tolist() == [-1, 3, 7, 0xFFFFFFFF]
    assert (uniques[codes] == v).all() and codes.dtype == np.uint16
    assert counts.tolist() == [2, 1, 3, 1]
    codes, uniques, _ = factorize(np.arange(70_000, dtype=np.int64)[::-1])
    assert codes.dtype == np.uint32 and (uniques[codes] == np.arange(70_000)[::-1]).all()


def test_counter_matches_python_counter():
    rng = np.random.default_rng(0)
    counter, expected = VocabCounter(features=1), Counter()
    for v in _chunks(rng):
        _, u, c = factorize(v)
        counter.add_chunk(0, u, c)
        expected.update(v.tolist())
    values, counts = counter.features[0].result()
    assert counter.features[0].empty == expected.pop(-1)
    assert values.tolist() == sorted(expected)
    assert counts.tolist() == [expected[k] for k in sorted(expected)]


def test_counts_saturate_instead_of_overflowing():
    big = 2**32 - 10
    merged = merge_keys([pack(np.array([5]), np.array([big])), pack(np.array([5, 6]), np.array([100, 1]))])
    values, counts = unpack(merged)
    assert values.tolist() == [5, 6] and counts.tolist() == [2**32 - 1, 1]


def test_merging_by_value_ranges_gives_the_same_union():
    rng = np.random.default_rng(3)
    for trial in range(10):
        parts = []
        for _ in range(rng.integers(1, 5)):
            v = np.unique(rng.integers(0, 2**32 if trial % 2 else 3000, rng.integers(0, 5000)))
            parts.append(pack(v, rng.integers(1, 2**32 - 1, len(v))))
        assert np.array_equal(merge_keys(parts), merge_keys(parts, block=100))


@pytest.mark.parametrize("threshold", [0, 1, 2, 5])
def test_ids_are_contiguous_and_respect_the_threshold(threshold):
    rng = np.random.default_rng(1)
    chunks = _chunks(rng)
    counter = VocabCounter(features=1)
    for v in chunks:
        _, u, c = factorize(v)
        counter.add_chunk(0, u, c)
    vocab = counter.finish(threshold)
    every = np.concatenate(chunks)
    _, u, c = factorize(every)
    ids = vocab.ids(0, u)
    card = vocab.cardinalities[0]
    assert sorted(set(ids.tolist())) == list(range(card))  # every id used, none beyond
    kept = c >= max(threshold, 1)
    if threshold >= 2:
        assert (ids[~kept] == 0).all() and (ids[kept] > 0).all()
        assert card == 1 + kept.sum() and vocab.rare_values[0] == (~kept).sum()
    else:
        assert card == len(u)
    assert (np.diff(ids[kept]) > 0).all()  # ascending raw value -> ascending id, empty first
    assert u[0] == -1 and (ids[0] == (1 if threshold >= 2 else 0) if kept[0] else ids[0] == 0)


def test_unknown_value_without_rare_bucket_is_an_error():
    counter = VocabCounter(features=1)
    counter.add_chunk(0, np.array([1, 2]), np.array([1, 1]))
    vocab = counter.finish(0)
    with pytest.raises(RuntimeError, match="missing"):
        vocab.ids(0, np.array([3]))


def test_files_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    counter = VocabCounter(features=2)
    for v in _chunks(rng, 3):
        _, u, c = factorize(v)
        counter.add_chunk(0, u, c)
        counter.add_chunk(1, u[:5], c[:5])
    counter.save(tmp_path / "counts.npz", files_done=3)
    loaded, done = VocabCounter.load(tmp_path / "counts.npz")
    assert done == 3
    a, b = counter.finish(3), loaded.finish(3)
    b.save(tmp_path / "vocab.npz")
    c = Vocabulary.load(tmp_path / "vocab.npz")
    for v in (b, c):
        assert v.cardinalities == a.cardinalities and v.rare_values == a.rare_values
        assert all((x == y).all() for x, y in zip(v.values, a.values))
