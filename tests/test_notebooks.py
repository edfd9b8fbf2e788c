"""The figures notebook runs on a sweep's metrics.json files and stays paired with its script."""

import jupytext
import pytest

from conftest import ROOT
from test_table1_results import write_sweep

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(notebook, tmp_path, monkeypatch):
    runs = write_sweep(tmp_path / "runs")
    monkeypatch.setenv("CCE_RUNS", str(runs))
    monkeypatch.setenv("CCE_FIGURES", str(tmp_path / "figures"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    # the code cells in order, as a kernel would run them (no Jupyter server needed)
    for cell in jupytext.read(notebook).cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, notebook.name, "exec"), namespace)
    (group,) = namespace["table"]["groups"]
    assert group["methods"]["cce"]["factor"]["status"] == "interpolated"
    for name in ("bce_vs_params.png", "val_curves.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 5000


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_matches_its_script(notebook):
    script = notebook.with_suffix(".py")
    assert script.exists(), f"{notebook.name} has no paired {script.name} (jupytext --set-formats ipynb,py:percent)"
    cells = [(c.cell_type, c.source) for c in jupytext.read(notebook).cells]
    assert cells == [(c.cell_type, c.source) for c in jupytext.read(script).cells], \
        f"{notebook.name} and {script.name} differ: run jupytext --sync {script}"
