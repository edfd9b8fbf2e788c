"""Preprocessing speed: ``make preprocess`` against the pyarrow parse floor and torchrec.

For each row count it writes a Kaggle-format ``train.txt`` (real rows resampled for the
labels, integers and empty-field pattern; categorical values drawn with a power law over
the real per-feature cardinalities, so the dictionaries grow as with real data), then runs,
each in its own process, interleaved ``repeat`` times:

* ``make preprocess``: ``python -m cce_dlrm.preprocess dataset=criteo_kaggle`` (all of it:
  line count, both passes, meta.json);
* ``floor``: pyarrow's multithreaded CSV reader plus the vectorised hex-to-integer
  conversion of the 26 categorical columns, nothing else;
* ``torchrec``: ``BinaryCriteoUtils.tsv_to_npys`` on the same file (once: it is slow).

Each run is measured from a small process of its own (``--measure``): wall and CPU seconds
(worker processes included), the peak RSS of the largest process (``os.wait4``) and the
peak of the summed RSS of all its processes (sampled from /proc every 20 ms).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cce_dlrm.bench.report import Section, Target
from cce_dlrm.bench.scales import KAGGLE_CARDINALITIES, Scale

REPO = Path(__file__).resolve().parents[3]
SAMPLES = [REPO.parent / "shared" / "data" / "criteo-samples" / "kaggle_train_head_10k.txt",
           REPO / "tests" / "fixtures" / "criteo" / "kaggle_rows_400.txt"]
MODULE = "cce_dlrm.bench.preprocess"


def generate(path: Path, rows: int, seed: int = 0, block: int = 250_000) -> None:
    """Writes ``rows`` Kaggle-format lines to ``path`` (via a temporary name)."""
    hex_digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    template = next(p for p in SAMPLES if p.is_file())
    lines = [ln.split(b"\t") for ln in template.read_bytes().splitlines()]
    prefixes = [b"\t".join(f[:14]) for f in lines]
    width = max(map(len, prefixes))
    prefix = np.zeros((len(lines), width), np.uint8)
    for i, p in enumerate(prefixes):
        prefix[i, :len(p)] = np.frombuffer(p, np.uint8)
    prefix_len = np.array([len(p) for p in prefixes])
    empty = np.array([[len(x) == 0 for x in (f[14:] + [b""] * 26)[:26]] for f in lines])
    cards = np.array(KAGGLE_CARDINALITIES, np.float64)
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for start in range(0, rows, block):
            m = min(block, rows - start)
            t = rng.integers(0, len(lines), m)
            # power law: rank k of a value is drawn with density ~ k^(-2/3), as real ids skew
            rank = np.floor(cards * rng.random((m, 26)) ** 3).astype(np.uint64)
            # a bijection of the rank onto 32 bits (odd multiplier mod 2^32), per feature
            values = (rank * np.uint64(2654435761) + np.arange(26, dtype=np.uint64) * np.uint64(40503)) \
                % np.uint64(2**32)
            shifts = np.arange(28, -1, -4, dtype=np.uint64)
            digits = hex_digits[((values[:, :, None] >> shifts) & np.uint64(15)).astype(np.intp)]
            cat = np.empty((m, 26, 9), np.uint8)
            cat[:, :, 0] = ord("\t")
            cat[:, :, 1:] = digits
            keep_cat = np.ones((m, 26, 9), bool)
            keep_cat[:, :, 1:] = ~empty[t][:, :, None]
            text = np.concatenate([prefix[t], cat.reshape(m, -1), np.full((m, 1), 10, np.uint8)], 1)
            keep = np.concatenate([np.arange(width) < prefix_len[t][:, None],
                                   keep_cat.reshape(m, -1), np.ones((m, 1), bool)], 1)
            f.write(text[keep].tobytes())
    os.replace(tmp, path)


def floor(path: str) -> None:
    """pyarrow's CSV reader (all threads) + vectorised hex conversion, nothing else."""
    import pyarrow.csv as pacsv

    from cce_dlrm.data.criteo.binary import hex_column
    from cce_dlrm.data.criteo.parse import _CONVERT, _FAST_TYPES, _PARSE, FIELD_NAMES

    table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=FIELD_NAMES,
                                                                block_size=4 << 20),
                           parse_options=pacsv.ParseOptions(**_PARSE),
                           convert_options=pacsv.ConvertOptions(column_types=_FAST_TYPES, **_CONVERT))
    for col in range(14, 40):
        for arr in table.column(col).chunks:
            hex_column(arr)


def torchrec_npys(path: str, out: str) -> None:
    from torchrec.datasets.criteo import BinaryCriteoUtils

    Path(out).mkdir(parents=True, exist_ok=True)
    BinaryCriteoUtils.tsv_to_npys(path, f"{out}/dense.npy", f"{out}/sparse.npy",
                                  f"{out}/labels.npy", dataset_name="criteo_kaggle")


