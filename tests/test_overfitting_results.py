"""The overfitting report (``make overfitting``): epoch-end validation BCE per method, where
the mean curve starts to rise, and runs that did not complete listed, never averaged."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cce_dlrm.results.overfitting import epoch_ends, load, main, verdict


def _run(root, method, seed, curve, status="completed", per_epoch=4, optimizer=None, lr=0.5):
    folder = root / (optimizer or "sgd") / method / f"seed{seed}"
    folder.mkdir(parents=True)
    history = [{"step": (i + 1) * per_epoch // 2, "val_bce": v} for i, v in enumerate(curve)]
    record = {"method": method, "seed": seed, "status": status, "steps_per_epoch": per_epoch,
              "dataset": "synthetic", "lr": lr, "history": history,
              "error": None if status == "completed" else "killed"}
    if optimizer:  # runs from before trainer.optimizer existed have no key: they used SGD
        record["optimizer"] = optimizer
    (folder / "metrics.json").write_text(json.dumps(record))


@pytest.mark.parametrize("means, expected", [
    ([0.46, 0.47, 0.48], "rises after epoch 1"),
    ([0.46, 0.45, 0.47], "rises after epoch 2"),
    ([0.46, 0.45, 0.44], "still falling at epoch 3"),
    ([0.46, 0.47, 0.45], "still falling at epoch 3"),
    ([0.46, 0.44, 0.45, 0.44], "no steady rise"),
])
def test_verdict(means, expected):
    assert verdict(pd.Series(means, index=range(1, len(means) + 1))) == expected


def test_report_from_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    # validations at half epochs: epoch ends are the 2nd, 4th and 6th points
    _run(runs, "full", 0, [0.50, 0.46, 0.45, 0.47, 0.48, 0.49])
    _run(runs, "full", 1, [0.50, 0.48, 0.45, 0.49, 0.48, 0.51])
    _run(runs, "hashing", 0, [0.52, 0.50, 0.49, 0.48, 0.48, 0.47])
    _run(runs, "hashing", 1, [0.52, 0.50, 0.49, 0.48, 0.48, 0.47], status="running")
    # another optimizer on the same data: its own rows, never averaged with the SGD runs
    _run(runs, "full", 0, [0.50, 0.46, 0.45, 0.44, 0.44, 0.43], optimizer="rowwise_adagrad", lr=0.01)
    points, records = load(runs)
    ends = epoch_ends(points)
    assert ends.loc[("synthetic", "sgd", 0.5, "full", 0)].tolist() == [0.46, 0.47, 0.49]
    assert ends.loc[("synthetic", "sgd", 0.5, "full", 1)].tolist() == [0.48, 0.49, 0.51]
    assert ends.loc[("synthetic", "rowwise_adagrad", 0.01, "full", 0)].tolist() == [0.46, 0.44, 0.43]
    assert ("synthetic", "sgd", 0.5, "hashing", 1) not in ends.index  # not completed: not averaged
    main([str(runs), "--out", str(tmp_path / "out")])
    report = (tmp_path / "out" / "overfitting.md").read_text()
    full_row = next(line for line in report.splitlines() if line.startswith("| synthetic | sgd, 0.5 | full |"))
    assert "0.47000 ± 0.01414" in full_row and "rises after epoch 1" in full_row
    assert "s0: 1.50, s1: 1.50" in full_row  # the minimum is inside epoch 2, per seed
    hashing_row = next(line for line in report.splitlines() if "| hashing |" in line)
    assert "| hashing | 1 |" in hashing_row and "still falling at epoch 3" in hashing_row
    adagrad_row = next(line for line in report.splitlines() if "| rowwise_adagrad, 0.01 | full | 1 |" in line)
    assert "still falling at epoch 3" in adagrad_row
    assert "| running | killed |" in report
    assert (tmp_path / "out" / "figures" / "val_bce_by_epoch.png").stat().st_size > 0
    assert "written:" in capsys.readouterr().out


def test_no_runs_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no metrics.json"):
        main([str(tmp_path), "--out", str(tmp_path / "out")])
