"""End to end: raw Criteo files -> processed folder, against a plain-Python reference.

Covers the split layout on real rows, ids contiguous per feature, the dense transform,
gzip and CRLF input, lenient reconciliation, frequency threshold, max_ind_range, negative
subsampling (training split only), resume after a simulated and a real kill (byte-identical
result), stale-output detection, empty and truncated inputs, Terabyte days and the CLI.
"""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cce_dlrm.data.criteo import CriteoInputError, PreprocessConfigError, preprocess
from cce_dlrm.data.criteo.layout import SPLIT_ORDER, kaggle_segments, terabyte_segments
from cce_dlrm.data.criteo.sampling import ROW_FRACTION_STREAM, line_uniforms
from cce_dlrm.data.processed import ProcessedDataset

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "criteo" / "kaggle_rows_400.txt"
ROWS = FIXTURE.read_text().splitlines()
CHUNK_MB = 0.01  # ~40 rows per chunk: every run has several chunks


# ----------------------------------------------------------------------------------------
# Reference: the rules of the issue, one line at a time in plain Python


def reference(files, layouts, threshold=0, max_ind_range=0, rate=0.0, seed=0, fraction=1.0,
              moduli=None, keys=None):
    """files: per file, its lines (None = a malformed line that still takes a line number);
    layouts: "kaggle", "train_day" or "eval_day"; keys: per file, what row_fraction's numbers
    depend on (the day number; 0 for Kaggle). Returns ({split: (labels, dense, sparse)},
    cardinalities)."""
    kept = []  # (split, label, dense, raw cats)
    keys = keys or [0] * len(files)
    for fi, (lines, layout) in enumerate(zip(files, layouts)):
        n = len(lines)
        segments = kaggle_segments(n) if layout == "kaggle" else terabyte_segments(layout == "eval_day", n)
        for i, line in enumerate(lines):
            if line is None:
                continue
            split = next(s.split for s in segments if s.start <= i and (s.stop is None or i < s.stop))
            f = (line.rstrip("\r").split("\t") + [""] * 40)[:40]
            label = int(f[0])
            if line_uniforms(seed, keys[fi], np.array([i]), ROW_FRACTION_STREAM)[0] >= fraction:
                continue
            if rate and split == "train" and label == 0 and line_uniforms(seed, fi, np.array([i]))[0] < rate:
                continue
            dense = [np.float32(np.log1p(float(max(int(x or 0), 0)))) for x in f[1:14]]
            cats = [-1 if not x else (int(x, 16) % max_ind_range if max_ind_range else int(x, 16))
                    for x in f[14:40]]
            if moduli is not None:
                cats = [c if c < 0 else c % m for c, m in zip(cats, moduli)]
            kept.append((split, label, dense, cats))
    cards, maps = [], []
    for j in range(26):
        counts = Counter(row[3][j] for row in kept)
        keep = sorted(v for v, c in counts.items() if c >= max(threshold, 1))
        base = 1 if threshold >= 2 else 0
        maps.append({v: base + k for k, v in enumerate(keep)})
        cards.append(base + len(keep))
    out = {}
    for split in SPLIT_ORDER:
        rows = [r for r in kept if r[0] == split]
        out[split] = (np.array([r[1] for r in rows], np.uint8),
                      np.array([r[2] for r in rows], np.float32).reshape(-1, 13),
                      np.array([[maps[j].get(r[3][j], 0) for j in range(26)] for r in rows],
                               np.int32).reshape(-1, 26))
    return out, cards


def assert_matches(folder, expected):
    splits, cards = expected
    ds = ProcessedDataset(folder)
    assert ds.cardinalities == cards
    for split, (labels, dense, sparse) in splits.items():
        arrays = ds.split(split)
        assert len(arrays) == len(labels), split
        assert np.array_equal(arrays.labels, labels), split
        assert np.array_equal(arrays.dense, dense), split
        assert np.array_equal(arrays.sparse, sparse), split


