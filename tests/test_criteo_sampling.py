"""``row_fraction`` (a seeded fraction of all rows, every split) and ``per_feature_modulus``
(feature j's raw value modulo its own number): against the line-by-line reference of
test_criteo_pipeline, stable across reruns, chunk sizes and resumes, and part of the
settings that make an output stale."""

import numpy as np
import pytest
from test_criteo_pipeline import ROWS, Stop, assert_matches, folder_bytes, kaggle, reference

from cce_dlrm.data.criteo import PreprocessConfigError, PreprocessSettings, preprocess
from cce_dlrm.data.criteo.features import reduce_range
from cce_dlrm.data.processed import ProcessedDataset

# Ten copies of the 400 real rows: 4,000 lines, each with its own line number (so its own
# sampling number); train 3,430, test 285, val 285.
MANY = ROWS * 10
# 26 small moduli, all different, some below a feature's number of distinct values
MODULI = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79,
          83, 89, 97, 101]


def test_row_fraction_keeps_about_the_fraction_of_every_split(tmp_path):
    full = kaggle(tmp_path, MANY, out="full", chunk_mb=0.1)
    meta = kaggle(tmp_path, MANY, out="eighth", chunk_mb=0.1, row_fraction=0.125, subsample_seed=4)
    assert_matches(tmp_path / "eighth", reference([MANY], ["kaggle"], fraction=0.125, seed=4))
    for split, n in full["rows"].items():  # binomial(n, 1/8): within 4 standard deviations
        kept = meta["rows"][split]
        assert abs(kept - n / 8) < 4 * np.sqrt(n * 0.125 * 0.875), (split, kept, n)
        assert kept > 0
    p = meta["preprocess"]
    assert p["rows_skipped"]["row_fraction_dropped"] == 4000 - p["rows_written"]
    assert p["rows_skipped"]["subsampled_negative"] == 0
    assert meta["build"]["settings"]["row_fraction"] == 0.125
    # another seed keeps other rows
    kaggle(tmp_path, MANY, out="seed5", chunk_mb=0.1, row_fraction=0.125, subsample_seed=5)
    a, b = ProcessedDataset(tmp_path / "eighth"), ProcessedDataset(tmp_path / "seed5")
    assert not np.array_equal(a.split("train").dense, b.split("train").dense)


def test_row_fraction_and_negative_subsampling_are_independent(tmp_path):
    meta = kaggle(tmp_path, MANY, chunk_mb=0.1, row_fraction=0.5, negative_subsampling=0.5)
    assert_matches(tmp_path / "out", reference([MANY], ["kaggle"], fraction=0.5, rate=0.5))
    p = meta["preprocess"]
    assert p["rows_read"] == p["rows_written"] + p["rows_skipped"]["row_fraction_dropped"] + \
        p["rows_skipped"]["subsampled_negative"]
    # the same numbers for both would drop every kept training negative; about half stay
    assert 0.3 < meta["click_rate"]["train"] < 0.5


def test_row_fraction_is_the_same_on_a_rerun_with_other_chunks_and_workers(tmp_path):
    kw = dict(row_fraction=0.3, subsample_seed=1)
    kaggle(tmp_path, MANY, out="a", chunk_mb=0.1, workers=1, **kw)
    kaggle(tmp_path, MANY, out="b", chunk_mb=0.1, workers=1, **kw)
    kaggle(tmp_path, MANY, out="c", chunk_mb=0.03, workers=3, **kw)
    a, c = folder_bytes(tmp_path / "a"), folder_bytes(tmp_path / "c")
    assert folder_bytes(tmp_path / "b") == a
    # vocab.npz's empty_counts count chunks, not rows, when no threshold needs counts
    assert {k: v for k, v in c.items() if k != "vocab.npz"} == {
        k: v for k, v in a.items() if k != "vocab.npz"}


@pytest.mark.parametrize("stage, after", [("parse", 4), ("write", 5)])
def test_row_fraction_after_a_resume_is_byte_identical(tmp_path, stage, after):
    kw = dict(row_fraction=0.4, per_feature_modulus=MODULI, sync_mb=0)
    kaggle(tmp_path, ROWS, out="whole", **kw)

    def die(s, n):
        if (s, n) == (stage, after):
            raise Stop

    with pytest.raises(Stop):
        kaggle(tmp_path, ROWS, out="resumed", on_chunk=die, **kw)
    assert not (tmp_path / "resumed" / "meta.json").exists()
    kaggle(tmp_path, ROWS, out="resumed", **kw)
    assert folder_bytes(tmp_path / "resumed") == folder_bytes(tmp_path / "whole")


