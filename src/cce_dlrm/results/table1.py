"""The paper's Table 1 and Figure 4 from a sweep's ``metrics.json`` files.

    python -m cce_dlrm.results.table1 runs/table1_synthetic --out results/table1_synthetic

writes into ``--out``:
- ``table1.md``: per dataset and epoch limit, the compression factor (all tables; largest
  table labelled) at which each method reaches the full-table baseline BCE, with the degree-1
  and degree-2 fit range, per seed, mean ± std and min–max; the BCE grid per method and cap;
  CCE against the next best method with a noise verdict; runs not completed with their
  reasons; for Criteo Kaggle / Terabyte the paper's values beside ours; the rules used.
- ``table1.json``: the same as data.
- ``table1.csv``: one row per run (completed or not), with its own measured factors.
- ``figures/bce_vs_params.png`` and ``figures/val_curves.png`` (suffixed with dataset and
  epochs when the folder holds more than one setting).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from cce_dlrm.results import figures
from cce_dlrm.results.runs import load_runs
from cce_dlrm.results.table1_data import build
from cce_dlrm.results.table1_markdown import markdown


def figure_stem(group: dict, several: bool) -> str:
    return "" if not several else f"_{group['dataset']}_{group['epochs']}ep"


def group_runs(runs: pd.DataFrame, group: dict) -> pd.DataFrame:
    """The rows of ``runs`` that belong to a ``table1_data`` group."""
    same = runs.dataset.map(lambda d: (d or "unknown") == group["dataset"])
    same &= runs.epochs.map(lambda e: (None if e is None or pd.isna(e) else int(e)) == group["epochs"])
    return runs[same & (runs.status != "unreadable")]


def _json_ready(value):
    """NaN and infinities as null (strict JSON), numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write(root: Path | str, out: Path | str) -> dict:
    """Builds the table from ``root``'s metrics.json files and writes every output; returns the data."""
    runs = load_runs(root)
    if runs.empty:
        raise SystemExit(f"no metrics.json under {root}: run the sweep first")
    table = build(runs)
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "table1.md").write_text(markdown(table))
    (out / "table1.json").write_text(json.dumps(_json_ready(table), indent=2, allow_nan=False, default=str) + "\n")
    rows = [r for g in table["groups"] for r in g["runs"]]
    rows += [{"status": r["status"], "error": r["reason"], "run_dir": r["run_dir"]} for r in table["unreadable"]]
    pd.DataFrame(rows).to_csv(out / "table1.csv", index=False)
    several = len(table["groups"]) > 1
    for g in table["groups"]:
        stem = figure_stem(g, several)
        figures.bce_vs_params(g, out / "figures" / f"bce_vs_params{stem}.png")
        figures.val_curves(group_runs(runs, g), out / "figures" / f"val_curves{stem}.png")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="folder searched (recursively) for metrics.json files")
    parser.add_argument("--out", required=True, help="folder for table1.md/.csv/.json and figures/")
    args = parser.parse_args(argv)
    if not Path(args.runs).is_dir():
        raise SystemExit(f"error: {args.runs} is not a folder")
    table = write(args.runs, args.out)
    sys.stdout.write(markdown(table))
    print(f"written: {args.out}/table1.md, table1.csv, table1.json, figures/")


if __name__ == "__main__":
    main()
