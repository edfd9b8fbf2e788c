import numpy as np
import pytest

from cce_dlrm.data.processed import DatasetError, ProcessedDataset, SplitWriter, split_file, write_meta


def _write(folder, rows=10):
    for split in ("train", "val", "test"):
        w = SplitWriter(folder, split)
        w.write(np.zeros((rows, 13), np.float32), np.zeros((rows, 26), np.int32), np.zeros(rows, np.uint8))
        w.finish()
    write_meta(folder, {"cardinalities": [1] * 26, "rows": {"train": rows, "val": rows, "test": rows}})


def test_roundtrip(tmp_path):
    _write(tmp_path)
    ds = ProcessedDataset(tmp_path)
    assert len(ds.split("val")) == 10


def test_missing_folder_says_how_to_create(tmp_path):
    with pytest.raises(DatasetError, match="make preprocess"):
        ProcessedDataset(tmp_path / "nothing")


def test_truncated_file_detected(tmp_path):
    _write(tmp_path)
    path = split_file(tmp_path, "train", "sparse")
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(DatasetError, match="incomplete or stale"):
        ProcessedDataset(tmp_path)


def test_unfinished_writer_leaves_no_final_file(tmp_path):
    w = SplitWriter(tmp_path, "train")
    w.write(np.zeros((3, 13), np.float32), np.zeros((3, 26), np.int32), np.zeros(3, np.uint8))
    assert not split_file(tmp_path, "train", "dense").exists()
    w.abort()
    assert list(tmp_path.iterdir()) == []
