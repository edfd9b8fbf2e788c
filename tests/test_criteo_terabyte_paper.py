"""``dataset=criteo_terabyte_paper``, the paper's Terabyte variant: its config composes with
the paper's settings, and ``make preprocess DATASET=criteo_terabyte_paper DAYS=...`` builds it
from Terabyte day files (real rows) with an eighth of the rows and Kaggle's moduli."""

import os
import subprocess
import sys

import numpy as np
from hydra import compose, initialize_config_dir
from test_criteo_pipeline import REPO, ROWS, assert_matches, reference
from test_data_days import _make_command

from cce_dlrm.data.processed import ProcessedDataset
from cce_dlrm.preprocess import preprocess_arguments

# Criteo Kaggle's cardinalities with no frequency threshold, C1..C26 (docs/DATA.md)
KAGGLE_CARDINALITIES = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                        8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15,
                        286181, 105, 142572]


def _dataset(overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("preprocess", overrides=overrides).dataset


def test_the_config_composes_with_the_papers_settings():
    dataset = _dataset(["dataset=criteo_terabyte_paper", "paths.data_dir=/d"])
    assert dataset.name == "criteo_terabyte_paper"
    args = preprocess_arguments(dataset)
    assert args["out_dir"] == "/d/processed/criteo_terabyte_paper"
    assert args["raw_dir"] == "/d/raw/criteo_terabyte"  # criteo_terabyte's raw files
    assert args["raw_dir"] == preprocess_arguments(
        _dataset(["dataset=criteo_terabyte", "paths.data_dir=/d"]))["raw_dir"]
    assert args["kind"] == "terabyte" and args["days"] == list(range(24))
    assert args["row_fraction"] == 0.125
    assert len(args["per_feature_modulus"]) == 26
    assert args["per_feature_modulus"] == KAGGLE_CARDINALITIES
    assert sum(KAGGLE_CARDINALITIES) == 33_762_577  # DATA.md's total
    assert args["max_ind_range"] == 0 and args["negative_subsampling"] == 0


def test_the_other_datasets_keep_every_row_and_value():
    for name in ("criteo_kaggle", "criteo_terabyte"):
        args = preprocess_arguments(_dataset([f"dataset={name}"]))
        assert args["row_fraction"] == 1.0 and args["per_feature_modulus"] is None


def test_make_preprocess_builds_it_from_terabyte_day_files(tmp_path):
    raw = tmp_path / "data" / "raw" / "criteo_terabyte"
    raw.mkdir(parents=True)
    many = ROWS * 10  # 4,000 real rows (each copy its own line numbers)
    days = [many[:1600], many[1600:3200], many[3200:]]
    for d, lines in enumerate(days):
        (raw / f"day_{d}").write_text("\n".join(lines) + "\n")
    overrides = _make_command("DATASET=criteo_terabyte_paper", "DAYS=0-2")
    assert overrides[0] == "dataset=criteo_terabyte_paper"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "cce_dlrm.preprocess", *overrides,
         f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}",
         "progress=false", "dataset.preprocess.chunk_mb=0.1", "dataset.preprocess.workers=2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "data" / "processed" / "criteo_terabyte_paper"
    ds = ProcessedDataset(out)
    assert_matches(out, reference(days, ["train_day", "train_day", "eval_day"], fraction=0.125,
                                  moduli=KAGGLE_CARDINALITIES, keys=[0, 1, 2]))
    full = {"train": 3200, "test": 400, "val": 400}
    for split, n in full.items():  # about an eighth of every split
        assert abs(ds.rows[split] - n / 8) < 4 * np.sqrt(n * 0.125 * 0.875), (split, ds.rows)
    for j, (card, m) in enumerate(zip(ds.cardinalities, KAGGLE_CARDINALITIES)):
        used = np.unique(np.concatenate([ds.split(s).sparse[:, j] for s in full]))
        assert len(used) == card <= m + 1, (j, card, m)
    p = ds.meta["preprocess"]
    assert p["rows_skipped"]["subsampled_negative"] == 0
    assert p["rows_read"] == 4000 == p["rows_written"] + p["rows_skipped"]["row_fraction_dropped"]
    assert ds.meta["build"]["settings"]["per_feature_modulus"] == KAGGLE_CARDINALITIES
    assert [f["name"] for f in ds.meta["build"]["files"]] == ["day_0", "day_1", "day_2"]