def test_row_fraction_on_terabyte_days_keys_on_the_day_number(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    days = {0: ROWS[:150], 1: ROWS[150:250], 2: ROWS[250:]}
    for d, lines in days.items():
        (raw / f"day_{d}").write_text("\n".join(lines) + "\n")
    kw = dict(progress=False, chunk_mb=0.01, max_ind_range=0, row_fraction=0.5)
    meta = preprocess("terabyte", raw, tmp_path / "all", days="0-2", **kw)
    assert_matches(tmp_path / "all", reference(list(days.values()), ["train_day", "train_day", "eval_day"],
                                               fraction=0.5, keys=[0, 1, 2]))
    assert all(0 < meta["rows"][s] < n for s, n in {"train": 250, "test": 75, "val": 75}.items())
    # leaving day 1 out keeps the same rows of days 0 and 2 (same test and validation rows)
    preprocess("terabyte", raw, tmp_path / "some", days=[0, 2], **kw)
    a, b = ProcessedDataset(tmp_path / "all"), ProcessedDataset(tmp_path / "some")
    for split in ("test", "val"):
        assert np.array_equal(a.split(split).dense, b.split(split).dense)
        assert np.array_equal(a.split(split).labels, b.split(split).labels)
    assert np.array_equal(a.split("train").dense[:len(b.split("train"))], b.split("train").dense)


def test_per_feature_modulus_bounds_every_feature(tmp_path):
    meta = kaggle(tmp_path, ROWS, per_feature_modulus=MODULI)
    assert_matches(tmp_path / "out", reference([ROWS], ["kaggle"], moduli=MODULI))
    full = kaggle(tmp_path, ROWS, out="full")
    for j, (card, m) in enumerate(zip(meta["cardinalities"], MODULI)):
        assert card <= m + 1, (j, card, m)  # m residues plus the empty value
    assert sum(meta["cardinalities"]) < sum(full["cardinalities"])
    assert meta["build"]["settings"]["per_feature_modulus"] == MODULI


def test_per_feature_modulus_with_equal_moduli_is_max_ind_range(tmp_path):
    kaggle(tmp_path, ROWS, out="global", max_ind_range=97, frequency_threshold=2)
    kaggle(tmp_path, ROWS, out="each", per_feature_modulus=[97] * 26, frequency_threshold=2)
    a, b = folder_bytes(tmp_path / "global"), folder_bytes(tmp_path / "each")
    assert sorted(a) == sorted(b)
    assert [k for k in a if k != "meta.json" and a[k] != b[k]] == []
    assert a["meta.json"]["cardinalities"] == b["meta.json"]["cardinalities"]
    assert a["meta.json"]["rows"] == b["meta.json"]["rows"]


def test_reduce_range_keeps_empty_values():
    cats = np.array([[-1, 5, 7], [-1, 2**32 - 1, 3]] + [[0, 1, 2]] * 24, np.int64)
    reduce_range(cats, 0, tuple([3, 10] + [2] * 24))
    assert cats[0].tolist() == [-1, 2, 1] and cats[1].tolist() == [-1, 5, 3]
    assert cats[2].tolist() == [0, 1, 0]


@pytest.mark.parametrize("settings, message", [
    (dict(row_fraction=0.0), "row_fraction"),
    (dict(row_fraction=1.5), "row_fraction"),
    (dict(per_feature_modulus=[5] * 25), "per_feature_modulus must be null or 26"),
    (dict(per_feature_modulus=[5] * 25 + [0]), "per_feature_modulus"),
    (dict(per_feature_modulus=[5] * 25 + [2.5]), "per_feature_modulus"),
    (dict(per_feature_modulus=[5] * 26, max_ind_range=10), "not both"),
])
def test_bad_settings_are_refused(tmp_path, settings, message):
    with pytest.raises(PreprocessConfigError, match=message):
        kaggle(tmp_path, ROWS, **settings)


def test_the_new_settings_make_outputs_stale(tmp_path, caplog):
    caplog.set_level("INFO")
    kaggle(tmp_path, ROWS)
    kaggle(tmp_path, ROWS, row_fraction=0.5)
    assert "settings changed: row_fraction 1.0 -> 0.5" in caplog.text
    kaggle(tmp_path, ROWS, row_fraction=0.5, per_feature_modulus=MODULI)
    assert f"per_feature_modulus None -> {MODULI!r}" in caplog.text
    caplog.clear()
    kaggle(tmp_path, ROWS, row_fraction=0.5, per_feature_modulus=MODULI)
    assert "up to date" in caplog.text
    kaggle(tmp_path, ROWS, row_fraction=0.5, per_feature_modulus=MODULI[:-1] + [100])
    assert "settings changed: per_feature_modulus" in caplog.text


def test_defaults_record_what_older_datasets_recorded():
    """A dataset built before these settings existed (the same output as their defaults)
    stays up to date: the defaults are not recorded."""
    assert PreprocessSettings().output_settings() == {
        "mode": "strict", "frequency_threshold": 0, "max_ind_range": 0,
        "negative_subsampling": 0.0, "subsample_seed": 0}
