"""Training throughput of every method against torchrec's DLRM, loader + step, step split, profile.

For each cap the models are built once (``full`` ignores the cap and is built once for all);
for each batch size the same pre-loaded batches go to every contender, round after round.
Our contenders run the trainer's step (forward, BCE, backward with fused table SGD, dense
SGD, ``on_train_step``); torchrec's DLRM runs its own recipe (DMP, fused SGD, SGD).
"""

from __future__ import annotations

import itertools
import time
from typing import Callable

import pandas as pd
import torch

from cce_dlrm.bench.kaggle import all_methods, build_ours, build_torchrec, compose_config, zipf_dataset
from cce_dlrm.bench.report import Section, Target
from cce_dlrm.bench.scales import Scale, cardinalities
from cce_dlrm.bench.timing import STEP_SECONDS, Phases, TrainStep, interleaved, summary
from cce_dlrm.data.loader import SplitLoader
from cce_dlrm.data.processed import ProcessedDataset
from cce_dlrm.embeddings.base import TableMethod, TrainContext
from cce_dlrm.training.table_access import ShardedTableAccess

TORCHREC = "torchrec DLRM (DMP)"
TABLE_FREE = {"dhe", "tt"}  # methods whose learned state is not only torchrec tables
PROFILED = ("full", "ce", "cce", "qr")


def _ours_forward(model, batch):
    return model(batch.dense, batch.sparse)


def _torchrec_forward(model, batch):
    return model(batch.dense, batch.sparse).squeeze(-1)


def _endless(loader: SplitLoader, device):
    for epoch in itertools.count():
        for batch in loader.epoch(epoch):
            yield batch.to(device)


class _Labelled:
    """Wraps a module's forward in a profiler label for one profile run, then restores it."""

    def __init__(self, module, label: str):
        self.module, self.label = module, label

    def __enter__(self):
        inner = self.module.forward

        def forward(*args, **kwargs):
            with torch.profiler.record_function(self.label):
                return inner(*args, **kwargs)
        self.module.forward = forward

    def __exit__(self, *exc):
        del self.module.forward


def _profile(step: TrainStep, batches, method, steps: int) -> tuple[dict, pd.DataFrame]:
    """Profiles ``steps`` steps; returns labelled times per step and the top operators."""
    labels = {}
    wraps = []
    if method is None:  # torchrec's DLRM: its collection is the sparse arch's
        wraps.append(_Labelled(step.model.module.sparse_arch.embedding_bag_collection,
                               "sharded EBC (input dist, lookups, output dist)"))
    elif isinstance(method, TableMethod):
        wraps.append(_Labelled(method.ebc, "sharded EBC (input dist, lookups, output dist)"))
        original = method.table_kjt

        def table_kjt(features):
            with torch.profiler.record_function("table_kjt (index computation + KJT)"):
                return original(features)
        method.table_kjt = table_kjt
    activities = [torch.profiler.ProfilerActivity.CPU]
    if step.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    for w in wraps:
        w.__enter__()
    try:
        with torch.profiler.profile(activities=activities) as prof:
            tic = time.perf_counter()
            for i in range(steps):
                step(batches[i % len(batches)])
            wall = time.perf_counter() - tic
    finally:
        for w in wraps:
            w.__exit__()
        if isinstance(method, TableMethod):
            del method.table_kjt
    events = prof.key_averages()
    per_step = 1e3 / steps
    ops_total = sum(e.self_cpu_time_total for e in events) / 1e3  # us -> ms
    labels["wall ms/step"] = wall * per_step
    labels["events self CPU ms/step"] = ops_total * per_step / 1e3
    # self time of labelled regions (DDP forward, optimizer step, torchrec's lookup labels, ours)
    # is Python and dispatch between the operators inside them
    regions = sum(e.self_cpu_time_total for e in events if "::" not in e.key) / 1e3
    labels["Python in labelled regions ms/step"] = regions / steps
    labels["outside the profiler's events ms/step"] = labels["wall ms/step"] - labels["events self CPU ms/step"]
    for e in events:
        if e.key.startswith(("table_kjt", "sharded EBC")):
            labels[f"{e.key} ms/step"] = e.cpu_time_total / 1e3 * per_step / 1e3
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    table = pd.DataFrame([{"operator": e.key, "calls/step": e.count / steps,
                           "self CPU ms/step": e.self_cpu_time_total / 1e3 * per_step / 1e3}
                          for e in top])
    return labels, table