def kaggle(tmp_path, content, name="train.txt", out="out", **kw):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    data = content if isinstance(content, bytes) else ("\n".join(content) + "\n").encode()
    (raw / name).write_bytes(data)
    kw.setdefault("chunk_mb", CHUNK_MB)
    return preprocess("kaggle", raw, tmp_path / out, file=name, progress=False, **kw)


def folder_bytes(folder):
    """Every file of a processed folder (meta.json without its timing), for comparisons."""
    out = {}
    for p in sorted(Path(folder).iterdir()):
        if p.name == "meta.json":
            meta = json.loads(p.read_text())
            meta.pop("seconds")
            out[p.name] = meta
        elif p.is_file():
            out[p.name] = p.read_bytes()
    return out


# ----------------------------------------------------------------------------------------


def test_real_rows_match_the_reference(tmp_path):
    meta = kaggle(tmp_path, ROWS)
    assert_matches(tmp_path / "out", reference([ROWS], ["kaggle"]))
    assert meta["rows"] == {"train": 343, "val": 28, "test": 29}  # divmod(400, 7) = (57, 1)
    p = meta["preprocess"]
    assert p["rows_read"] == p["rows_written"] == 400 and sum(p["rows_skipped"].values()) == 0
    ds = ProcessedDataset(tmp_path / "out")
    for j, card in enumerate(ds.cardinalities):  # ids contiguous: every id 0..card-1 used
        used = np.unique(np.concatenate([ds.split(s).sparse[:, j] for s in SPLIT_ORDER]))
        assert used.tolist() == list(range(card))
    assert not (tmp_path / "out" / ".work").exists()
    assert 0 < meta["click_rate"]["train"] < 1


def test_gzip_crlf_and_stripped_input_give_the_same_output(tmp_path):
    kaggle(tmp_path, ROWS, out="plain")
    kaggle(tmp_path, gzip.compress(("\n".join(ROWS) + "\n").encode()), name="train.txt.gz", out="gz")
    crlf = [r.rstrip("\t") if r.endswith("\t") else r for r in ROWS]  # strip trailing empties
    stripped = sum(r != s for r, s in zip(ROWS, crlf))
    meta = kaggle(tmp_path, ("\r\n".join(crlf) + "\r\n").encode(), name="crlf.txt", out="crlf")
    assert stripped > 10 and meta["preprocess"]["rows_padded"] == stripped
    plain = folder_bytes(tmp_path / "plain")
    for other in ("gz", "crlf"):
        b = folder_bytes(tmp_path / other)
        assert [k for k in plain if k != "meta.json" and plain[k] != b[k]] == []


def test_output_does_not_depend_on_workers_or_chunk_size(tmp_path):
    lines = ROWS[:200] + ["", ROWS[5] + "\tx"] + ROWS[200:]
    kw = dict(mode="lenient", frequency_threshold=2, negative_subsampling=0.4, max_ind_range=5000)
    kaggle(tmp_path, lines, out="one", workers=1, **kw)
    kaggle(tmp_path, lines, out="three", workers=3, chunk_mb=0.003, **kw)
    kaggle(tmp_path, lines, out="big", chunk_mb=1, **kw)
    one = folder_bytes(tmp_path / "one")
    assert folder_bytes(tmp_path / "three") == one == folder_bytes(tmp_path / "big")


MALFORMED_LINES = {  # kind: a bad line
    "bad_label": "\t".join(["2"] + ROWS[0].split("\t")[1:]),
    "bad_dense": "\t".join(ROWS[1].split("\t")[:5] + ["12a"] + ROWS[1].split("\t")[6:]),
    "bad_categorical": "\t".join(ROWS[2].split("\t")[:20] + ["xyz"] + ROWS[2].split("\t")[21:]),
    "long_categorical": "\t".join(ROWS[3].split("\t")[:30] + ["0123456789"] + ROWS[3].split("\t")[31:]),
    "too_many_fields": ROWS[4] + "\t1",
    "empty_line": "",
}


