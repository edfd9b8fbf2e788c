"""Does validation BCE rise after the first epoch? The report of ``make overfitting``.

    python -m cce_dlrm.results.overfitting runs/overfitting --out results/overfitting

reads every ``metrics.json`` under the folder (``experiment=overfitting`` and
``experiment=overfitting_small``: ``full`` and ``hashing`` for 3 epochs, validated 4 times
per epoch, no early stopping) and writes ``<out>/overfitting.md``, ``overfitting.csv`` (one
row per run and validation) and ``figures/val_bce_by_epoch.png``.

Per setting (dataset, optimizer and learning rate) and method: validation BCE at each epoch
end, mean ± std over seeds, its change from one epoch to the next, and per seed where the
minimum was. A method "rises after epoch e" when its mean validation BCE at the end of every
later epoch is above the one at the end of epoch e; the table says so, or that it is still
falling. Runs that did not complete are listed and never averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

SETTING = ["dataset", "optimizer", "lr"]
KEY = [*SETTING, "method"]
COLUMNS = [*KEY, "seed", "status", "step", "epoch", "val_bce", "run_dir"]


def load(root: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(validations, runs): one row per validation of a completed run; one row per run."""
    points, runs = [], []
    for path in sorted(Path(root).rglob("metrics.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            runs.append({"run_dir": str(path.parent), "status": "unreadable", "error": str(err).splitlines()[0]})
            continue
        runs.append({"run_dir": str(path.parent), "method": data.get("method"), "seed": data.get("seed"),
                     "status": data.get("status"), "error": data.get("error")})
        per_epoch = data.get("steps_per_epoch")
        if data.get("status") != "completed" or not per_epoch:
            continue
        for h in data.get("history") or []:
            if h.get("val_bce") is None:
                continue
            points.append({"dataset": data.get("dataset"), "optimizer": data.get("optimizer", "sgd"),
                           "lr": data.get("lr"), "method": data["method"], "seed": data.get("seed"),
                           "status": "completed",
                           "step": h["step"], "epoch": h["step"] / per_epoch, "val_bce": h["val_bce"],
                           "run_dir": str(path.parent)})
    points = pd.DataFrame(points, columns=COLUMNS).drop_duplicates(["run_dir", "step"])
    return points, pd.DataFrame(runs, columns=["run_dir", "method", "seed", "status", "error"])


def epoch_ends(points: pd.DataFrame) -> pd.DataFrame:
    """Validation BCE at each whole epoch (rows: dataset, optimizer, lr, method, seed;
    columns: epoch 1, 2, ...)."""
    ends = points[(points.epoch - points.epoch.round()).abs() < 1e-9].copy()
    ends["epoch"] = ends.epoch.round().astype(int)
    ends = ends[ends.epoch >= 1]
    return ends.pivot_table(index=[*KEY, "seed"], columns="epoch", values="val_bce")


def verdict(means: pd.Series) -> str:
    """From the mean validation BCE at epochs 1..E: where it starts to rise for good."""
    values = means.dropna()
    epochs = list(values.index)
    for i, e in enumerate(epochs[:-1]):
        if all(values[later] > values[e] for later in epochs[i + 1:]):
            return f"rises after epoch {e}"
    if len(values) > 1 and values.iloc[-1] < values.iloc[:-1].min():
        return f"still falling at epoch {epochs[-1]}"
    return "no steady rise"


def markdown(points: pd.DataFrame, runs: pd.DataFrame) -> str:
    ends = epoch_ends(points)
    lines = ["| dataset | optimizer, lr | method | seeds | "
             + " | ".join(f"val BCE, epoch {e}" for e in ends.columns)
             + " | change per epoch | verdict (means) | minimum per seed (epoch) |",
             "|---|---|---|---|" + "---|" * len(ends.columns) + "---|---|---|"]
    for (dataset, optimizer, lr, method), group in ends.groupby(level=KEY, sort=True):
        mean, std = group.mean(), group.std()
        cells = [f"{mean[e]:.5f} ± {std[e]:.5f}" if len(group) > 1 else f"{mean[e]:.5f}" for e in ends.columns]
        changes = ", ".join(f"{mean[b] - mean[a]:+.5f}" for a, b in zip(ends.columns[:-1], ends.columns[1:]))
        mins = []
        mine = points[(points.dataset == dataset) & (points.optimizer == optimizer) & (points.lr == lr)
                      & (points.method == method)]
        for seed, curve in mine.groupby("seed"):
            best = curve.loc[curve.val_bce.idxmin()]
            mins.append(f"s{seed}: {best.epoch:.2f}")
        lines.append(f"| {dataset} | {optimizer}, {lr:g} | {method} | {len(group)} | " + " | ".join(cells)
                     + f" | {changes} | {verdict(mean)} | {', '.join(mins)} |")
    bad = runs[runs.status != "completed"]
    if not bad.empty:
        lines += ["", "Not completed (never averaged):", "", "| run | status | reason |", "|---|---|---|"]
        lines += [f"| {r.run_dir} | {r.status} | {r.error or '-'} |" for r in bad.itertuples()]
    return "\n".join(lines) + "\n"


def plot(points: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    settings = list(points.groupby(SETTING, sort=True))
    cols = min(2, len(settings))
    rows = -(-len(settings) // cols)
    fig = Figure(figsize=(5.5 * cols, 4 * rows))
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {m: cycle[i % len(cycle)] for i, m in enumerate(sorted(points.method.unique()))}
    for k, ((dataset, optimizer, lr), setting) in enumerate(settings):
        ax = fig.add_subplot(rows, cols, k + 1)
        for method, group in setting.groupby("method"):
            for _, curve in group.groupby("seed"):
                curve = curve.sort_values("epoch")
                ax.plot(curve.epoch, curve.val_bce, color=colors[method], alpha=0.3, lw=1)
            mean = group.groupby(group.epoch.round(3)).val_bce.mean()
            ax.plot(mean.index, mean.values, color=colors[method], lw=2, marker="o", ms=3,
                    label=f"{method} (mean)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation BCE")
        ax.set_title(f"{dataset}, {optimizer} lr {lr:g} (thin: seeds)", fontsize=9)
        ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def write(root: Path | str, out: Path | str) -> str:
    points, runs = load(root)
    if runs.empty:
        raise FileNotFoundError(f"no metrics.json under {root}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points.to_csv(out / "overfitting.csv", index=False)
    text = ["# Does a full table overfit after one epoch?", "",
            "Validation BCE at each epoch end (mean ± std over seeds) of `experiment=overfitting` and "
            "`experiment=overfitting_small` (see `configs/experiment/overfitting*.yaml`); the figure "
            "shows every validation, one panel per dataset and optimizer (where the validation "
            "schedule and an epoch end fall one step apart, both validations are drawn).", "",
            markdown(points, runs) if not points.empty else "No completed run.\n"]
    if not points.empty:
        plot(points, out / "figures" / "val_bce_by_epoch.png")
        text.append("![validation BCE by epoch](figures/val_bce_by_epoch.png)\n")
    report = "\n".join(text)
    (out / "overfitting.md").write_text(report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs")
    parser.add_argument("--out", default="results/overfitting")
    args = parser.parse_args(argv)
    try:
        report = write(args.runs, args.out)
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    print(report)
    print(f"written: {args.out}/overfitting.md, overfitting.csv, figures/")


if __name__ == "__main__":
    main()
