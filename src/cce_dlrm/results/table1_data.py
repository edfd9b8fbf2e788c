"""Table 1 as data: per (dataset, epoch limit), the baseline, the BCE grid, the factors, noise.

``build(runs)`` takes ``runs.load_runs``'s frame and returns a JSON-ready dict:

    {"groups": [{"dataset", "epochs", "epoch_label", "baseline", "methods", "noise", "paper",
                 "not_completed", "runs"}, ...],
     "unreadable": [...], "notes": [...]}

Only completed runs are averaged; every other run is listed with its status and reason.
The metric is the test BCE at the best validation BCE, averaged over seeds (the paper's).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from cce_dlrm.results import noise, paper
from cce_dlrm.results.compression import factor_all_tables, factor_largest_table, learned_at_cap
from cce_dlrm.results.crossing import RULES as CROSSING_RULES
from cce_dlrm.results.crossing import Crossing, find_crossing
from cce_dlrm.results.runs import completed

BASELINE_METHOD = "full"
TARGET = "cce"

PROTOCOL = (
    "Protocol: every number is read from the runs' metrics.json. BCE is the test BCE at the step of "
    "the best validation BCE (test never chooses anything), averaged over the completed seeds; std is "
    "the sample standard deviation over seeds; min-max is the seeds' range. Runs that did not complete "
    "(failed, diverged, running, unreadable) are listed with their reason and never averaged."
)
COUNTING = (
    "How counted: compression factor over all tables = sum over features of the full tables' parameters "
    "(the full-table run's learned_params_per_feature) / sum over features of the method's learned "
    "parameters at the cap where it meets the baseline (features that fit under the cap stay full). At a "
    "swept cap that is the runs' own count (DHE's MLPs, TT's cores included); between swept caps the ratio "
    "of the runs' count to the table formula min(n*d, cap) is interpolated in log(cap) per feature. The "
    "largest-table factor divides the largest full table by the method's parameters for that feature. "
    "Per seed: each seed's own curve against the baseline's mean over seeds; the seeds' mean ± std and "
    "min-max count the seeds with an interpolated or extrapolated crossing (n shown). "
    "Auxiliary bytes (hash constants, PQ codes) are not in the factor; they are in table1.csv."
)


def stats(values: Iterable[float]) -> dict:
    """n, mean, sample std (None below 2 values), min, max of the finite values."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": len(v), "mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
            "min": min(v), "max": max(v)}


def _seed_key(seed) -> str:
    return "?" if seed is None or (isinstance(seed, float) and math.isnan(seed)) else str(int(seed))


def _per_feature(frame: pd.DataFrame, length: int | None) -> list[float] | None:
    """Mean learned_params_per_feature over runs whose list has ``length`` entries."""
    lists = [x for x in frame.learned_params_per_feature if isinstance(x, list) and x
             and (length is None or len(x) == length)]
    if not lists or len({len(x) for x in lists}) != 1:
        return None
    return [float(v) for v in np.mean(np.asarray(lists, dtype=float), axis=0)]