def test_lenient_skips_counts_and_reconciles(tmp_path):
    lines = list(ROWS)
    rng = np.random.default_rng(0)
    positions = sorted(rng.choice(len(lines), len(MALFORMED_LINES), replace=False), reverse=True)
    for pos, bad in zip(positions, MALFORMED_LINES.values()):
        lines.insert(int(pos), bad)
    meta = kaggle(tmp_path, lines, mode="lenient")
    p = meta["preprocess"]
    assert p["rows_read"] == len(lines) == 406
    assert p["rows_written"] == 400 == sum(meta["rows"].values())
    assert p["rows_read"] == p["rows_written"] + sum(p["rows_skipped"].values())
    assert {k: v for k, v in p["rows_skipped"].items() if v} == dict.fromkeys(MALFORMED_LINES, 1)
    marked = [None if ln in MALFORMED_LINES.values() else ln for ln in lines]
    assert_matches(tmp_path / "out", reference([marked], ["kaggle"]))
    with pytest.raises(CriteoInputError, match=r"^train.txt:\d+: "):
        kaggle(tmp_path, lines, out="strict")
    assert not (tmp_path / "strict" / "meta.json").exists()


def test_strict_error_names_file_line_field_and_problem(tmp_path):
    lines = list(ROWS)
    lines[122] = "\t".join(lines[122].split("\t")[:3] + ["3.5"] + lines[122].split("\t")[4:])
    with pytest.raises(CriteoInputError) as err:
        kaggle(tmp_path, lines)
    assert str(err.value) == "train.txt:123: field I3: not an integer (or outside int64): '3.5'"


def test_frequency_threshold_and_max_ind_range(tmp_path):
    meta = kaggle(tmp_path, ROWS, frequency_threshold=3, out="thr")
    assert_matches(tmp_path / "thr", reference([ROWS], ["kaggle"], threshold=3))
    assert all(r > 0 for r in meta["preprocess"]["rare_values"][:3])
    meta = kaggle(tmp_path, ROWS, max_ind_range=97, out="mod")
    assert_matches(tmp_path / "mod", reference([ROWS], ["kaggle"], max_ind_range=97))
    assert max(meta["cardinalities"]) <= 98  # 97 residues plus the empty value


def test_negative_subsampling_only_on_train(tmp_path):
    full = kaggle(tmp_path, ROWS, out="full")
    meta = kaggle(tmp_path, ROWS, negative_subsampling=0.5, subsample_seed=3, out="sub")
    assert_matches(tmp_path / "sub", reference([ROWS], ["kaggle"], rate=0.5, seed=3))
    a, b = ProcessedDataset(tmp_path / "full"), ProcessedDataset(tmp_path / "sub")
    for split in ("val", "test"):  # untouched (ids may differ: the dictionaries shrink)
        assert np.array_equal(a.split(split).labels, b.split(split).labels)
        assert np.array_equal(a.split(split).dense, b.split(split).dense)
    train_a, train_b = a.split("train").labels, b.split("train").labels
    assert train_b.sum() == train_a.sum()  # every positive kept
    skipped = meta["preprocess"]["rows_skipped"]["subsampled_negative"]
    assert skipped == len(train_a) - len(train_b) and 60 < skipped < 200
    assert meta["preprocess"]["rows_read"] == meta["preprocess"]["rows_written"] + skipped
    assert sum(meta["cardinalities"]) < sum(full["cardinalities"])


class Stop(Exception):
    pass


