"""Figure 4 of the CCE paper, and validation curves, from the runs' ``metrics.json`` (PNG, Agg).

Both take ``table1_data.build``'s output (a group) or ``runs.load_runs``'s frame and return a
``matplotlib.figure.Figure``, saved to ``path`` when one is given.

- ``bce_vs_params``: test BCE at the best validation against parameters in the largest table
  (log x), one line per method (mean over seeds), a band for the seeds' min-max, the
  full-table baseline as a horizontal line (its seeds' min-max as a grey band), and where the
  paper has the same setting (Kaggle best of 10 epochs: Figure 4a; Terabyte 1 epoch: 4c)
  its read-off values as faint markers.
- ``val_curves``: validation BCE against training step, one panel per cap, one colour per
  method, one thin line per seed; the full-table runs in every panel; CCE's clustering rounds
  (``events`` entries with a ``cluster/round`` key) as vertical dotted lines.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker
import pandas as pd
# Figure objects without pyplot: PNGs through the Agg canvas whatever the session's backend,
# no global state, and a notebook shows the returned figure as it is
from matplotlib.figure import Figure

ROUND_KEY = "cluster/round"


# one colour per method in every figure, whichever methods a sweep holds
KNOWN = ("cce", "ce", "hashing", "qr", "dhe", "pq", "tt", "robe", "hemb", "mch", "cafe", "mde", "dpq")


def _colors(methods) -> dict[str, str]:
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    order = list(KNOWN) + sorted(set(methods) - set(KNOWN))
    return {m: cycle[i % len(cycle)] for i, m in enumerate(order)}


def bce_vs_params(group: dict, path: Path | str | None = None):
    """Draws Figure 4 for one ``table1_data`` group; saves it to ``path`` if given; returns it."""
    methods = group["methods"]
    colors = _colors(set(methods) | set(group["paper_points"]))
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for m, v in methods.items():
        pts = [(x["largest_table_params"], x["test_bce"]) for x in v["grid"]
               if x["largest_table_params"] and x["test_bce"]["n"]]
        if not pts:
            continue
        xs = [p for p, _ in pts]
        ax.plot(xs, [s["mean"] for _, s in pts], marker="o", color=colors[m], label=m)
        ax.fill_between(xs, [s["min"] for _, s in pts], [s["max"] for _, s in pts], color=colors[m], alpha=0.2)
    for m, points in group["paper_points"].items():
        ax.scatter([x for x, _ in points], [y for _, y in points], marker="x", color=colors[m], alpha=0.35,
                   label=f"{m} (paper)")
    base = group["baseline"]["test_bce"]
    if base["n"]:
        ax.axhline(base["mean"], color="black", linestyle="--", linewidth=1, label="full tables")
        ax.axhspan(base["min"], base["max"], color="grey", alpha=0.15)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("parameters in the largest table")
    ax.set_ylabel("test BCE at the best validation")
    epochs = "" if group["epochs"] is None else f", {group['epochs']} epoch(s)"
    ax.set_title(f"{group['dataset']}{epochs}: mean over seeds, band = min–max", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=130)
    return fig


def round_steps(events) -> list[int]:
    """Steps of the clustering rounds in a run's ``events`` (absent or empty: none)."""
    if not isinstance(events, list):
        return []
    return sorted({int(e["step"]) for e in events if isinstance(e, dict) and ROUND_KEY in e and "step" in e})


def val_curves(runs: pd.DataFrame, path: Path | str | None = None, caps: list[float] | None = None):
    """Validation BCE over training for the completed runs in ``runs`` (one dataset/epoch group)."""
    done = runs[(runs.status == "completed") & runs.history.map(lambda h: isinstance(h, list) and len(h) > 0)]
    full = done[done.method == "full"]
    compressed = done[(done.method != "full") & done.max_table_params.notna()]
    all_caps = sorted({float(c) for c in compressed.max_table_params})
    caps = all_caps if caps is None else [c for c in all_caps if c in set(map(float, caps))]
    colors = _colors(set(done.method))
    cols = min(len(caps), 3) or 1
    rows = max(1, -(-len(caps) // cols))
    fig = Figure(figsize=(4.2 * cols, 3.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax in axes.flat[len(caps):]:
        ax.set_visible(False)
    for ax, cap in zip(axes.flat, caps or [None]):
        here = compressed[compressed.max_table_params.astype(float) == cap] if cap is not None else compressed
        labelled = set()
        for r in pd.concat([full, here]).itertuples():
            h = pd.DataFrame(r.history).dropna(subset=["val_bce"])
            style = "--" if r.method == "full" else "-"
            ax.plot(h.step, h.val_bce, style, color="black" if r.method == "full" else colors[r.method],
                    linewidth=1, alpha=0.8, label=None if r.method in labelled else r.method)
            labelled.add(r.method)
            for step in round_steps(r.events):
                ax.axvline(step, color=colors[r.method], linestyle=":", linewidth=1, alpha=0.6)
        ax.set_title("all runs" if cap is None else f"cap {cap:,.0f}", fontsize=9)
        ax.set_xlabel("training batches")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    for ax in axes[:, 0]:
        ax.set_ylabel("validation BCE")
    fig.suptitle("validation BCE during training (dotted: CCE clustering rounds)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=130)
    return fig
