"""Id ranges: recorded per split and feature in meta.json when written (SplitWriter, the
Criteo pipeline), checked against the vocabularies when a dataset is opened, computed once
for a dataset written before they were recorded, and checkable against a model's sizes."""

import json
from pathlib import Path

import numpy as np
import pytest

from cce_dlrm.data.criteo import preprocess
from cce_dlrm.data.processed import (
    ID_RANGE_KEY, DatasetError, ProcessedDataset, SplitWriter, check_ids_fit, ids_file, split_file,
    write_meta,
)
ROWS = (Path(__file__).parent / "fixtures" / "criteo" / "kaggle_rows_400.txt").read_text().splitlines()

CARDS = [5] * 26


def _sparse(rows, seed):
    return np.random.default_rng(seed).integers(0, 5, (rows, 26)).astype(np.int32)


def _write(folder, sparse_by_split, cards=CARDS, chunk=7):
    for split, sparse in sparse_by_split.items():
        w = SplitWriter(folder, split)
        for lo in range(0, len(sparse), chunk):  # several chunks: the range is accumulated
            part = sparse[lo:lo + chunk]
            w.write(np.zeros((len(part), 13), np.float32), part, np.zeros(len(part), np.uint8))
        w.finish()
    write_meta(folder, {"cardinalities": cards,
                        "rows": {s: len(a) for s, a in sparse_by_split.items()}})


def test_writer_records_each_splits_range_in_meta(tmp_path):
    data = {"train": _sparse(30, 0), "val": _sparse(9, 1), "test": np.zeros((0, 26), np.int32)}
    data["train"][:, 4] = np.minimum(data["train"][:, 4], 3)
    data["train"][17, 4] = 4  # the maximum sits in the third chunk only
    _write(tmp_path, data)
    meta = json.loads((tmp_path / "meta.json").read_text())
    for split in ("train", "val"):
        assert meta[ID_RANGE_KEY][split] == {"min": data[split].min(0).tolist(),
                                             "max": data[split].max(0).tolist()}
    assert meta[ID_RANGE_KEY]["test"] is None  # no rows, no ids
    assert not ids_file(tmp_path, "train").exists()  # recorded in meta.json, side file gone
    assert ProcessedDataset(tmp_path).id_range == meta[ID_RANGE_KEY]


def test_out_of_range_id_stops_opening_with_one_line(tmp_path):
    data = {"train": _sparse(20, 0), "val": _sparse(5, 1), "test": _sparse(5, 2)}
    data["val"][3, 7] = 5  # vocabulary of cat_7 is 0..4
    _write(tmp_path, data)
    with pytest.raises(DatasetError) as err:
        ProcessedDataset(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "split 'val', feature cat_7: max id 5 outside its vocabulary of 5 ids (0..4)" in msg
    assert str(tmp_path) in msg


def test_negative_id_stops_opening(tmp_path):
    data = {"train": _sparse(20, 0), "val": _sparse(5, 1), "test": _sparse(5, 2)}
    data["train"][0, 0] = -3
    data["test"][1, 2] = 9
    _write(tmp_path, data)
    with pytest.raises(DatasetError, match=r"split 'train', feature cat_0: negative id -3 \(and 1 more\)"):
        ProcessedDataset(tmp_path)


def test_ranges_of_an_older_dataset_are_computed_once_and_recorded(tmp_path, monkeypatch):
    import cce_dlrm.data.processed as processed

    data = {"train": _sparse(50, 0), "val": _sparse(5, 1), "test": _sparse(5, 2)}
    _write(tmp_path, data)
    meta_path = tmp_path / "meta.json"
    meta = json.loads(meta_path.read_text())
    expected = meta.pop(ID_RANGE_KEY)
    meta_path.write_text(json.dumps(meta))  # as written before ranges were recorded
    monkeypatch.setattr(processed, "SCAN_ROWS", 8)  # several chunks per split
    ds = ProcessedDataset(tmp_path)
    assert ds.id_range == expected
    assert json.loads(meta_path.read_text())[ID_RANGE_KEY] == expected  # recorded
    assert list(tmp_path.glob("*.tmp")) == []

    # an older dataset with a bad id is refused all the same
    bad = np.fromfile(split_file(tmp_path, "train", "sparse"), np.int32)
    bad[26 * 40 + 3] = 5
    bad.tofile(split_file(tmp_path, "train", "sparse"))
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="split 'train', feature cat_3: max id 5"):
        ProcessedDataset(tmp_path)


def test_a_range_for_another_file_is_not_used(tmp_path):
    """The writer's side file is trusted only for the exact file it describes."""
    data = {"train": _sparse(20, 0), "val": _sparse(5, 1), "test": _sparse(5, 2)}
    for split, sparse in data.items():
        w = SplitWriter(tmp_path, split)
        w.write(np.zeros((len(sparse), 13), np.float32), sparse, np.zeros(len(sparse), np.uint8))
        w.finish()
    changed = data["train"].copy()
    changed[0, 0] = 4 if changed[:, 0].max() < 4 else 0
    changed[1:, 0] = np.minimum(changed[1:, 0], 3)
    changed.tofile(split_file(tmp_path, "train", "sparse"))  # replaced after the writer finished
    write_meta(tmp_path, {"cardinalities": CARDS, "rows": {s: len(a) for s, a in data.items()}})
    assert ProcessedDataset(tmp_path).id_range["train"]["max"] == changed.max(0).tolist()


def test_check_ids_fit_against_model_sizes(tmp_path):
    data = {"train": _sparse(20, 0), "val": _sparse(5, 1), "test": _sparse(5, 2)}
    data["train"][:, 9] = np.minimum(data["train"][:, 9], 3)
    data["train"][2, 9] = 4
    _write(tmp_path, data)
    meta = ProcessedDataset(tmp_path).meta
    check_ids_fit(meta, CARDS, against="model")
    sizes = list(CARDS)
    sizes[9] = 4
    with pytest.raises(DatasetError, match=r"feature cat_9: max id 4 outside its model of 4 ids \(0..3\)"):
        check_ids_fit(meta, sizes, against="model")
    with pytest.raises(DatasetError, match="26 categorical features but the model has 25"):
        check_ids_fit(meta, CARDS[:25], against="model")


def test_criteo_pipeline_records_the_ranges_of_its_arrays(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.txt").write_text("\n".join(ROWS) + "\n")
    meta = preprocess("kaggle", raw, tmp_path / "out", progress=False, chunk_mb=0.01,
                      frequency_threshold=2)
    ds = ProcessedDataset(tmp_path / "out")
    for split in ("train", "val", "test"):
        sparse = ds.split(split).sparse
        assert meta[ID_RANGE_KEY][split] == {"min": sparse.min(0).tolist(), "max": sparse.max(0).tolist()}
    assert ds.id_range == meta[ID_RANGE_KEY]