@pytest.mark.parametrize("stage, after, sync_mb", [
    ("parse", 1, 0), ("parse", 6, 0), ("write", 1, 0), ("write", 7, 0),
    ("parse", 6, 1024), ("write", 7, 1024),  # nothing committed yet: all redone
])
def test_resume_after_a_simulated_kill_is_byte_identical(tmp_path, stage, after, sync_mb):
    kw = dict(frequency_threshold=2, negative_subsampling=0.3, sync_mb=sync_mb)
    kaggle(tmp_path, ROWS, out="whole", **kw)

    def die(s, n):
        if (s, n) == (stage, after):
            raise Stop

    with pytest.raises(Stop):
        kaggle(tmp_path, ROWS, out="resumed", on_chunk=die, **kw)
    out = tmp_path / "resumed"
    assert not (out / "meta.json").exists()
    assert not list(out.glob("*.f32")) and not list(out.glob("*.i32"))  # nothing looks finished
    calls = []
    kaggle(tmp_path, ROWS, out="resumed", on_chunk=lambda s, n: calls.append(s), **kw)
    assert folder_bytes(out) == folder_bytes(tmp_path / "whole")
    if stage == "write":  # pass 1 had finished: not redone
        assert "parse" not in calls
    else:  # only the chunks not committed before the kill are parsed again
        assert calls.count("parse") == (10 - after if sync_mb == 0 else 10)


def _children(pid):
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return out


