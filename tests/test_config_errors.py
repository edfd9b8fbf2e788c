"""A bad configuration stops before training with one clear message and no traceback."""

import pytest

from conftest import ROOT, compose_config, run_cli


def _fails_cleanly(args, data_dir, tmp_path, expect, experiment="smoke"):
    overlay = [f"experiment={experiment}"] if experiment else []
    result = run_cli([*overlay, f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path}/run", *args],
                     cwd=ROOT, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert expect in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run" / "metrics.json").exists(), "nothing may train"


def test_unknown_method(tmp_path, data_dir):
    _fails_cleanly(["method=nosuchmethod"], data_dir, tmp_path, "nosuchmethod")


def test_budget_below_embedding_dim(tmp_path, data_dir):
    _fails_cleanly(["method=hashing", "max_table_params=4"], data_dir, tmp_path,
                   "configuration error: max_table_params=4 is below the embedding dim 16")


def test_dim_not_divisible_by_columns(tmp_path, data_dir):
    _fails_cleanly(["method=ce", "method.columns=3"], data_dir, tmp_path,
                   "configuration error: ce: embedding dim 16 is not divisible by columns=3")


def test_bottom_mlp_must_end_at_embedding_dim(tmp_path, data_dir):
    _fails_cleanly(["model.bottom_mlp=[32,6]"], data_dir, tmp_path, "configuration error: the bottom MLP")


def test_missing_data_folder(tmp_path):
    # Criteo must be prepared with `make preprocess` first
    _fails_cleanly(["dataset=criteo_kaggle"], tmp_path / "empty", tmp_path, "data error: no processed dataset",
                   experiment=None)


def test_synthetic_overlay_on_another_dataset(tmp_path):
    # smoke's dataset.build settings merged into a dataset that has no generator
    _fails_cleanly(["dataset=criteo_kaggle"], tmp_path / "empty", tmp_path, "has `build` settings but no generator")


def test_every_experiment_composes():
    from conftest import CONFIGS

    for path in sorted((CONFIGS / "experiment").glob("*.yaml")):
        cfg = compose_config([f"experiment={path.stem}"])
        assert cfg.trainer.batch_size > 0 and cfg.method._target_
