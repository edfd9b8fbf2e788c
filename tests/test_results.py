import json

import pandas as pd
import pytest

from cce_dlrm.results.collect import collect, load_runs


def _run(root, name, **values):
    folder = root / name
    folder.mkdir(parents=True)
    base = {"status": "completed", "dataset": "synthetic", "steps": 10, "best_val_auc": 0.7, "test_auc": 0.7,
            "aux_bytes": 0, "samples_per_second": 1000.0, "world_size": 1, "device": "cpu"}
    (folder / "metrics.json").write_text(json.dumps({**base, **values}))


def test_seeds_are_aggregated_and_failed_runs_left_out(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "full", method="full", max_table_params=None, seed=0, best_val_bce=0.45, test_bce=0.46,
         learned_params=1000, learned_params_largest_table=500)
    for seed, bce in ((0, 0.50), (1, 0.52)):
        _run(runs, f"h{seed}", method="hashing", max_table_params=100, seed=seed, best_val_bce=bce,
             test_bce=bce + 0.01, learned_params=300, learned_params_largest_table=100, aux_bytes=16)
    _run(runs, "killed", method="hashing", max_table_params=100, seed=2, best_val_bce=0.1, status="running",
         learned_params=300, learned_params_largest_table=100)
    agg = collect(runs, tmp_path / "out")
    assert len(load_runs(runs)) == 4
    hashing = agg[agg.method == "hashing"].iloc[0]
    assert hashing.seeds == 2
    assert hashing.val_bce == pytest.approx(0.51)
    assert hashing.val_bce_std == pytest.approx(pd.Series([0.50, 0.52]).std())
    table = (tmp_path / "out" / "table.md").read_text()
    assert "0.5100 ± 0.0141" in table and "| full |" in table
    assert (tmp_path / "out" / "bce_vs_params.png").stat().st_size > 1000
    assert len(pd.read_csv(tmp_path / "out" / "runs.csv")) == 4


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no metrics.json"):
        collect(tmp_path, tmp_path / "out")
