"""Table 1 from metrics.json files: factor arithmetic, crossings, seeds, noise, failed runs, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from cce_dlrm.results import noise, paper
from cce_dlrm.results.compression import (
    capped_params, factor_all_tables, factor_largest_table, full_params, learned_at_cap,
)
from cce_dlrm.results.crossing import find_crossing, fit_crossing
from cce_dlrm.results.runs import load_runs
from cce_dlrm.results.table1 import main, write
from cce_dlrm.results.table1_data import build

VOCAB = [10, 100, 5000]
DIM = 16
FULL = full_params(VOCAB, DIM)  # [160, 1600, 80000]
# BCE = level - slope * ln(cap / 1000): each method's line crosses the baseline 0.45 at a known cap
CURVES = {"cce": (0.456, 0.003), "ce": (0.457, 0.003), "hashing": (0.458, 0.003), "dhe": (0.462, 0.002),
          "pq": (0.455, 0.0)}
BASELINE = 0.45


def true_cap(method: str) -> float:
    level, slope = CURVES[method]
    return 1000 * math.exp((level - BASELINE) / slope)


def write_run(root, name, **values):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(values))
    return folder


def write_sweep(root, dataset="synthetic", epochs=3, caps=(1000, 2000, 4000, 8000, 16000), seeds=(0, 1, 2),
                spread=0.0002, extras=True):
    """A fake sweep: the full baseline and every method of CURVES at ``caps`` x ``seeds``."""
    config = {"trainer": {"epochs": epochs}, "model": {"embedding_dim": DIM}}
    common = dict(dataset=dataset, embedding_dim=DIM, config=config, aux_bytes=0)

    def history(bce):
        return [{"step": 10, "val_bce": bce + 0.002, "val_auc": 0.7, "test_bce": bce + 0.002, "test_auc": 0.7},
                {"step": 20, "val_bce": bce, "val_auc": 0.71, "test_bce": bce, "test_auc": 0.71}]

    for seed in seeds:
        bce = BASELINE + (seed - 1) * spread
        write_run(root, f"full/s{seed}", method="full", max_table_params=None, seed=seed, status="completed",
                  best_val_bce=bce, test_bce=bce, test_auc=0.8, learned_params=sum(FULL),
                  learned_params_largest_table=max(FULL), learned_params_per_feature=FULL, history=history(bce),
                  **common)
        for method, (level, slope) in CURVES.items():
            for cap in caps:
                per_feature = capped_params(FULL, cap)
                if method == "dhe":  # a network per compressed feature: not the table formula
                    per_feature = [p if p <= cap else int(0.9 * cap) for p in FULL]
                bce = level - slope * math.log(cap / 1000) + (seed - 1) * spread
                events = [{"step": 10, "cluster/round": 1}] if method == "cce" else []
                write_run(root, f"{method}/{cap}/s{seed}", method=method, max_table_params=cap, seed=seed,
                          status="completed", best_val_bce=bce, test_bce=bce, test_auc=0.75,
                          learned_params=sum(per_feature), learned_params_largest_table=max(per_feature),
                          learned_params_per_feature=per_feature, history=history(bce), events=events, **common)
    if extras:
        write_run(root, "cce/failed", method="cce", max_table_params=caps[1], seed=7, status="failed",
                  error="RuntimeError: out of memory", **common)
        write_run(root, "hashing/diverged", method="hashing", max_table_params=caps[0], seed=8, status="diverged",
                  error="validation BCE is nan at step 20", best_val_bce=None, test_bce=None, **common)
        write_run(root, "ce/running", method="ce", max_table_params=caps[0], seed=9, status="running",
                  best_val_bce=0.1, test_bce=0.1, **common)
    return root


# --- (1) compression factors -------------------------------------------------------------

def test_paper_example_all_tables_and_largest_table():
    full = full_params([10, 100, 10**6], 16)
    capped = capped_params(full, 8_000)
    assert capped == [160, 1600, 8000]
    assert factor_all_tables(full, capped) == pytest.approx((10 + 100 + 10**6) / (10 + 100 + 500))
    assert round(factor_all_tables(full, capped), -1) == 1640
    assert factor_largest_table(full, capped) == pytest.approx(2000)


def test_learned_at_cap_uses_the_runs_own_counts():
    measured = {1000: [160, 900, 900], 4000: [160, 1600, 3600]}  # a DHE-like 0.9 x cap
    assert learned_at_cap(1000, FULL, measured) == [160, 900, 900]
    assert learned_at_cap(4000, FULL, measured) == [160, 1600, 3600]
    between = learned_at_cap(2000, FULL, measured)
    assert between[0] == 160 and between[2] == pytest.approx(1800)
    assert between[1] == pytest.approx(1600 * 0.95)  # ratio 0.9 -> 1.0, linear in log(cap): halfway
    assert learned_at_cap(2000, FULL, {}) == capped_params(FULL, 2000)
    with pytest.raises(ValueError, match="differ in length"):
        factor_all_tables(FULL, [1, 2])


# --- (2) crossings -------------------------------------------------------------------------

def _line(caps, at=5000.0, slope=0.01, base=0.45):
    return [base - slope * math.log(c / at) for c in caps]


def test_interpolation_recovers_the_known_crossing():
    caps = [1000, 2000, 4000, 8000, 16000, 32000]
    c = find_crossing(caps, _line(caps), 0.45)
    assert c.status == "interpolated" and c.cap == pytest.approx(5000)
    assert c.fits[1] == pytest.approx(5000) and c.fits[2] == pytest.approx(5000)
    assert c.fit_caps == [2000, 4000, 8000, 16000]  # the 4 nearest in log(cap)


def test_extrapolation_beyond_the_grid():
    caps = [250, 500, 1000, 2000]
    c = find_crossing(caps, _line(caps), 0.45)
    assert c.status == "extrapolated" and c.cap == pytest.approx(5000)
    assert c.fit_caps == caps


def test_flat_curve_above_the_baseline_is_not_reached():
    c = find_crossing([1000, 2000, 4000, 8000], [0.46] * 4, 0.45)
    assert c.status == "not reached" and c.cap is None and c.fits == {1: None, 2: None}


def test_degree_two_fit_that_never_crosses():
    caps = [1000, 2000, 4000, 8000]
    xs = [math.log(c) for c in caps]
    ys = [0.46 + 0.001 * (x - xs[-1] - 1) ** 2 for x in xs]  # falling, flattening above 0.46
    assert fit_crossing(xs, ys, 0.455, 2) is None
    c = find_crossing(caps, ys, 0.455)
    assert c.fits[2] is None and c.fits[1] is not None and 8000 < c.fits[1] < 80_000
    assert c.status == "extrapolated" and c.cap == c.fits[1]


def test_a_fitted_crossing_more_than_ten_times_beyond_the_grid_is_not_used():
    """A nearly flat curve puts its fitted crossing anywhere: past 10x the grid it is 'not reached'."""
    caps = [1000, 2000, 4000, 8000]
    xs = [math.log(c) for c in caps]
    ys = [0.46 + 0.001 * (x - xs[-1] - 1) ** 2 for x in xs]
    line = fit_crossing(xs, ys, 0.45, 1)
    assert line is not None and math.exp(line) > 80_000  # the degree-1 fit does cross, far away
    assert find_crossing(caps, ys, 0.45).status == "not reached"
    flat_below = [0.4490, 0.4491, 0.4492, 0.4493]  # below the baseline everywhere, barely sloped
    c = find_crossing(caps, flat_below, 0.45)
    assert c.status == "below grid" and c.cap == 1000


def test_crossing_beyond_the_full_table_is_not_reached():
    caps = [250, 500, 1000, 2000]
    assert find_crossing(caps, _line(caps), 0.45, max_cap=4000).status == "not reached"


def test_reached_at_the_smallest_cap():
    caps = [1000, 2000, 4000]
    c = find_crossing(caps, [0.44, 0.44, 0.44], 0.45)  # flat below: the fits say nothing
    assert c.status == "below grid" and c.cap == 1000 and c.is_bound
    down = find_crossing(caps, _line(caps, at=500), 0.45)
    assert down.status == "extrapolated" and down.cap == pytest.approx(500)


# --- (4) noise ------------------------------------------------------------------------------

def test_noise_rule():
    assert noise.compare_intervals([(1, 1), (2, 2)], [(3, 3), (4, 4)], False) == noise.BEYOND_BETTER
    assert noise.compare_intervals([(1, 1), (3.5, 3.5)], [(3, 3), (4, 4)], False) == noise.WITHIN
    assert noise.compare_intervals([(5, 5), (6, 6)], [(3, 3), (4, 4)], False) == noise.BEYOND_WORSE
    assert noise.compare_intervals([(1, 1)], [(3, 3), (4, 4)], False) == noise.NOT_JUDGED
    # factors: a seed that does not reach the baseline is below every reached seed
    reached = [noise.factor_interval("interpolated", 10.0), noise.factor_interval("interpolated", 12.0)]
    missing = [noise.factor_interval("not reached", None)] * 2
    assert noise.compare_intervals(reached, missing, True) == noise.BEYOND_BETTER


# --- (3, 5) the table ------------------------------------------------------------------------

def test_table_from_a_fake_sweep(tmp_path):
    table = build(load_runs(write_sweep(tmp_path / "runs")))
    (g,) = table["groups"]
    assert g["baseline"]["test_bce"]["mean"] == pytest.approx(BASELINE)
    assert g["baseline"]["test_bce"]["n"] == 3 and g["baseline"]["full_params"] == sum(FULL)
    cce = g["methods"]["cce"]["factor"]
    assert cce["status"] == "interpolated" and cce["cap"] == pytest.approx(true_cap("cce"))
    expected = factor_all_tables(FULL, capped_params(FULL, true_cap("cce")))
    assert cce["factor_all"] == pytest.approx(expected)
    assert cce["factor_largest"] == pytest.approx(max(FULL) / true_cap("cce"))
    assert cce["fits"]["1"]["factor_all"] == pytest.approx(expected)  # exact lines: every fit agrees
    # per seed: seed 0 sits lower, so it reaches the baseline at a smaller cap (larger factor)
    seeds = cce["seeds"]
    assert set(seeds) == {"0", "1", "2"}
    assert seeds["0"]["factor_all"] > seeds["1"]["factor_all"] > seeds["2"]["factor_all"]
    assert cce["seed_stats_all"]["n"] == 3
    assert cce["seed_stats_all"]["min"] == seeds["2"]["factor_all"]
    # DHE would need more than the full largest table; PQ is flat above: neither reaches it
    assert g["methods"]["dhe"]["factor"]["status"] == "not reached"
    assert g["methods"]["pq"]["factor"]["status"] == "not reached"
    # failed, diverged and running runs are listed with their reasons and never averaged
    listed = {r["status"]: r["reason"] for r in g["not_completed"]}
    assert listed == {"failed": "RuntimeError: out of memory", "diverged": "validation BCE is nan at step 20",
                      "running": "status running"}
    first = g["methods"]["ce"]["grid"][0]
    assert first["test_bce"]["n"] == 3 and "9" not in first["seeds"]
    assert first["test_bce"]["mean"] == pytest.approx(CURVES["ce"][0])
    assert first["test_bce"]["std"] == pytest.approx(0.0002)
    # noise: CCE leads CE by 0.001 at every cap with seeds 0.0004 apart: beyond noise
    verdicts = {c["cap"]: (c["next_best"], c["verdict"]) for c in g["noise"]["caps"]}
    assert verdicts[1000.0] == ("pq", noise.BEYOND_WORSE)  # flat PQ is the best at the smallest cap
    assert verdicts[8000.0] == ("ce", noise.BEYOND_BETTER)
    assert g["noise"]["factor"]["next_best"] == "ce"
    assert g["noise"]["factor"]["verdict"] == noise.BEYOND_BETTER
    assert g["paper"]["factors"] == []  # no paper numbers for synthetic data


def test_all_within_noise_claims_no_ranking(tmp_path):
    table = build(load_runs(write_sweep(tmp_path / "runs", spread=0.01, extras=False)))
    (g,) = table["groups"]
    assert {c["verdict"] for c in g["noise"]["caps"]} == {noise.WITHIN}
    assert "no ranking is claimed" in g["noise"]["summary"]


def test_cli_writes_table_json_csv_and_figures(tmp_path, capsys):
    runs = write_sweep(tmp_path / "runs")
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "metrics.json").write_text("{not json")
    out = tmp_path / "results" / "exp"
    main([str(runs), "--out", str(out)])
    md = (out / "table1.md").read_text()
    assert "| cce | 8.9x (interpolated)" in md  # sum(FULL) / (160 + 1600 + e^2 * 1000)
    assert "| compression factor | ce | 8.9x | 6.8x | CCE needs 1.32x fewer parameters |" in md
    assert "RuntimeError: out of memory" in md and "diverged" in md and "broken" in md
    assert "Noise: CCE against the next best method" in md
    data = json.loads((out / "table1.json").read_text())
    assert data["groups"][0]["methods"]["hashing"]["factor"]["status"] == "interpolated"
    import pandas as pd

    csv = pd.read_csv(out / "table1.csv")
    assert len(csv) == 3 + 5 * 5 * 3 + 3 + 1 and set(csv.status) == {"completed", "failed", "diverged",
                                                                    "running", "unreadable"}
    for name in ("bce_vs_params.png", "val_curves.png"):
        assert (out / "figures" / name).stat().st_size > 5000
    assert "written:" in capsys.readouterr().out


def test_kaggle_shows_the_papers_values_beside_ours(tmp_path):
    write_sweep(tmp_path / "runs", dataset="criteo_kaggle", epochs=10, caps=(1600, 3500, 8000, 16000, 35000),
                extras=False)
    table = write(tmp_path / "runs", tmp_path / "out")
    (g,) = table["groups"]
    rows = {r["method"]: r for r in g["paper"]["factors"]}
    assert set(rows) == {"cce", "ce", "hashing", "dhe"} and rows["cce"]["paper_low"] == 8500
    assert rows["cce"]["ours_over_paper"][0] == pytest.approx(rows["cce"]["ours"] / 8500)
    assert rows["dhe"]["ours_status"] == "not reached" and rows["dhe"]["ours_over_paper"] is None
    cell = next(x for x in g["methods"]["cce"]["grid"] if x["cap"] == 8000)
    assert cell["paper_bce"] == 0.4508 and cell["diff_vs_paper"] == pytest.approx(cell["test_bce"]["mean"] - 0.4508)
    assert g["paper"]["baseline_diff"] == pytest.approx(BASELINE - 0.4533)
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "Beside the paper's Table 1" in md and "| cce |" in md and "8,500x" in md
    assert paper.table1_factors("criteo_kaggle", 1)["ce"] == (127, 155)


def test_a_completed_rerun_replaces_a_failed_attempt(tmp_path):
    runs = tmp_path / "runs"
    write_sweep(runs, seeds=(0,), extras=False)
    write_run(runs, "retry/old", method="cce", max_table_params=1000, seed=0, status="failed", error="killed",
              dataset="synthetic", config={"trainer": {"epochs": 3}})
    import os

    os.utime(runs / "retry/old/metrics.json", (0, 0))  # older than the completed one
    g = build(load_runs(runs))["groups"][0]
    assert g["not_completed"] == [] and g["methods"]["cce"]["grid"][0]["test_bce"]["n"] == 1


def test_bad_input_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "cce_dlrm.results.table1", str(empty), "--out", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and result.stderr.strip() == f"no metrics.json under {empty}: run the sweep first"


@pytest.mark.parametrize("module", ["compression", "crossing", "noise"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"cce_dlrm.results.{module}"))
    assert result.attempted > 0 and result.failed == 0


def test_without_a_baseline_the_grid_still_builds(tmp_path):
    runs = write_sweep(tmp_path / "runs", seeds=(0, 1), extras=False)
    for path in (runs / "full").rglob("metrics.json"):
        path.unlink()
    out = tmp_path / "out"
    table = write(runs, out)
    (g,) = table["groups"]
    assert g["methods"]["cce"]["factor"] is None and len(g["methods"]["cce"]["grid"]) == 5
    assert any("No completed full-table run" in n for n in g["notes"])
    assert "No completed full-table run" in (out / "table1.md").read_text()
    json.loads((out / "table1.json").read_text())  # strict JSON: no NaN


def test_runs_without_per_feature_counts_use_the_table_formula(tmp_path):
    runs = write_sweep(tmp_path / "runs", seeds=(0,), extras=False)
    for path in (runs / "cce").rglob("metrics.json"):
        data = json.loads(path.read_text())
        del data["learned_params_per_feature"]
        path.write_text(json.dumps(data))
    cce = build(load_runs(runs))["groups"][0]["methods"]["cce"]["factor"]
    assert cce["factor_all"] == pytest.approx(factor_all_tables(FULL, capped_params(FULL, true_cap("cce"))))
