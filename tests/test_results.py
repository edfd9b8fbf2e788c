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


def test_non_completed_runs_never_averaged_and_counted_truly(tmp_path, capsys):
    from cce_dlrm.results.collect import left_out, main

    runs = tmp_path / "runs"
    common = dict(method="hashing", max_table_params=100, learned_params=300, learned_params_largest_table=100)
    _run(runs, "a", seed=0, best_val_bce=0.50, test_bce=0.51, **common)
    _run(runs, "b", seed=0, best_val_bce=0.52, test_bce=0.53, **common)  # a rerun of seed 0, also completed
    _run(runs, "diverged", seed=1, best_val_bce=9.0, test_bce=9.0, best_val_auc=0.49, status="diverged", **common)
    _run(runs, "failed", seed=2, best_val_bce=0.1, test_bce=0.1, status="failed", **common)
    _run(runs, "killed", seed=3, best_val_bce=0.2, test_bce=0.2, status="running", **common)
    assert left_out(load_runs(runs)) == {"diverged": 1, "failed": 1, "running": 1}
    main([str(runs), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "(3 run(s) not completed are left out: 1 diverged, 1 failed, 1 running; see runs.csv)" in err
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| 0.7000 |" in table  # val AUC of the completed runs only (the diverged one had 0.49)
    agg = collect(runs, tmp_path / "out")
    assert agg.iloc[0].val_bce == pytest.approx(0.51)
