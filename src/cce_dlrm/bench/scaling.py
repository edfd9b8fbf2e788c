"""1 and 2 processes under DMP, table-wise and column-wise, launched with torchrun.

The global batch is the same for both process counts (each of 2 processes takes half), so
samples/s compare directly. On a 2-core machine the two processes share the cores that one
process had to itself: a ratio near or below 1 there says nothing about real scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from cce_dlrm.bench.kaggle import zipf_dataset
from cce_dlrm.bench.report import Section
from cce_dlrm.bench.scales import Scale, cardinalities

def worker(method: str, cap: int, sharding: str, batch: int, warmup: int, steps: int, rounds: int,
           dataset_path: str, device: str, out: str) -> None:
    import itertools

    import torch.distributed as dist

    from cce_dlrm.bench.kaggle import build_ours, compose_config
    from cce_dlrm.bench.throughput import _endless, _ours_forward
    from cce_dlrm.bench.timing import TrainStep, sync
    from cce_dlrm.data.loader import SplitLoader
    from cce_dlrm.data.processed import ProcessedDataset
    from cce_dlrm.embeddings.base import TableMethod, TrainContext
    from cce_dlrm.training.distributed import init_runtime
    from cce_dlrm.training.table_access import ShardedTableAccess

    runtime = init_runtime(device)
    dataset = ProcessedDataset(dataset_path)
    cfg = compose_config(method, cap, batch, Path(dataset_path))
    model, optimizer, emb = build_ours(cfg, dataset, runtime, sharding=sharding)
    tables = ShardedTableAccess(model, "embedding", emb, runtime.device) if isinstance(emb, TableMethod) else None
    step = TrainStep(model, optimizer, _ours_forward, runtime.device, emb,
                     TrainContext(tables=tables, rank=runtime.rank, world_size=runtime.world_size,
                                  steps_per_epoch=10**12))
    loader = SplitLoader(dataset.split("train"), dataset.sparse_names, batch, rank=runtime.rank,
                         world_size=runtime.world_size, shuffle=True, seed=0)
    batches = list(itertools.islice(_endless(loader, runtime.device), warmup + steps))
    for b in batches[:warmup]:
        step(b)
    seconds = []
    for _ in range(rounds):
        dist.barrier()
        tic = time.perf_counter()
        for b in batches[warmup:]:
            step(b)
        sync(runtime.device)
        dist.barrier()
        seconds.append(time.perf_counter() - tic)
    if runtime.rank == 0:
        med = statistics.median(seconds)
        Path(out).write_text(json.dumps({"samples_per_s": steps * batch / med,
                                         "spread_pct": 100 * (max(seconds) - min(seconds)) / med}))
    dist.destroy_process_group()


def run(scale: Scale, runtime, workdir, log) -> list[Section]:
    folder = zipf_dataset(workdir, cardinalities(scale), scale.data_rows)
    batch, cap = max(scale.batches), scale.caps[0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                         os.environ.get("PYTHONPATH", "")])}
    env.pop("OMP_NUM_THREADS", None)  # init_runtime shares the cores out per process
    rows, notes = [], []
    for method in scale.scaling_methods:
        for sharding in scale.scaling_shardings:
            for procs in (1, 2):
                log(f"scaling: {method} {sharding} on {procs} process(es)")
                out = Path(workdir) / f"scaling_{method}_{sharding}_{procs}.json"
                out.unlink(missing_ok=True)
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       f"--nproc_per_node={procs}", "-m", "cce_dlrm.bench.scaling", "--worker",
                       "--method", method, "--cap", str(cap), "--sharding", sharding, "--batch", str(batch),
                       "--warmup", str(scale.warmup), "--steps", str(scale.scaling_steps),
                       "--rounds", str(scale.rounds), "--dataset", str(folder),
                       "--device", runtime.device.type, "--out", str(out)]
                try:
                    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
                except subprocess.TimeoutExpired:
                    notes.append(f"{method} {sharding} x{procs}: timed out after 900 s")
                    continue
                if done.returncode != 0 or not out.is_file():
                    errors = [ln for ln in done.stderr.splitlines() if "Error" in ln] or done.stderr.splitlines()[-1:]
                    notes.append(f"{method} {sharding} x{procs}: failed ({errors[-1] if errors else 'no output'})")
                    continue
                rows.append({"method": method, "cap": cap, "sharding": sharding, "processes": procs,
                             "global batch": batch, **json.loads(out.read_text())})
    df = pd.DataFrame(rows)
    if not df.empty:
        one = df[df.processes == 1].set_index(["method", "sharding"]).samples_per_s
        df["vs_1_process"] = [r.samples_per_s / one.get((r.method, r.sharding), float("nan"))
                              for r in df.itertuples()]
    cores = os.cpu_count() or 1
    notes.insert(0, f"{cores} cores visible: 2 processes get {max(1, cores // 2)} thread(s) each"
                 + (" (2 shared cores: this measures the communication overhead, not a speed-up)" if cores <= 2 else ""))
    return [Section("scaling", "", tables=[("Samples/s at the same global batch:", df)], notes=notes)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true", required=True)
    for name in ("method", "sharding", "dataset", "out"):
        ap.add_argument(f"--{name}", required=True)
    for name in ("cap", "batch", "warmup", "steps", "rounds"):
        ap.add_argument(f"--{name}", type=int, required=True)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    worker(a.method, a.cap, a.sharding, a.batch, a.warmup, a.steps, a.rounds, a.dataset, a.device, a.out)
