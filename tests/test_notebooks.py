"""The notebooks' code runs (cells executed in order, without Jupyter) on a real sweep folder."""

import json
import pytest

from conftest import ROOT
from test_results import _run


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_runs(notebook, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    for p, bce in ((100, 0.50), (1000, 0.48)):
        _run(runs, f"h{p}", method="hashing", max_table_params=p, seed=0, best_val_bce=bce, test_bce=bce,
             learned_params=p * 26, learned_params_largest_table=p, history=[{"step": 1, "val_bce": bce}])
    monkeypatch.setenv("CCE_RUNS", str(runs))
    monkeypatch.chdir(tmp_path)
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {}
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{notebook.name}", "exec"), namespace)
    assert (tmp_path / "bce_vs_params.png").exists() and (tmp_path / "val_curves.png").exists()