def _value(v):
    """None for pandas' missing values (NaN), the value otherwise."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _reason(row) -> str:
    if row.status == "completed":
        return "completed without a test BCE"
    return _value(row.error) or f"status {row.status}"


def _run_record(row, full_pf: list[float] | None) -> dict:
    pf = row.learned_params_per_feature
    fa = fl = None
    if full_pf and isinstance(pf, list) and len(pf) == len(full_pf) and all(v > 0 for v in pf):
        fa, fl = factor_all_tables(full_pf, pf), factor_largest_table(full_pf, pf)
    record = {"factor_all_tables": fa, "factor_largest_table": fl}
    for key in ("dataset", "epochs", "method", "max_table_params", "seed", "status", "error", "best_val_bce",
                "test_bce", "test_auc", "learned_params", "learned_params_largest_table", "aux_bytes", "run_dir"):
        record[key] = _value(getattr(row, key))
    return record


class _Factors:
    """Turns caps into compression factors for one method (see COUNTING)."""

    def __init__(self, full_pf: list[float] | None, measured: dict[float, list[float]]):
        self.full_pf, self.measured = full_pf, measured

    def at(self, cap: float | None) -> tuple[float | None, float | None]:
        if cap is None or not self.full_pf:
            return None, None
        learned = learned_at_cap(cap, self.full_pf, self.measured)
        return factor_all_tables(self.full_pf, learned), factor_largest_table(self.full_pf, learned)

    def entry(self, crossing: Crossing) -> dict:
        fa, fl = self.at(crossing.cap)
        fits = {}
        for degree, cap in crossing.fits.items():
            a, b = self.at(cap)
            fits[str(degree)] = {"cap": cap, "factor_all": a, "factor_largest": b}
        return {"status": crossing.status, "cap": crossing.cap, "factor_all": fa, "factor_largest": fl,
                "bound": "at least" if crossing.is_bound else None, "fits": fits, "fit_caps": crossing.fit_caps}


def _method(frame: pd.DataFrame, baseline: float | None, full_pf, largest_full, paper_points) -> dict:
    grid = []
    measured: dict[float, list[float]] = {}
    seed_curves: dict[str, list[tuple[float, float]]] = {}
    for cap, at_cap in frame.groupby("max_table_params", sort=True):
        cap = float(cap)
        seeds = {_seed_key(r.seed): float(r.test_bce) for r in at_cap.itertuples()}
        for s, v in seeds.items():
            seed_curves.setdefault(s, []).append((cap, v))
        pf = _per_feature(at_cap, len(full_pf) if full_pf else None)
        if pf:
            measured[cap] = pf
        paper_bce = paper.paper_bce_at(paper_points, cap) if paper_points else None
        s = stats(seeds.values())
        grid.append({
            "cap": cap, "largest_table_params": stats(at_cap.learned_params_largest_table)["mean"],
            "learned_params": stats(at_cap.learned_params)["mean"], "aux_bytes": stats(at_cap.aux_bytes)["mean"],
            "test_bce": s, "seeds": seeds, "val_bce": stats(at_cap.best_val_bce), "test_auc": stats(at_cap.test_auc),
            "paper_bce": paper_bce,
            "diff_vs_paper": s["mean"] - paper_bce if paper_bce is not None and s["mean"] is not None else None,
        })
    out = {"grid": grid, "factor": None}
    if baseline is None or not full_pf:
        return out
    factors = _Factors(full_pf, measured)
    caps = [g["cap"] for g in grid]
    out["factor"] = factors.entry(find_crossing(caps, [g["test_bce"]["mean"] for g in grid], baseline, largest_full))
    per_seed = {}
    for s, curve in sorted(seed_curves.items()):
        c = find_crossing([x for x, _ in curve], [y for _, y in curve], baseline, largest_full)
        per_seed[s] = factors.entry(c)
    out["factor"]["seeds"] = per_seed
    numeric = [e for e in per_seed.values() if e["status"] in ("interpolated", "extrapolated")]
    out["factor"]["seed_stats_all"] = stats(e["factor_all"] for e in numeric)
    out["factor"]["seed_stats_largest"] = stats(e["factor_largest"] for e in numeric)
    return out


def _point(entry: dict | None) -> float | None:
    """A factor entry's number for ordering methods (a lower bound counts as its bound)."""
    return entry["factor_all"] if entry and entry["status"] != "not reached" else None


def _noise(methods: dict) -> dict:
    caps = []
    if TARGET not in methods:
        return {"caps": caps, "factor": None, "summary": f"No completed {TARGET} runs: no comparison."}
    others = {m: v for m, v in methods.items() if m != TARGET}
    cce_grid = {g["cap"]: g for g in methods[TARGET]["grid"]}
    for cap, g in cce_grid.items():
        rivals = [(m, h) for m, v in others.items() for h in v["grid"] if h["cap"] == cap and h["test_bce"]["n"]]
        if not rivals:
            continue
        name, h = min(rivals, key=lambda mh: mh[1]["test_bce"]["mean"])
        verdict = noise.compare_intervals([(v, v) for v in g["seeds"].values()],
                                          [(v, v) for v in h["seeds"].values()], higher_is_better=False)
        stds = [x["test_bce"]["std"] for x in (g, h)]
        caps.append({"cap": cap, "next_best": name, "cce": g["test_bce"], "other": h["test_bce"],
                     "gap": h["test_bce"]["mean"] - g["test_bce"]["mean"],
                     "std_sum": sum(stds) if None not in stds else None, "verdict": verdict})
    factor = None
    cce_f = methods[TARGET]["factor"]
    rivals = [(m, v["factor"]) for m, v in others.items() if v["factor"] and _point(v["factor"]) is not None]
    if cce_f and rivals:
        name, f = max(rivals, key=lambda mf: _point(mf[1]))
        intervals = [[i for i in (noise.factor_interval(e["status"], e["factor_all"]) for e in x["seeds"].values())
                      if i is not None] for x in (cce_f, f)]
        ratio = _point(cce_f) / _point(f) if _point(cce_f) is not None else None
        factor = {"next_best": name, "cce": _point(cce_f), "other": _point(f), "cce_over_other": ratio,
                  "verdict": noise.compare_intervals(*intervals, higher_is_better=True)}
    elif cce_f and others:
        factor = {"next_best": None, "cce": _point(cce_f), "other": None, "cce_over_other": None,
                  "verdict": "no other method reaches the baseline"}
    beyond = [c for c in caps if c["verdict"] in (noise.BEYOND_BETTER, noise.BEYOND_WORSE)]
    factor_beyond = factor and factor["verdict"] in (noise.BEYOND_BETTER, noise.BEYOND_WORSE)
    if not beyond and not factor_beyond:
        summary = ("Every difference between CCE and the next best method is within the seeds' spread "
                   "(or not judged): no ranking is claimed.")
    else:
        parts = [f"at cap {c['cap']:,.0f}: {c['verdict']} against {c['next_best']}" for c in beyond]
        if factor_beyond:
            parts.insert(0, f"compression factor: {factor['verdict']} against {factor['next_best']}")
        summary = "Beyond the seeds' spread: " + "; ".join(parts) + ". Every other difference is within noise."
    return {"caps": caps, "factor": factor, "summary": summary}


