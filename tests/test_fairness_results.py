"""The fairness report from fake metrics.json files: best lr on validation, both rankings,
ablations per variant, and runs that did not complete listed, never averaged."""

from __future__ import annotations

import json
from pathlib import Path

from cce_dlrm.results.fairness import best_lrs, load, lr_summary, rankings, write


def _run(root: Path, method: str, lr: float, seed: int, val: float, test: float, status="completed",
         variant=None) -> None:
    folder = root / f"{method}_{variant}_{lr}_{seed}"
    folder.mkdir(parents=True)
    config = {"trainer": {"lr": lr}, **({"variant": variant} if variant else {})}
    (folder / "metrics.json").write_text(json.dumps({
        "method": method, "dataset": "synthetic", "lr": lr, "seed": seed, "max_table_params": 1600,
        "status": status, "best_val_bce": val, "test_bce": test, "config": config,
        **({"error": "validation BCE is nan"} if status != "completed" else {})}))


def _sweep(root: Path) -> None:
    # hashing is best at its default lr 0.5; cce at lr 1, where it beats hashing
    for seed in range(3):
        _run(root, "hashing", 0.5, seed, 0.470 + seed * 1e-4, 0.471 + seed * 1e-4)
        _run(root, "hashing", 1.0, seed, 0.472, 0.473)
        _run(root, "cce", 0.5, seed, 0.474, 0.475)
        _run(root, "cce", 1.0, seed, 0.468, 0.469)
    _run(root, "cce", 2.0, 0, float("nan"), float("nan"), status="diverged")


def test_best_lr_is_chosen_on_validation_and_the_rankings_differ(tmp_path):
    _sweep(tmp_path)
    runs = load(tmp_path)
    summary = lr_summary(runs)
    assert 2.0 not in set(summary[summary.method == "cce"].lr)  # the diverged run is not averaged
    best = best_lrs(summary).set_index("method")
    assert best.loc["cce", "lr"] == 1.0 and best.loc["hashing", "lr"] == 0.5
    assert rankings(summary, 0.5) == (["hashing", "cce"], ["cce", "hashing"])


def test_the_report_names_what_changed_and_lists_failures(tmp_path):
    lr_root, ablation_root = tmp_path / "lr", tmp_path / "abl"
    _sweep(lr_root)
    for seed in range(3):
        _run(ablation_root, "cce", 0.5, seed, 0.47, 0.471, variant="cce")
        _run(ablation_root, "cce", 0.5, seed, 0.48, 0.481, variant="cce_no_clustering")
    text = write(lr_root, ablation_root, tmp_path / "out", default_lr=0.5)
    assert "The ranking changes when every method uses its best lr." in text
    assert "| cce_no_clustering | cce | 0.48100 ± 0.00000 (n=3)" in text
    assert "diverged" in text and "validation BCE is nan" in text
    assert (tmp_path / "out" / "figures" / "lr_sensitivity.png").is_file()
    assert (tmp_path / "out" / "lr_sensitivity.csv").is_file()