def run(scale: Scale, runtime, workdir, log: Callable[[str], None]) -> list[Section]:
    device = runtime.device
    folder = zipf_dataset(workdir, cardinalities(scale), scale.data_rows)
    dataset = ProcessedDataset(folder)
    methods = list(scale.methods or all_methods())
    sec_tp = Section("throughput", "")
    sec_ld = Section("loader", "")
    sec_sp = Section("split", "")
    sec_pf = Section("profile", "")
    rows, loader_rows, split_rows, profile_rows, profile_tops = [], [], [], [], []
    n = scale.warmup + scale.steps
    base = compose_config("full", scale.caps[0], scale.batches[0], folder)
    log(f"building torchrec's DLRM ({sum(dataset.cardinalities):,} rows)")
    theirs, their_opt = build_torchrec(base, dataset, runtime)
    reference = TrainStep(theirs, their_opt, _torchrec_forward, device)
    cap_free: dict[str, tuple] = {}
    for cap in scale.caps:
        ours: dict[str, tuple[TrainStep, object]] = {}
        for key in methods:
            if key in cap_free:
                ours[key] = cap_free[key]
                continue
            tic = time.perf_counter()
            try:
                cfg = compose_config(key, cap, scale.batches[0], folder)
                model, optimizer, method = build_ours(cfg, dataset, runtime)
            except Exception as err:  # one method failing must not lose the others
                sec_tp.notes.append(f"{key} at cap {cap:,}: not built ({type(err).__name__}: {err})")
                log(f"  {key} cap {cap:,}: FAILED to build: {err}")
                continue
            tables = ShardedTableAccess(model, "embedding", method, device) if isinstance(method, TableMethod) else None
            context = TrainContext(tables=tables, steps_per_epoch=10**12)
            ours[key] = (TrainStep(model, optimizer, _ours_forward, device, method, context), method)
            if not method.respects_budget:
                cap_free[key] = ours[key]
            log(f"  built {key} at cap {cap:,} in {time.perf_counter() - tic:.1f} s")
        for batch in scale.batches:
            loader = SplitLoader(dataset.split("train"), dataset.sparse_names, batch, shuffle=True, seed=0)
            pre = list(itertools.islice(_endless(loader, device), n))
            steps = {TORCHREC: reference, **{k: s for k, (s, _) in ours.items()}}
            log(f"cap {cap:,} batch {batch}: timing {len(steps)} contenders "
                f"({scale.rounds} rounds of {scale.steps} steps)")
            secs = interleaved({k: (lambda i, s=s: s(pre[i])) for k, s in steps.items()},
                               scale.warmup, scale.steps, scale.rounds, device, log)
            ref = summary(secs[TORCHREC], scale.steps * batch)["samples_per_s"]
            for key, s in secs.items():
                row = {"cap": cap, "batch": batch, "method": key, **summary(s, scale.steps * batch)}
                row["vs_torchrec"] = row["samples_per_s"] / ref
                rows.append(row)
                STEP_SECONDS[(key, cap, batch)] = batch / row["samples_per_s"]
            if cap != scale.caps[0]:
                continue
            log(f"cap {cap:,} batch {batch}: loader + step")
            streams = {k: _endless(SplitLoader(dataset.split("train"), dataset.sparse_names, batch,
                                               shuffle=True, seed=1), device) for k in ["loader only", *steps]}
            runs = {"loader only": lambda i, it=streams["loader only"]: next(it)}
            runs.update({k: (lambda i, s=s, it=streams[k]: s(next(it))) for k, s in steps.items()})
            secs = interleaved(runs, scale.warmup, scale.steps, scale.rounds, device, log)
            ref = summary(secs[TORCHREC], scale.steps * batch)["samples_per_s"]
            for key, s in secs.items():
                row = {"cap": cap, "batch": batch, "method": key, **summary(s, scale.steps * batch)}
                row["vs_torchrec"] = row["samples_per_s"] / ref
                loader_rows.append(row)
            if batch != min(scale.batches):
                continue
            log(f"cap {cap:,} batch {batch}: step split and profile")
            for key, s in steps.items():
                s.phases = Phases.empty()
                for i in range(n):
                    s(pre[i])
                ph, s.phases = s.phases, None
                med = {p: 1e3 * pd.Series(getattr(ph, p)[scale.warmup:]).median()
                       for p in ("forward", "backward", "optimizer", "hook")}
                split_rows.append({"cap": cap, "batch": batch, "method": key, **{f"{p} ms": v for p, v in med.items()},
                                   "total ms": sum(med.values())})
            for key in [TORCHREC, *[k for k in PROFILED if k in ours]]:
                step, method = (reference, None) if key == TORCHREC else ours[key]
                labels, top = _profile(step, pre, method, scale.profile_steps)
                lookups = len(method.sub_tables) if isinstance(method, TableMethod) else 26
                groups = len(method.groups) if isinstance(method, TableMethod) else 1
                profile_rows.append({"method": key, "sub-tables": lookups, "feature groups": groups, **labels})
                profile_tops.append((f"Top operators by self CPU time, **{key}** (cap {cap:,}, batch {batch}):",
                                     top))
        del ours
    table = pd.DataFrame(rows)
    sec_tp.tables.append(("Samples/s (median round) and ratio to torchrec's DLRM on the same batches:", table))
    if not table.empty:
        pivot = table.pivot_table(index="method", columns=["batch", "cap"], values="vs_torchrec")
        pivot.columns = [f"b{b} cap {c:.0e}" for b, c in pivot.columns]
        sec_tp.tables.insert(0, ("Ratio to torchrec's full-table DLRM (>1: faster):", pivot.reset_index()))
        sec_tp.targets += _targets(table, methods)
    sec_ld.tables.append(("Loader + step, samples/s (memory-mapped reads of the Zipf split included); "
                          "`loader only` reads batches without training:", pd.DataFrame(loader_rows)))
    sec_sp.tables.append(("Median ms per step and phase (synchronised between phases):", pd.DataFrame(split_rows)))
    sec_pf.tables.append(("Per step, from torch.profiler (labels include their children):",
                          pd.DataFrame(profile_rows)))
    sec_pf.tables += profile_tops
    return [sec_tp, sec_ld, sec_sp, sec_pf]