def _paper(dataset, epochs, methods, baseline_stats) -> dict:
    rows = []
    for m, (lo, hi) in paper.table1_factors(dataset, epochs).items():
        entry = methods.get(m, {}).get("factor")
        ours = _point(entry)
        ratio = (ours / hi, ours / lo) if ours else None
        rows.append({"method": m, "paper_low": lo, "paper_high": hi, "ours": ours,
                     "ours_status": entry["status"] if entry else "no runs",
                     "ours_bound": entry["bound"] if entry else None, "ours_over_paper": ratio})
    base = paper.baseline_bce(dataset, epochs)
    ours = baseline_stats["mean"]
    return {"factors": rows, "baseline_bce": base,
            "baseline_diff": ours - base if base is not None and ours is not None else None}


def build_group(group: pd.DataFrame, dataset: str, epochs) -> dict:
    done = completed(group)
    full_runs = done[done.method == BASELINE_METHOD]
    if full_runs.max_table_params.isna().any():
        full_runs = full_runs[full_runs.max_table_params.isna()]
    baseline = stats(full_runs.test_bce)
    full_pf = _per_feature(full_runs, None)
    largest_full = max(full_pf) if full_pf else None
    dim = next((int(d) for d in group.embedding_dim if d is not None and not pd.isna(d)), None)
    paper_points = paper.figure_points(dataset, epochs, dim)
    compressed = done[(done.method != BASELINE_METHOD) & done.max_table_params.notna()]
    methods = {m: _method(f, baseline["mean"], full_pf, largest_full, paper_points.get(m))
               for m, f in compressed.groupby("method", sort=True)}
    notes = []
    if not len(full_runs):
        notes.append("No completed full-table run: no baseline, so no compression factors.")
    elif not full_pf:
        notes.append("The full-table runs have no learned_params_per_feature: no compression factors.")
    for col, label in (("baseline_bce_test", "test"), ("baseline_bce_val", "validation")):
        s = stats(group[col])
        if s["n"]:
            notes.append(f"A constant predictor (the training click rate) scores {s['mean']:.5f} {label} BCE.")
    not_done = group[~group.index.isin(done.index)]
    no_cap = done[(done.method != BASELINE_METHOD) & done.max_table_params.isna()]
    listed = [{**_run_record(r, full_pf), "reason": _reason(r)} for r in not_done.itertuples()]
    listed += [{**_run_record(r, full_pf), "reason": "no max_table_params: not placed on the grid"}
               for r in no_cap.itertuples()]
    return {
        "dataset": dataset, "epochs": epochs, "epoch_label": paper.epoch_label(epochs), "embedding_dim": dim,
        "baseline": {"test_bce": baseline, "seeds": {_seed_key(r.seed): float(r.test_bce) for r in full_runs.itertuples()},
                     "val_bce": stats(full_runs.best_val_bce), "test_auc": stats(full_runs.test_auc),
                     "full_params": sum(full_pf) if full_pf else None, "largest_table_params": largest_full},
        "methods": methods, "noise": _noise(methods), "paper": _paper(dataset, epochs, methods, baseline),
        "paper_points": paper_points, "not_completed": listed, "notes": notes,
        "runs": [_run_record(r, full_pf) for r in group.itertuples()],
    }


def build(runs: pd.DataFrame) -> dict:
    """Table 1 for every (dataset, epochs) found in ``runs`` (``runs.load_runs``)."""
    readable = runs[runs.status != "unreadable"]
    groups = []
    keys = readable[["dataset", "epochs"]].astype(object).where(readable[["dataset", "epochs"]].notna(), None)
    for key in sorted({tuple(k) for k in keys.itertuples(index=False)}, key=str):
        mask = (keys.dataset == key[0]) if key[0] is not None else keys.dataset.isna()
        mask &= (keys.epochs == key[1]) if key[1] is not None else keys.epochs.isna()
        epochs = int(key[1]) if key[1] is not None else None
        groups.append(build_group(readable[mask], key[0] or "unknown", epochs))
    unreadable = [{"run_dir": r.run_dir, "status": r.status, "reason": r.error}
                  for r in runs[runs.status == "unreadable"].itertuples()]
    return {"groups": groups, "unreadable": unreadable, "notes": [PROTOCOL, COUNTING, CROSSING_RULES, noise.RULE]}
