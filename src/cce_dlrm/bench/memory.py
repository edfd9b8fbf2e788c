"""Peak memory of one process per method, beside the bytes the method itself counts.

Each method trains a few steps in a fresh process (``python -m cce_dlrm.bench.memory
--worker ...``) that reports its own peak resident set (``VmHWM``, which starts afresh at
exec) and, on a GPU, the peak allocated device memory. Learned bytes are 4 per learned
float; auxiliary bytes are what ``aux_bytes()`` counts (index maps, codes, hash constants).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from cce_dlrm.bench.kaggle import all_methods, zipf_dataset
from cce_dlrm.bench.report import Section
from cce_dlrm.bench.scales import Scale, cardinalities

BASELINE = "torchrec DLRM (DMP)"


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(method: str, cap: int, batch: int, steps: int, dataset_path: str, device: str) -> dict:
    import itertools

    import torch

    from cce_dlrm.bench.kaggle import build_ours, build_torchrec, compose_config
    from cce_dlrm.bench.throughput import _endless, _ours_forward, _torchrec_forward
    from cce_dlrm.bench.timing import TrainStep
    from cce_dlrm.data.loader import SplitLoader
    from cce_dlrm.data.processed import ProcessedDataset
    from cce_dlrm.embeddings.base import TableMethod, TrainContext
    from cce_dlrm.training.distributed import init_runtime
    from cce_dlrm.training.table_access import ShardedTableAccess

    runtime = init_runtime(device)
    dataset = ProcessedDataset(dataset_path)
    cfg = compose_config("full" if method == BASELINE else method, cap, batch, Path(dataset_path))
    out = {"method": method, "cap": cap}
    if method == BASELINE:
        model, optimizer = build_torchrec(cfg, dataset, runtime)
        step = TrainStep(model, optimizer, _torchrec_forward, runtime.device)
        out.update(learned_MB=4 * sum(dataset.cardinalities) * cfg.model.embedding_dim / 2**20, aux_MB=0.0)
    else:
        model, optimizer, emb = build_ours(cfg, dataset, runtime)
        tables = ShardedTableAccess(model, "embedding", emb, runtime.device) if isinstance(emb, TableMethod) else None
        step = TrainStep(model, optimizer, _ours_forward, runtime.device, emb,
                         TrainContext(tables=tables, steps_per_epoch=10**12))
        out.update(learned_MB=4 * sum(emb.learned_params()) / 2**20, aux_MB=sum(emb.aux_bytes()) / 2**20)
    loader = SplitLoader(dataset.split("train"), dataset.sparse_names, batch, shuffle=True, seed=0)
    for b in itertools.islice(_endless(loader, runtime.device), steps):
        step(b)
    out["peak_rss_MB"] = _peak_rss_mb()
    if runtime.device.type == "cuda":
        out["peak_gpu_allocated_MB"] = torch.cuda.max_memory_allocated(runtime.device) / 2**20
    return out


def run(scale: Scale, runtime, workdir, log) -> list[Section]:
    folder = zipf_dataset(workdir, cardinalities(scale), scale.data_rows)
    methods = [BASELINE, *(scale.memory_methods or scale.methods or all_methods())]
    rows, notes = [], []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                         os.environ.get("PYTHONPATH", "")])}
    batch = min(scale.batches)
    for cap in scale.memory_caps:
        for method in methods:
            if method in (BASELINE, "full") and cap != scale.memory_caps[0]:
                continue  # full tables: the cap does not apply
            log(f"memory: {method} at cap {cap:,} in its own process")
            cmd = [sys.executable, "-m", "cce_dlrm.bench.memory", "--worker", "--method", method,
                   "--cap", str(cap), "--batch", str(batch), "--steps", str(scale.memory_steps),
                   "--dataset", str(folder), "--device", runtime.device.type]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                notes.append(f"{method} at cap {cap:,}: worker failed ({last})")
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    df = pd.DataFrame(rows)
    if not df.empty:
        base = df[df.method == BASELINE].peak_rss_MB
        if not base.empty:
            df["rss_vs_torchrec"] = df.peak_rss_MB / float(base.iloc[0])
    notes.append(f"each process trains {scale.memory_steps} steps at batch {batch}; the peak includes "
                 "Python, torch and torchrec themselves (a few hundred MB), so small methods differ little")
    return [Section("memory", "", tables=[("Peak resident memory per process and the bytes each method counts:", df)],
                    notes=notes)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true", required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--cap", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    print(json.dumps(worker(a.method, a.cap, a.batch, a.steps, a.dataset, a.device)))
