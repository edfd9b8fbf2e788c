"""``make preprocess DAYS=...``: the day list reaches the pipeline (Terabyte), all 24 days
without DAYS, and Kaggle (no day files) refuses it."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cce_dlrm.data.criteo import PreprocessConfigError, preprocess
from cce_dlrm.data.criteo.inputs import parse_days
from cce_dlrm.data.processed import ProcessedDataset
from cce_dlrm.preprocess import preprocess_arguments

REPO = Path(__file__).resolve().parents[1]
ROWS = (Path(__file__).parent / "fixtures" / "criteo" / "kaggle_rows_400.txt").read_text().splitlines()


@pytest.mark.parametrize("given, days", [
    ("0,23", [0, 23]), ("0-3,23", [0, 1, 2, 3, 23]), ("0-23", list(range(24))), (" 5, 1 ", [1, 5]),
    (7, [7]), ([0, 1, 23], [0, 1, 23]), (["0-1", 23], [0, 1, 23]), ("2,2,1-2", [1, 2]),
])
def test_parse_days(given, days):
    assert parse_days(given) == days


@pytest.mark.parametrize("given", ["3-1", "a", "0,,1", "24", [0, 24], [], [True], [0.5], "-1"])
def test_parse_days_refuses(given):
    with pytest.raises(PreprocessConfigError, match="days"):
        parse_days(given)


def _make_command(*variables):
    """The command ``make preprocess`` would run (dry run: nothing is executed)."""
    done = subprocess.run(["make", "-n", "preprocess", *variables], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "DAYS"})
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if "cce_dlrm.preprocess" in x)
    args = shlex.split(line)
    return args[args.index("cce_dlrm.preprocess") + 1:]


def _arguments(overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return preprocess_arguments(compose("preprocess", overrides=overrides).dataset)


def test_make_passes_days_as_one_list():
    overrides = _make_command("DATASET=criteo_terabyte", "DAYS=0-1,23")
    assert _arguments(overrides)["days"] == [0, 1, 23]
    assert _arguments(_make_command("DATASET=criteo_terabyte", "DAYS=0,23"))["days"] == [0, 23]


def test_without_days_terabyte_takes_all_days_and_kaggle_none():
    assert _make_command("DATASET=criteo_terabyte") == ["dataset=criteo_terabyte"]
    assert _arguments(["dataset=criteo_terabyte"])["days"] == list(range(24))
    assert "days" not in _arguments(_make_command())


def test_kaggle_refuses_days(tmp_path):
    args = _arguments(_make_command("DAYS=0,23"))
    assert args["days"] == [0, 23]
    with pytest.raises(PreprocessConfigError, match="days .* apply to Criteo Terabyte only"):
        preprocess(**{**args, "raw_dir": tmp_path, "out_dir": tmp_path / "out"}, progress=False)


def test_the_pipeline_reads_only_the_listed_days(tmp_path):
    raw = tmp_path / "data" / "raw" / "criteo_terabyte"
    raw.mkdir(parents=True)
    for d, lines in enumerate([ROWS[:100], ROWS[100:160], ROWS[160:260]]):
        (raw / f"day_{d}").write_text("\n".join(lines) + "\n")
    overrides = _make_command("DATASET=criteo_terabyte", "DAYS=0,2")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "cce_dlrm.preprocess", *overrides, f"paths.data_dir={tmp_path / 'data'}",
         f"hydra.run.dir={tmp_path / 'run'}", "progress=false", "dataset.preprocess.chunk_mb=0.05",
         "dataset.preprocess.negative_subsampling=0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ds = ProcessedDataset(tmp_path / "data" / "processed" / "criteo_terabyte")
    assert ds.rows == {"train": 100, "test": 50, "val": 50}  # day 1 left out, day 2 evaluates
    assert [f["name"] for f in ds.meta["build"]["files"]] == ["day_0", "day_2"]
