"""CCE clustering rounds: seconds against ids n and rows k, and the share of a default run.

A case is the real ``CCEEmbedding`` (the method config's defaults: 4 columns, FAISS k-means
with 50 iterations, 256 points per centroid, two-level k-means on CPU above the cap rule)
over one feature of n ids with k = floor(P / 2d) rows, d = 16; a round is its real
``cluster()`` call: sampling, k-means, assignment of all n ids, table writes. The first
round clusters the hash-composed vectors of the initial tables.

The default training run (``python -m cce_dlrm.train dataset=criteo_kaggle method=cce``:
batch 128, one epoch of 39,291,958 rows, cap 16,000, 2 rounds) spends
``rounds x round / (rounds x round + steps x step)`` of its time clustering.
"""

from __future__ import annotations

import math

import pandas as pd
from hydra.utils import instantiate

from cce_dlrm.bench.kaggle import compose_config
from cce_dlrm.bench.report import Section, Target
from cce_dlrm.bench.scales import KAGGLE_CARDINALITIES, Scale
from cce_dlrm.bench.timing import STEP_SECONDS
from cce_dlrm.embeddings.base import FeatureSpec, TrainContext

DIM = 16
KAGGLE_TRAIN_ROWS = 39_291_958
DEFAULT_CAP, DEFAULT_BATCH = 16_000, 128
TARGETS = {(1_000_000, 50_000): 120.0, (10_000_000, 1_000): 60.0}


def _cce(features: list[FeatureSpec], cap: int, device):
    cfg = compose_config("cce", cap, DEFAULT_BATCH, "unused")
    factory = instantiate(cfg.method)
    return factory(features=features, dim=DIM, max_table_params=cap, init_std=cfg.init_std, seed=0,
                   device=device), cfg


def _round(method) -> dict:
    out = method.cluster(TrainContext(tables=method.table_access()))
    return out


def run(scale: Scale, runtime, workdir, log) -> list[Section]:
    import faiss

    device = "cuda" if runtime.device.type == "cuda" else None
    rows, targets, notes = [], [], []
    for n, k in scale.cluster_cases:
        log(f"clustering: n={n:,} k={k:,}")
        method, _ = _cce([FeatureSpec(f"n{n}", n)], 2 * k * DIM, device)
        if method.rows[0] != k:
            notes.append(f"n={n:,}: the method made {method.rows[0]:,} rows, not k={k:,}")
        out = _round(method)
        rows.append({"n": n, "k": method.rows[0], "columns": method.columns, "seconds": out["cluster/seconds"],
                     "kmeans_s": out["cluster/kmeans_seconds"],
                     "assign_and_write_s": out["cluster/seconds"] - out["cluster/kmeans_seconds"],
                     "iterations": out["cluster/iterations"], "faiss": "GPU" if out["cluster/gpu"] else "CPU",
                     "aux_MB": sum(method.aux_bytes()) / 2**20})
        log(f"  {out['cluster/seconds']:.1f} s")
        del method
    df = pd.DataFrame(rows)
    for (n, k), limit in TARGETS.items():
        hit = df[(df.n == n) & (df.k == k)] if not df.empty else df
        targets.append(Target(f"clustering round n={n:.0e}, k={k:,}, c=4 under {limit:.0f} s",
                              f"{hit.seconds.iloc[0]:.1f} s" if not hit.empty else "-",
                              bool(hit.seconds.iloc[0] < limit) if not hit.empty else None))
    share = _default_run_share(scale, device, df, log)
    notes.append(f"FAISS threads {faiss.omp_get_max_threads()}, FAISS GPUs {faiss.get_num_gpus()}")
    return [Section("clustering", "", tables=[("One round per case (d = 16):", df), *share[0]],
                    notes=notes + share[1], targets=targets)]


def _default_run_share(scale: Scale, device, cases: pd.DataFrame, log):
    cfg = compose_config("cce", DEFAULT_CAP, DEFAULT_BATCH, "unused")
    rounds = int(cfg.method.max_rounds)
    steps = KAGGLE_TRAIN_ROWS // DEFAULT_BATCH
    feats = [FeatureSpec(f"cat_{i}", n) for i, n in enumerate(KAGGLE_CARDINALITIES)]
    if scale.cluster_default_run:
        log("clustering: one round of CCE at Kaggle's vocabularies, cap 16,000")
        method, _ = _cce(feats, DEFAULT_CAP, device)
        round_s, how = _round(method)["cluster/seconds"], "measured (one real round, all 26 features)"
        del method
    else:
        # per-id cost of the largest measured case, times the ids of the compressed features
        # (k = 500 at cap 16,000 is below every measured k, so this overestimates)
        if cases.empty:
            return [], ["share of a default run: no clustering case measured"]
        big = cases.sort_values(["n", "k"]).iloc[0 if len(cases) == 1 else -1]
        ids = sum(n for n in KAGGLE_CARDINALITIES if n * DIM > DEFAULT_CAP)
        round_s = big.seconds / big.n * ids
        how = f"estimated from n={big.n:,}, k={big.k:,} scaled to {ids:,} ids (full scale measures it)"
    step_s = STEP_SECONDS.get(("cce", DEFAULT_CAP, DEFAULT_BATCH))
    row = {"rounds": rounds, "round_s": round_s, "round_time": how, "steps": steps}
    notes = []
    if step_s is None:
        notes.append("share of a default run: no cce step time at batch 128, cap 16,000 (run the throughput section)")
        row.update(step_ms=math.nan, share_pct=math.nan)
    else:
        train_s = steps * step_s
        row.update(step_ms=1e3 * step_s, training_h=train_s / 3600,
                   share_pct=100 * rounds * round_s / (rounds * round_s + train_s))
    return [("Share of a default Kaggle training run (batch 128, 1 epoch, cap 16,000) spent clustering:",
             pd.DataFrame([row]))], notes