def _tree_rss_kb(root: int) -> int:
    """Resident memory of a process and all its descendants (KB), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        pid, ppid = int(entry), int(fields["PPid"])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def run_measured(cmd: list[str]) -> None:
    """Runs ``cmd``; prints as JSON its wall and CPU seconds (worker processes included),
    its peak RSS, and the peak of the summed RSS of it and its worker processes (sampled
    every 20 ms).

    Called in a small process of its own: Linux counts a parent's peak RSS at fork time
    into the child's, so the child of a big process would report the parent's size.
    """
    import threading

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_tree = 0
    done = threading.Event()

    def sample():
        nonlocal peak_tree
        while not done.wait(0.02):
            peak_tree = max(peak_tree, _tree_rss_kb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    print(json.dumps({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                      "peak_MB": usage.ru_maxrss / 1024, "peak_total_MB": peak_tree / 1024}))


def measure(cmd: list[str], env: dict) -> dict:
    done = subprocess.run([sys.executable, "-m", MODULE, "--measure", *cmd], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr or done.stdout)
    return json.loads(done.stdout)


def run(scale: Scale, runtime, workdir, log) -> list[Section]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    have_torchrec = scale.preprocess_torchrec and subprocess.run([sys.executable, "-c", "import torchrec.datasets.criteo"], env=env,
                                   capture_output=True).returncode == 0
    results, notes, targets = [], [], []
    for rows in scale.preprocess_rows:
        data = Path(workdir) / f"preprocess_{rows}" / "data"
        raw = data / "raw" / "criteo_kaggle" / "train.txt"
        raw.parent.mkdir(parents=True, exist_ok=True)
        if not raw.is_file():
            log(f"preprocess: generating {rows:,} Kaggle-format rows")
            generate(raw, rows)
        mb = raw.stat().st_size / 1e6
        processed = data / "processed" / "criteo_kaggle"
        variants = {
            "make preprocess": [sys.executable, "-m", "cce_dlrm.preprocess", "dataset=criteo_kaggle",
                                f"paths.data_dir={data}", f"hydra.run.dir={data.parent / 'hydra'}",
                                "progress=false"],
            "floor (pyarrow + hex)": [sys.executable, "-m", MODULE, "--floor", str(raw)],
        }
        if have_torchrec:
            variants["torchrec tsv_to_npys"] = [sys.executable, "-m", MODULE, "--torchrec", str(raw),
                                                str(data.parent / "torchrec")]
        runs = {name: [] for name in variants}
        for r in range(scale.preprocess_repeat):
            for name, cmd in variants.items():
                if name.startswith("torchrec") and r >= 1:
                    continue  # slow: once
                shutil.rmtree(processed, ignore_errors=True)  # else it is "up to date"
                log(f"preprocess: {rows:,} rows, run {r + 1}: {name}")
                runs[name].append(measure(cmd, env))
        for name, ms in runs.items():
            walls = [m["wall_s"] for m in ms]
            wall = float(np.median(walls))
            results.append({"rows": rows, "variant": name, "runs": len(ms), "MB": round(mb, 1),
                            "wall_s": wall, "spread_pct": 100 * (max(walls) - min(walls)) / wall,
                            "rows_per_s": rows / wall, "MB_per_s": mb / wall,
                            "cpu_s": float(np.median([m["cpu_s"] for m in ms])),
                            "peak_MB": max(m["peak_MB"] for m in ms),
                            "peak_all_procs_MB": max(m["peak_total_MB"] for m in ms)})
        shutil.rmtree(data.parent / "torchrec", ignore_errors=True)
    table = pd.DataFrame(results)
    for rows in scale.preprocess_rows:
        t = table[table.rows == rows].set_index("variant")
        ours, fl = t.loc["make preprocess"], t.loc["floor (pyarrow + hex)"]
        targets.append(Target(f"preprocessing within 2x of the parse floor ({rows:,} rows)",
                              f"{ours.wall_s / fl.wall_s:.2f}x the floor's time (CPU {ours.cpu_s / fl.cpu_s:.2f}x)",
                              bool(ours.wall_s / fl.wall_s <= 2.0)))
        if "torchrec tsv_to_npys" in t.index:
            tr = t.loc["torchrec tsv_to_npys"]
            targets.append(Target(f"preprocessing >= 4x torchrec's rows/s ({rows:,} rows)",
                                  f"{ours.rows_per_s / tr.rows_per_s:.1f}x", bool(ours.rows_per_s / tr.rows_per_s >= 4)))
        else:
            targets.append(Target(f"preprocessing >= 4x torchrec's rows/s ({rows:,} rows)", "torchrec not run" if not scale.preprocess_torchrec else "torchrec not importable", None))
    ours = table[table.variant == "make preprocess"].set_index("rows").peak_all_procs_MB
    notes.append("peak memory of make preprocess (all its processes): "
                 + ", ".join(f"{r:,} rows {ours[r]:,.0f} MB" for r in scale.preprocess_rows)
                 + " (it should grow only with the id dictionaries)")
    notes.append("make preprocess starts one worker per CPU (dataset.preprocess.workers=0); at small row "
                 "counts its fixed start-up (Hydra, imports, workers) dominates")
    return [Section("preprocess", "", tables=[("Median of the runs (torchrec once):", table)],
                    notes=notes, targets=targets)]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--measure"]:
        run_measured(sys.argv[2:])
    elif sys.argv[1:2] == ["--floor"]:
        floor(sys.argv[2])
    elif sys.argv[1:2] == ["--torchrec"]:
        torchrec_npys(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"usage: python -m {MODULE} --measure CMD... | --floor FILE | --torchrec FILE OUT")