def _targets(table: pd.DataFrame, methods: list[str]) -> list[Target]:
    out = []
    table_based = [m for m in methods if m not in TABLE_FREE | {"full", "pq"}]
    for batch, need in ((2048, 1.0), (128, 0.9)):
        t = table[table.batch == batch]
        if t.empty:
            out.append(Target(f"compressed table methods >= {need}x torchrec at batch {batch}", "-", None))
            continue
        worst = t[t.method.isin(table_based)].sort_values("vs_torchrec").head(1)
        if worst.empty:
            continue
        w = worst.iloc[0]
        out.append(Target(f"every table-based compressed method >= {need}x torchrec at batch {batch}",
                          f"slowest: {w.method} {w.vs_torchrec:.2f}x (cap {w.cap:,})",
                          bool((t[t.method.isin(table_based)].vs_torchrec >= need).all())))
        full = t[t.method == "full"]
        if not full.empty:
            out.append(Target(f"project's full >= 1.0x torchrec at batch {batch}",
                              f"{full.vs_torchrec.min():.2f}x", bool((full.vs_torchrec >= 1.0).all())))
    for m in sorted(TABLE_FREE & set(methods)):
        t = table[table.method == m]
        if not t.empty:
            out.append(Target(f"{m} (reported, not excused)",
                              ", ".join(f"b{r.batch} cap {r.cap:.0e}: {r.vs_torchrec:.2f}x" for r in t.itertuples()),
                              bool((t.vs_torchrec >= t.batch.map({2048: 1.0}).fillna(0.9)).all())))
    return out
