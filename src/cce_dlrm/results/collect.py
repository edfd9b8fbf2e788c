"""Builds the results tables and figure from the runs' ``metrics.json`` files (never logs).

    python -m cce_dlrm.results.collect runs/table1 --out results/table1

writes ``<out>/runs.csv`` (one row per run), ``<out>/table.md`` (best validation BCE per
method and budget, mean +- std over seeds, with test BCE, learned parameters and auxiliary
bytes) and ``<out>/bce_vs_params.png`` (the papers' plot: BCE against parameters in the
largest table, log scale).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

COLUMNS = [
    "method", "dataset", "max_table_params", "seed", "status", "steps", "best_val_bce",
    "best_val_auc", "test_bce", "test_auc", "learned_params", "learned_params_largest_table",
    "aux_bytes", "samples_per_second", "world_size", "device", "run_dir",
]


def load_runs(root: Path | str) -> pd.DataFrame:
    rows = []
    for path in sorted(Path(root).rglob("metrics.json")):
        data = json.loads(path.read_text())
        data["run_dir"] = str(path.parent)
        rows.append({c: data.get(c) for c in COLUMNS})
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt(mean: float, std: float, n: int, digits: int = 4) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def left_out(runs: pd.DataFrame) -> dict[str, int]:
    """Runs not completed (failed, diverged, running, no status), counted by status.

    These never enter any column of the tables: a diverged or killed run's numbers are not
    results. E.g. ``{"diverged": 1, "running": 2}``.
    """
    statuses = runs.status.fillna("no status")
    return statuses[statuses != "completed"].value_counts().sort_index().to_dict()


def left_out_note(runs: pd.DataFrame) -> str:
    """'(3 run(s) not completed are left out: 1 diverged, 2 running; see runs.csv)' or ''."""
    counts = left_out(runs)
    if not counts:
        return ""
    parts = ", ".join(f"{n} {status}" for status, n in counts.items())
    return f"({sum(counts.values())} run(s) not completed are left out: {parts}; see runs.csv)"


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed runs grouped by (dataset, method, budget): mean/std over seeds.

    Only ``status == "completed"`` rows are used (see :func:`left_out`).
    """
    done = runs[runs.status == "completed"].copy()
    keys = ["dataset", "method", "learned_params_largest_table"]
    agg = done.groupby(keys, dropna=False).agg(
        max_table_params=("max_table_params", "first"),
        seeds=("seed", "nunique"),
        val_bce=("best_val_bce", "mean"), val_bce_std=("best_val_bce", "std"),
        val_auc=("best_val_auc", "mean"),
        test_bce=("test_bce", "mean"), test_bce_std=("test_bce", "std"),
        learned_params=("learned_params", "mean"), aux_bytes=("aux_bytes", "mean"),
        samples_per_second=("samples_per_second", "mean"),
    ).reset_index()
    return agg.sort_values(["dataset", "method", "learned_params_largest_table"]).fillna({"val_bce_std": 0.0, "test_bce_std": 0.0})


def markdown_table(agg: pd.DataFrame) -> str:
    lines = [
        "| dataset | method | max_table_params | params in largest table | val BCE | val AUC | test BCE | "
        "learned params | aux bytes | samples/s | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in agg.itertuples():
        lines.append(
            f"| {r.dataset} | {r.method} | {'-' if pd.isna(r.max_table_params) else int(r.max_table_params)} | "
            f"{int(r.learned_params_largest_table):,} | "
            f"{_fmt(r.val_bce, r.val_bce_std, r.seeds)} | {r.val_auc:.4f} | {_fmt(r.test_bce, r.test_bce_std, r.seeds)} | "
            f"{int(r.learned_params):,} | {int(r.aux_bytes):,} | {r.samples_per_second:,.0f} | {r.seeds} |"
        )
    return "\n".join(lines) + "\n"


def plot(agg: pd.DataFrame, path: Path, close: bool = True):
    """Draws and saves the BCE-vs-parameters figure; returns it when ``close`` is False."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    largest = agg.learned_params_largest_table.max()
    for method, group in agg.groupby("method"):
        uncompressed = group.learned_params_largest_table >= largest
        if uncompressed.all():
            ax.axhline(group.val_bce.iloc[0], color="black", linestyle="--", linewidth=1, label=f"{method} (uncompressed)")
            continue
        g = group[~uncompressed]
        ax.errorbar(g.learned_params_largest_table, g.val_bce, yerr=g.val_bce_std, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap
    # the budgets that were run (methods land a few parameters apart: one tick per label)
    ticks = {f"{b:.2g}": b for b in sorted(agg.learned_params_largest_table, reverse=True) if b < largest}
    if ticks:
        ax.set_xticks(list(ticks.values()), list(ticks))
    ax.set_xlabel("parameters in the largest table")
    ax.set_ylabel("best validation BCE")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    if close:
        plt.close(fig)
        return None
    return fig


def collect(root: Path | str, out: Path | str) -> pd.DataFrame:
    runs = load_runs(root)
    if runs.empty:
        raise SystemExit(f"no metrics.json under {root}: run the sweep first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "runs.csv", index=False)
    agg = summary(runs)
    (out / "table.md").write_text(markdown_table(agg))
    if len(agg):
        plot(agg, out / "bce_vs_params.png")
    return agg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="folder searched for metrics.json files")
    parser.add_argument("--out", required=True, help="folder for runs.csv, table.md, bce_vs_params.png")
    args = parser.parse_args(argv)
    agg = collect(args.runs, args.out)
    print(markdown_table(agg))
    note = left_out_note(load_runs(args.runs))
    if note:
        print(note, file=sys.stderr)
    print(f"written: {args.out}/runs.csv, table.md, bce_vs_params.png")


if __name__ == "__main__":
    main()
