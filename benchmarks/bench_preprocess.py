"""Benchmark of the Criteo preprocessing against its floor and against torchrec.

    python benchmarks/bench_preprocess.py --rows 1000000 4000000

For each row count it writes a Kaggle-format ``train.txt`` (real rows resampled for the
labels, integers and empty-field pattern; categorical values drawn with a power law over
the real per-feature cardinalities, so the dictionaries grow as with real data), then runs,
each in its own process, interleaved ``--repeat`` times:

* ``make preprocess``: ``python -m cce_dlrm.preprocess dataset=criteo_kaggle`` (all of it:
  line count, both passes, meta.json);
* ``floor``: pyarrow's multithreaded CSV reader plus the vectorised hex-to-integer
  conversion of the 26 categorical columns, nothing else;
* ``torchrec``: ``BinaryCriteoUtils.tsv_to_npys`` on the same file (if torchrec imports).

It prints wall time (median), rows/s, MB/s, CPU seconds (user + system, worker processes
included), the peak RSS of the largest process (``os.wait4``) and the peak of the summed
RSS of a run's processes (sampled from /proc), and the ratios the issue asks for. Timings
on a shared machine vary: compare CPU seconds too, and repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = [REPO.parent / "shared" / "data" / "criteo-samples" / "kaggle_train_head_10k.txt",
           REPO / "tests" / "fixtures" / "criteo" / "kaggle_rows_400.txt"]
# Kaggle cardinalities with no threshold (docs/DATA.md), the scale of each feature's values.
KAGGLE_CARDINALITIES = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                        8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15,
                        286181, 105, 142572]
def generate(path: Path, rows: int, seed: int = 0, block: int = 250_000) -> None:
    """Writes ``rows`` Kaggle-format lines to ``path`` (via a temporary name)."""
    import numpy as np

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
    done = subprocess.run([sys.executable, __file__, "--measure", *cmd], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr or done.stdout)
    return json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--torchrec-repeat", type=int, default=1, help="torchrec is slow: fewer runs")
    ap.add_argument("--no-torchrec", action="store_true")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cce_bench_preprocess"))
    ap.add_argument("--floor", metavar="FILE", help=argparse.SUPPRESS)
    ap.add_argument("--torchrec", nargs=2, metavar=("FILE", "OUT"), help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--measure"]:
        return run_measured(sys.argv[2:])
    args = ap.parse_args()
    if args.floor:
        return floor(args.floor)
    if args.torchrec:
        return torchrec_npys(*args.torchrec)

    import numpy as np
    import pandas as pd

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    have_torchrec = not args.no_torchrec and subprocess.run(
        [sys.executable, "-c", "import torchrec.datasets.criteo"], env=env,
        capture_output=True).returncode == 0
    results = []
    for rows in args.rows:
        data = args.workdir / f"rows_{rows}" / "data"
        raw = data / "raw" / "criteo_kaggle" / "train.txt"
        raw.parent.mkdir(parents=True, exist_ok=True)
        if not raw.is_file():
            print(f"generating {raw} ({rows:,} rows)", flush=True)
            generate(raw, rows)
        mb = raw.stat().st_size / 1e6
        processed = data / "processed" / "criteo_kaggle"
        variants = {
            "make preprocess": [sys.executable, "-m", "cce_dlrm.preprocess", "dataset=criteo_kaggle",
                                f"paths.data_dir={data}", f"hydra.run.dir={data.parent / 'hydra'}",
                                "progress=false"],
            "floor (pyarrow + hex)": [sys.executable, __file__, "--floor", str(raw)],
        }
        if have_torchrec:
            variants["torchrec tsv_to_npys"] = [sys.executable, __file__, "--torchrec", str(raw),
                                                str(data.parent / "torchrec")]
        runs = {name: [] for name in variants}
        for r in range(args.repeat):
            for name, cmd in variants.items():
                if name.startswith("torchrec") and r >= args.torchrec_repeat:
                    continue
                shutil.rmtree(processed, ignore_errors=True)  # else it is "up to date"
                print(f"{rows:,} rows, run {r + 1}: {name}", flush=True)
                runs[name].append(measure(cmd, env))
        for name, ms in runs.items():
            wall = float(np.median([m["wall_s"] for m in ms]))
            results.append({"rows": rows, "variant": name, "runs": len(ms), "MB": round(mb),
                            "wall_s": round(wall, 2),
                            "rows_per_s": round(rows / wall),
                            "MB_per_s": round(mb / wall, 1),
                            "cpu_s": round(float(np.median([m["cpu_s"] for m in ms])), 2),
                            "peak_MB": round(max(m["peak_MB"] for m in ms)),
                            "peak_all_procs_MB": round(max(m["peak_total_MB"] for m in ms))})
        shutil.rmtree(data.parent / "torchrec", ignore_errors=True)
    table = pd.DataFrame(results)
    print()
    print(table.to_string(index=False))
    print()
    for rows in args.rows:
        t = table[table.rows == rows].set_index("variant")
        ours, fl = t.loc["make preprocess"], t.loc["floor (pyarrow + hex)"]
        line = (f"{rows:,} rows: make preprocess takes {ours.wall_s / fl.wall_s:.2f}x the floor's "
                f"time (target <= 2x; CPU {ours.cpu_s / fl.cpu_s:.2f}x)")
        if "torchrec tsv_to_npys" in t.index:
            tr = t.loc["torchrec tsv_to_npys"]
            line += f"; {ours.rows_per_s / tr.rows_per_s:.1f}x torchrec's rows/s (target >= 4x)"
        print(line)
    ours = table[table.variant == "make preprocess"].set_index("rows").peak_all_procs_MB
    print("make preprocess peak memory (all its processes): "
          + ", ".join(f"{r:,} rows {ours[r]:,} MB" for r in args.rows))


if __name__ == "__main__":
    main()
