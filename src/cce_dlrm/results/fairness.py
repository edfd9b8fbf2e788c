"""The fairness report: learning-rate sensitivity and ablations, from ``metrics.json`` only.

    python -m cce_dlrm.results.fairness runs/fairness_lr runs/fairness_ablations --out results/fairness

writes ``<out>/fairness.md`` (the tables below), ``lr_sensitivity.csv``, ``ablations.csv`` and
``figures/lr_sensitivity.png``.

* **lr sensitivity**: test BCE at the best validation, mean ± std over seeds, per method and
  learning rate. Each method's best lr is chosen on its mean *validation* BCE (the test split
  chooses nothing), and the methods are ranked by test BCE twice: all at the default lr, and
  each at its own best lr. If the two rankings differ, the table says so.
* **ablations**: one row per ``variant`` (see ``configs/experiment/fairness_ablations.yaml``).

Runs that did not complete are listed with their status and never averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

COLUMNS = ["method", "dataset", "variant", "lr", "seed", "max_table_params", "status", "error",
           "best_val_bce", "test_bce", "test_auc", "learned_params", "run_dir"]


def load(root: Path | str) -> pd.DataFrame:
    """One row per ``metrics.json`` under ``root`` (lr and variant from the run's config)."""
    rows = []
    for path in sorted(Path(root).rglob("metrics.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            rows.append({"status": "unreadable", "error": str(err).splitlines()[0], "run_dir": str(path.parent)})
            continue
        config = data.get("config") or {}
        row = {key: data.get(key) for key in COLUMNS}
        row["lr"] = data.get("lr", (config.get("trainer") or {}).get("lr"))
        row["variant"] = config.get("variant")
        row["run_dir"] = str(path.parent)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _mean_std(values: pd.Series) -> str:
    values = values.dropna().astype(float)
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.5f} (n=1)"
    return f"{values.mean():.5f} ± {values.std():.5f} (n={len(values)})"


def lr_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method and lr: mean/std of validation and test BCE over completed seeds."""
    done = runs[runs.status == "completed"].copy()
    for key in ("best_val_bce", "test_bce", "lr"):
        done[key] = done[key].astype(float)
    return (done.groupby(["method", "lr"])
            .agg(val_bce=("best_val_bce", "mean"), test_bce=("test_bce", "mean"),
                 test_bce_std=("test_bce", "std"), seeds=("seed", "nunique"))
            .reset_index())


def best_lrs(summary: pd.DataFrame) -> pd.DataFrame:
    """Each method's lr with the lowest mean validation BCE, and its test BCE there."""
    index = summary.groupby("method")["val_bce"].idxmin()
    return summary.loc[index, ["method", "lr", "val_bce", "test_bce", "test_bce_std"]].reset_index(drop=True)


def rankings(summary: pd.DataFrame, default_lr: float) -> tuple[list[str], list[str]]:
    """Methods by mean test BCE (best first): all at ``default_lr``; each at its best lr."""
    at_default = summary[summary.lr == float(default_lr)].sort_values("test_bce").method.tolist()
    at_best = best_lrs(summary).sort_values("test_bce").method.tolist()
    return at_default, at_best


def lr_markdown(runs: pd.DataFrame, default_lr: float) -> str:
    summary = lr_summary(runs)
    if summary.empty:
        return "No completed learning-rate runs.\n"
    lrs = sorted(summary.lr.unique())
    lines = ["| method | " + " | ".join(f"lr {lr:g}" + (" (default)" if lr == default_lr else "") for lr in lrs)
             + " | best lr (on validation) |",
             "|---|" + "---|" * (len(lrs) + 1)]
    done = runs[runs.status == "completed"]
    best = best_lrs(summary).set_index("method")
    for method in sorted(summary.method.unique()):
        cells = [_mean_std(done[(done.method == method) & (done.lr.astype(float) == lr)].test_bce) for lr in lrs]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {best.loc[method, 'lr']:g} |")
    at_default, at_best = rankings(summary, default_lr)
    lines += ["", f"Ranking by mean test BCE, every method at the default lr {default_lr:g}: "
              + " < ".join(at_default) + ".",
              "Ranking with each method at its own best lr: " + " < ".join(at_best) + ".",
              "The ranking " + ("holds" if at_default == at_best else "changes") + " when every method uses its best lr."]
    return "\n".join(lines) + "\n"


def ablation_markdown(runs: pd.DataFrame) -> str:
    done = runs[runs.status == "completed"]
    if done.empty:
        return "No completed ablation runs.\n"
    lines = ["| variant | method | test BCE (mean ± std over seeds) | min–max | best val BCE (mean) |",
             "|---|---|---|---|---|"]
    for variant, group in done.groupby("variant", sort=True):
        test = group.test_bce.astype(float)
        lines.append(f"| {variant} | {group.method.iloc[0]} | {_mean_std(test)} | "
                     f"{test.min():.5f}–{test.max():.5f} | {group.best_val_bce.astype(float).mean():.5f} |")
    return "\n".join(lines) + "\n"


def not_completed_markdown(runs: pd.DataFrame) -> str:
    bad = runs[runs.status != "completed"]
    if bad.empty:
        return ""
    lines = ["", "Runs not completed (not averaged):", "", "| run | status | reason |", "|---|---|---|"]
    lines += [f"| {r.run_dir} | {r.status} | {r.error or '-'} |" for r in bad.itertuples()]
    return "\n".join(lines) + "\n"


def plot_lr(runs: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    summary = lr_summary(runs)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for method, group in summary.groupby("method"):
        group = group.sort_values("lr")
        ax.errorbar(group.lr, group.test_bce, yerr=group.test_bce_std.fillna(0), marker="o",
                    capsize=3, label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("test BCE at the best validation")
    ax.set_title("Learning-rate sensitivity (mean ± std over seeds)")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def write(lr_root: Path | str, ablation_root: Path | str, out: Path | str, default_lr: float) -> str:
    out = Path(out)
    lr_runs, ablation_runs = load(lr_root), load(ablation_root)
    if lr_runs.empty and ablation_runs.empty:
        raise FileNotFoundError(f"no metrics.json under {lr_root} or {ablation_root}")
    out.mkdir(parents=True, exist_ok=True)
    lr_runs.to_csv(out / "lr_sensitivity.csv", index=False)
    ablation_runs.to_csv(out / "ablations.csv", index=False)
    caps = sorted({c for c in pd.concat([lr_runs, ablation_runs]).max_table_params.dropna()})
    text = ["# Fairness: learning-rate sensitivity and ablations", "",
            f"Embedded synthetic data, the Table 1 protocol (experiment=table1_synthetic), "
            f"cap {', '.join(f'{int(c):,}' for c in caps)}; test BCE at the best validation.", "",
            "## Learning-rate sensitivity", "", lr_markdown(lr_runs, default_lr),
            not_completed_markdown(lr_runs),
            "## Ablations", "", ablation_markdown(ablation_runs), not_completed_markdown(ablation_runs)]
    if not lr_runs.empty and (lr_runs.status == "completed").any():
        plot_lr(lr_runs, out / "figures" / "lr_sensitivity.png")
    markdown = "\n".join(text)
    (out / "fairness.md").write_text(markdown)
    return markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lr_runs")
    parser.add_argument("ablation_runs")
    parser.add_argument("--out", default="results/fairness")
    parser.add_argument("--default-lr", type=float, default=0.5)
    args = parser.parse_args(argv)
    try:
        write(args.lr_runs, args.ablation_runs, args.out, args.default_lr)
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    print(f"written: {args.out}/fairness.md, lr_sensitivity.csv, ablations.csv, figures/")


if __name__ == "__main__":
    main()
