"""The least-squares theory script: dense CCE never gets worse and reaches the optimum."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("least_squares_cce", ROOT / "scripts" / "least_squares_cce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dense_cce_is_non_increasing_within_the_bound_and_reaches_the_optimum(script):
    problem = script.make_problem(n=300, d1=20, d2=4, clusters=4, noise=0.1, seed=0)
    best = problem.residual(problem.optimum)
    errors = np.array(script.dense_cce(problem, k=4, iterations=100, seed=1))
    assert np.all(np.diff(errors) <= 1e-9 * errors[0])
    assert np.all(errors >= best - 1e-6)
    assert np.all(errors <= np.array(script.paper_bound(problem, k=4, iterations=100)) + 1e-6)
    assert errors[0] > 100 * best and errors[-1] < 1.001 * best


def test_script_writes_the_figure_and_returns_the_numbers(script, tmp_path, capsys):
    out = script.main(["--out", str(tmp_path / "ls.png"), "--iterations", "5"])
    assert (tmp_path / "ls.png").stat().st_size > 0
    assert len(out["dense"]) == len(out["sparse"]) == 6
    assert out["sparse"][-1] < out["sparse"][0]  # clustering keeps most of what was learned
    assert "optimum" in capsys.readouterr().out
