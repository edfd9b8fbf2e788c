"""A processed Criteo dataset is replaced only once its successor is complete; wrong-format
input (CSV) is named up front; a stale dataset's message says which settings and which
input files (path, sizes) changed."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from cce_dlrm.data.criteo import CriteoInputError, preprocess
from cce_dlrm.data.criteo.source import looks_like_csv
from cce_dlrm.data.processed import ProcessedDataset, replace_folder

ROWS = (Path(__file__).parent / "fixtures" / "criteo" / "kaggle_rows_400.txt").read_text().splitlines()
HEADER = ",".join(["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)])


class Stop(Exception):
    pass


def _raw(tmp_path, lines, name="train.txt"):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    (raw / name).write_text("\n".join(lines) + "\n")
    return raw


def _run(tmp_path, **kw):
    kw.setdefault("chunk_mb", 0.01)
    return preprocess("kaggle", tmp_path / "raw", tmp_path / "out", progress=False, **kw)


def _arrays(folder):
    ds = ProcessedDataset(folder)
    return ds.cardinalities, {s: [a.copy() for a in (ds.split(s).dense, ds.split(s).sparse,
                                                       ds.split(s).labels)]
                              for s in ("train", "val", "test")}


def _same(a, b):
    assert a[0] == b[0]
    for split in a[1]:
        for x, y in zip(a[1][split], b[1][split]):
            assert np.array_equal(x, y), split


def _as_csv(lines, header=True):
    out = [HEADER] if header else []
    return out + [",".join(line.split("\t")) for line in lines]


def test_failed_reruns_leave_the_previous_dataset_in_place(tmp_path):
    _raw(tmp_path, ROWS)
    _run(tmp_path)
    before = _arrays(tmp_path / "out")
    meta = (tmp_path / "out" / "meta.json").read_text()

    # 1. train.txt replaced by a CSV export: refused before anything is touched
    _raw(tmp_path, _as_csv(ROWS))
    with pytest.raises(CriteoInputError, match="looks like CSV"):
        _run(tmp_path)
    _same(_arrays(tmp_path / "out"), before)

    # 2. a malformed row late in the file: pass 1 had already written parts of the successor
    bad = list(ROWS)
    bad[350] = "\t".join(["7"] + bad[350].split("\t")[1:])
    _raw(tmp_path, bad)
    with pytest.raises(CriteoInputError, match="train.txt:351: field label"):
        _run(tmp_path)
    assert (tmp_path / "out.building" / ".work").is_dir()  # the successor's unfinished work
    _same(_arrays(tmp_path / "out"), before)

    # 3. other settings, interrupted in pass 2 (the successor's split files half written)
    _raw(tmp_path, ROWS)

    def die(stage, n):
        if (stage, n) == ("write", 4):
            raise Stop

    with pytest.raises(Stop):
        _run(tmp_path, frequency_threshold=2, on_chunk=die, sync_mb=0)
    _same(_arrays(tmp_path / "out"), before)
    assert (tmp_path / "out" / "meta.json").read_text() == meta

    # the interrupted successor resumes and then replaces the dataset; nothing is left over
    calls = []
    _run(tmp_path, frequency_threshold=2, on_chunk=lambda s, n: calls.append(s))
    assert "parse" not in calls  # resumed in pass 2
    after = _arrays(tmp_path / "out")
    assert sum(after[0]) < sum(before[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def test_files_that_are_not_the_datasets_own_survive_the_swap(tmp_path, caplog):
    _raw(tmp_path, ROWS)
    _run(tmp_path)
    caplog.set_level("INFO")
    (tmp_path / "out" / "notes.txt").write_text("mine")
    _run(tmp_path, frequency_threshold=2)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert "notes.txt" in caplog.text and ProcessedDataset(tmp_path / "out").rows["train"] == 343
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def test_an_output_behind_a_symlink_is_rebuilt_where_it_lives(tmp_path):
    _raw(tmp_path, ROWS)
    disk = tmp_path / "disk"
    disk.mkdir()
    preprocess("kaggle", tmp_path / "raw", disk / "real", progress=False, chunk_mb=0.01)
    (tmp_path / "out").symlink_to(disk / "real")
    _run(tmp_path, frequency_threshold=2)
    assert (tmp_path / "out").is_symlink()
    assert sorted(p.name for p in disk.iterdir()) == ["real"]
    assert ProcessedDataset(tmp_path / "out").meta["build"]["settings"]["frequency_threshold"] == 2


def test_replace_folder_swaps_in_one_step(tmp_path):
    new, dest = tmp_path / "new", tmp_path / "dest"
    new.mkdir()
    (new / "a").write_text("new")
    assert replace_folder(new, dest) is None and (dest / "a").read_text() == "new"
    new.mkdir()
    (new / "a").write_text("newer")
    old = replace_folder(new, dest)
    assert (dest / "a").read_text() == "newer" and (old / "a").read_text() == "new"


def test_replace_folder_without_an_atomic_swap(tmp_path, monkeypatch):
    import cce_dlrm.data.processed as processed

    monkeypatch.setattr(processed, "_exchange", lambda a, b: False)
    new, dest = tmp_path / "new", tmp_path / "dest"
    new.mkdir()
    dest.mkdir()
    (new / "a").write_text("new")
    (dest / "a").write_text("old")
    old = replace_folder(new, dest)
    assert old == tmp_path / "dest.previous" and (old / "a").read_text() == "old"
    assert (dest / "a").read_text() == "new" and not new.exists()


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("packed", [False, True])
def test_csv_input_is_named_in_one_line(tmp_path, header, packed):
    text = ("\n".join(_as_csv(ROWS[:20], header)) + "\n").encode()
    raw = tmp_path / "raw"
    raw.mkdir()
    name = "train.txt.gz" if packed else "train.txt"
    (raw / name).write_bytes(gzip.compress(text) if packed else text)
    with pytest.raises(CriteoInputError) as err:
        preprocess("kaggle", raw, tmp_path / "out", file=name, progress=False, mode="lenient")
    msg = str(err.value)
    first = ",".join(ROWS[0].split("\t")[:3])
    shown = "header 'label,I1,I2,...'" if header else f"no header row, first row '{first},...'"
    assert msg == (f"{raw / name}: this looks like CSV (comma-separated, {shown}); "
                   "expected tab-separated Criteo rows")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.building").exists()


def test_tab_separated_rows_are_not_csv(tmp_path):
    path = _raw(tmp_path, ROWS[:3]) / "train.txt"
    assert looks_like_csv(path) is None
    commas = list(ROWS[:3])
    commas[0] = commas[0].replace("\t", "\t,", 1)  # a comma inside a tab-separated row
    path.write_text("\n".join(commas) + "\n")
    assert looks_like_csv(path) is None


def test_stale_message_names_the_settings_and_the_changed_files(tmp_path, caplog):
    caplog.set_level("INFO")
    raw = _raw(tmp_path, ROWS)
    size = (raw / "train.txt").stat().st_size
    _run(tmp_path)
    fewer = ROWS[:-5]
    _raw(tmp_path, fewer)
    new_size = (raw / "train.txt").stat().st_size
    _run(tmp_path, frequency_threshold=2)
    assert (f"is stale: settings changed: frequency_threshold 0 -> 2; train.txt changed "
            f"({raw / 'train.txt'}: size {size:,} -> {new_size:,} bytes); rebuilding") in caplog.text
    caplog.clear()
    _raw(tmp_path, fewer[::-1])  # same size, other content
    _run(tmp_path, frequency_threshold=2)
    assert (f"is stale: train.txt changed ({raw / 'train.txt'}: size {new_size:,} -> "
            f"{new_size:,} bytes, other content); rebuilding") in caplog.text
    assert "settings changed" not in caplog.text


def test_stale_message_names_terabyte_days_added_and_removed(tmp_path, caplog):
    caplog.set_level("INFO")
    raw = tmp_path / "raw"
    raw.mkdir()
    for d, lines in enumerate([ROWS[:100], ROWS[100:200], ROWS[200:300]]):
        (raw / f"day_{d}").write_text("\n".join(lines) + "\n")
    kw = dict(progress=False, chunk_mb=0.01, max_ind_range=1000)
    preprocess("terabyte", raw, tmp_path / "out", days="0-1", **kw)
    preprocess("terabyte", raw, tmp_path / "out", days=[0, 2], **kw)
    size1, size2 = ((raw / f"day_{d}").stat().st_size for d in (1, 2))
    assert (f"day_2 is a new input ({raw / 'day_2'}: {size2:,} bytes); "
            "day_1 is no longer an input") in caplog.text
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["rows"]["train"] == 100