def _alive(pid):
    """Running (not gone, not a zombie waiting for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_resume_after_a_real_sigkill(tmp_path):
    rows = ROWS * 10
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.txt").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    script = (
        "import time, sys\n"
        "from cce_dlrm.data.criteo import preprocess\n"
        f"preprocess('kaggle', {str(raw)!r}, {str(out)!r}, progress=False, chunk_mb=0.02,\n"
        "           sync_mb=0, on_chunk=lambda s, n: time.sleep(0.05))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.time() + 60
    stage = tmp_path / "out.building"  # built there, swapped in at the end
    while len(list((stage / ".work").glob("*.json"))) < 12 and time.time() < deadline:
        time.sleep(0.02)
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    assert workers and not [p for p in workers if _alive(p)]  # the workers died with it
    assert not out.exists() and not (stage / "meta.json").exists()
    assert [p.name for p in stage.iterdir() if p.suffix in (".f32", ".i32", ".u8")] == []
    preprocess("kaggle", raw, out, progress=False, chunk_mb=0.02)
    assert not stage.exists()
    preprocess("kaggle", raw, tmp_path / "whole", progress=False, chunk_mb=0.02)
    assert folder_bytes(out) == folder_bytes(tmp_path / "whole")


def test_up_to_date_and_stale_outputs(tmp_path, caplog):
    caplog.set_level("INFO")
    kaggle(tmp_path, ROWS)
    sparse = tmp_path / "out" / "train.sparse.i32"
    stamp = sparse.stat().st_mtime_ns
    meta = kaggle(tmp_path, ROWS)  # same file, same settings: nothing to do
    assert sparse.stat().st_mtime_ns == stamp and "up to date" in caplog.text
    sparse.write_bytes(sparse.read_bytes()[:-4])  # a damaged output is rebuilt
    kaggle(tmp_path, ROWS)
    assert "damaged" in caplog.text and sparse.stat().st_size % 104 == 0
    kaggle(tmp_path, ROWS[:-1] + [ROWS[0]])  # the raw file changed (same size here)
    assert "stale: train.txt changed" in caplog.text
    assert_matches(tmp_path / "out", reference([ROWS[:-1] + [ROWS[0]]], ["kaggle"]))
    kaggle(tmp_path, ROWS[:-1] + [ROWS[0]], frequency_threshold=2)
    assert "settings changed: frequency_threshold 0 -> 2" in caplog.text
    assert meta["build"]["files"][0]["size"] == FIXTURE.stat().st_size


def test_unfinished_work_for_another_file_is_discarded(tmp_path, caplog):
    caplog.set_level("INFO")

    def die(stage, n):
        if n == 3:
            raise Stop

    with pytest.raises(Stop):
        kaggle(tmp_path, ROWS, on_chunk=die, sync_mb=0)
    kaggle(tmp_path, ROWS[::-1])
    assert "discarding unfinished work" in caplog.text
    assert_matches(tmp_path / "out", reference([ROWS[::-1]], ["kaggle"]))


def test_empty_file(tmp_path):
    with pytest.raises(CriteoInputError, match="train.txt: empty file"):
        kaggle(tmp_path, b"")
    with pytest.raises(CriteoInputError, match="no usable rows"):
        kaggle(tmp_path, b"", mode="lenient", out="lenient")


def test_truncated_gzip(tmp_path):
    packed = gzip.compress(("\n".join(ROWS) + "\n").encode())
    broken = packed[: len(packed) * 3 // 4]
    with pytest.raises(CriteoInputError, match=r"train.txt.gz:\d+: gzip data ends early"):
        kaggle(tmp_path, broken, name="train.txt.gz")
    meta = kaggle(tmp_path, broken, name="train.txt.gz", mode="lenient", out="lenient")
    p = meta["preprocess"]
    kept = p["rows_written"]
    assert 200 < kept < 400 and p["rows_skipped"]["truncated_row"] == 1
    assert p["rows_read"] == kept + 1 and p["files"][0]["truncated_gzip"]
    assert_matches(tmp_path / "lenient", reference([ROWS[:kept] + [None]], ["kaggle"]))


def test_terabyte_days_plain_and_gzip(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    days = [ROWS[:150], ROWS[150:300], ROWS[300:]]
    (raw / "day_0.gz").write_bytes(gzip.compress(("\n".join(days[0]) + "\n").encode()))
    (raw / "day_1").write_text("\n".join(days[1]) + "\n")
    (raw / "day_2.gz").write_bytes(gzip.compress(("\n".join(days[2]) + "\n").encode()))
    (raw / "day_3").write_text("")  # not listed: ignored
    meta = preprocess("terabyte", raw, tmp_path / "out", days="0-2", progress=False,
                      chunk_mb=CHUNK_MB, max_ind_range=1000, negative_subsampling=0.25)
    assert meta["rows"]["test"] == 50 and meta["rows"]["val"] == 50
    expected = reference(days, ["train_day", "train_day", "eval_day"], max_ind_range=1000, rate=0.25)
    assert_matches(tmp_path / "out", expected)
    with pytest.raises(CriteoInputError, match="day_3: empty file"):
        preprocess("terabyte", raw, tmp_path / "out3", days="2-3", progress=False)
    meta = preprocess("terabyte", raw, tmp_path / "out3", days="1-3", mode="lenient", progress=False)
    assert meta["rows"] == {"train": 250, "val": 0, "test": 0}  # empty evaluation day, recorded
    assert meta["preprocess"]["files"][2]["empty"]


def test_configuration_errors(tmp_path):
    with pytest.raises(PreprocessConfigError, match="make download-criteo"):
        preprocess("kaggle", tmp_path, tmp_path / "out")
    with pytest.raises(PreprocessConfigError, match="mode"):
        kaggle(tmp_path, ROWS, mode="sloppy")
    with pytest.raises(PreprocessConfigError, match="negative_subsampling"):
        kaggle(tmp_path, ROWS, negative_subsampling=1.0)


def _cli(tmp_path, *overrides):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "cce_dlrm.preprocess", "dataset=criteo_kaggle",
         f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}",
         "progress=false", *overrides],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_cli_builds_the_dataset_and_reports_bad_input_in_one_line(tmp_path):
    raw = tmp_path / "data" / "raw" / "criteo_kaggle"
    raw.mkdir(parents=True)
    (raw / "train.txt").write_text("\n".join(ROWS) + "\n")
    done = _cli(tmp_path, "dataset.preprocess.chunk_mb=0.05")
    assert done.returncode == 0, done.stderr
    assert ProcessedDataset(tmp_path / "data" / "processed" / "criteo_kaggle").rows["train"] == 343
    assert "rows read 400 = written 400" in done.stdout + done.stderr

    lines = list(ROWS)
    lines[9] = "\t".join(["1"] + lines[9].split("\t")[1:14] + ["nothex"] + lines[9].split("\t")[15:])
    (raw / "train.txt").write_text("\n".join(lines) + "\n")
    failed = _cli(tmp_path)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == (
        "input error: train.txt:10: field C1: not hexadecimal: 'nothex'")
    missing = _cli(tmp_path, "dataset.preprocess.file=nothere.txt")
    assert missing.returncode != 0 and "make download-criteo" in missing.stderr
