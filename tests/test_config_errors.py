"""A bad configuration stops before training with one clear message and no traceback.

Most messages are checked by calling ``config_check.validate`` on the real composed config
(fast); a few go through the entry point as a user would, for the one-line/no-traceback
property, "before any data is read", and "printed once under torchrun".
"""

import pytest

from conftest import ROOT, compose_config, run_cli
from cce_dlrm.config_check import validate, validate_against_dataset
from cce_dlrm.embeddings.base import ConfigError


def _fails_cleanly(args, data_dir, tmp_path, expect, experiment="smoke", nproc=1):
    overlay = [f"experiment={experiment}"] if experiment else []
    result = run_cli([*overlay, f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path}/run", *args],
                     cwd=ROOT, timeout=300, nproc=nproc)
    assert result.returncode != 0
    if nproc == 1:  # torchrun's own launcher prints a traceback of itself (see the torchrun test)
        assert "Traceback" not in result.stderr + result.stdout
        assert expect in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run" / "metrics.json").exists(), "nothing may train"
    return result


# (overrides, the message expected): every value refused by config_check.validate
BAD_VALUES = [
    (["max_table_params=abc"], "max_table_params must be a positive integer (learned floats per table) "
                               "or null (no limit), got 'abc'"),
    (["max_table_params=0"], "max_table_params must be a positive integer"),
    (["max_table_params=-16"], "max_table_params must be a positive integer"),
    (["max_table_params=1.5"], "max_table_params must be a positive integer"),
    (["trainer.batch_size=0"], "trainer.batch_size must be a positive integer, got 0"),
    (["trainer.batch_size=-128"], "trainer.batch_size must be a positive integer, got -128"),
    (["trainer.batch_size=abc"], "trainer.batch_size must be a positive integer, got 'abc'"),
    (["trainer.batch_size=true"], "trainer.batch_size must be a positive integer, got True"),
    (["trainer.eval_batch_size=0"], "trainer.eval_batch_size must be a positive integer, got 0"),
    (["trainer.epochs=0"], "trainer.epochs must be a positive integer, got 0"),
    (["trainer.val_every=0"], "trainer.val_every must be a positive integer, got 0"),
    (["logger.log_every=0"], "logger.log_every must be a positive integer, got 0"),
    (["logger.progress_interval=0"], "logger.progress_interval must be a positive finite number, got 0"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 would train nothing: use null for no limit"),
    (["trainer.max_steps=-5"], "trainer.max_steps must be a positive integer, got -5 (null: no limit)"),
    (["trainer.max_steps=abc"], "trainer.max_steps must be a positive integer, got 'abc'"),
    (["trainer.lr=-1"], "trainer.lr must be a positive finite number, got -1"),
    (["trainer.lr=0"], "trainer.lr must be a positive finite number, got 0"),
    (["trainer.lr=nan"], "trainer.lr must be a positive finite number, got nan"),
    (["trainer.lr=inf"], "trainer.lr must be a positive finite number, got inf"),
    (["trainer.lr=fast"], "trainer.lr must be a positive finite number, got 'fast'"),
    (["trainer.optimizer=adam"], "trainer.optimizer must be one of sgd, rowwise_adagrad, got 'adam'"),
    (["trainer.checkpoint_every=-1"], "trainer.checkpoint_every must be an integer >= 0"),
    (["trainer.keep_checkpoints=0"], "trainer.keep_checkpoints must be a positive integer, got 0"),
    (["seed=-1"], "seed must be a non-negative integer, got -1"),
    (["seed=abc"], "seed must be a non-negative integer, got 'abc'"),
    (["init_std=0"], "init_std must be a positive finite number, got 0"),
    (["++resume=maybe"], "resume must be true or false, got 'maybe'"),
    (["model.embedding_dim=0"], "model.embedding_dim must be a positive integer, got 0"),
    (["model.bottom_mlp=[32,0,16]"], "model.bottom_mlp must be a non-empty list of positive layer widths"),
    (["model.bottom_mlp=[]"], "model.bottom_mlp must be a non-empty list of positive layer widths"),
    (["model.top_mlp=[-3,1]"], "model.top_mlp must be a non-empty list of positive layer widths"),
    (["model.bottom_mlp=[32,6]"], "the bottom MLP must end at the embedding dim (16), got [32, 6]"),
    (["model.top_mlp=[32,2]"], "the top MLP must end in 1 output, got [32, 2]"),
    (["trainer.sharding_type=diagonal"], "trainer.sharding_type must be one of auto, table_wise, column_wise"),
    (["device=tpu"], "device must be one of auto, cpu, cuda, got 'tpu'"),
    (["dataset.build.rows=0"], "dataset.build.rows must be a positive integer, got 0"),
    (["dataset.build.max_cardinality=-1"], "dataset.build.max_cardinality must be a positive integer"),
    (["dataset.build.val_fraction=1.5"], "dataset.build.val_fraction must be a fraction in [0, 1)"),
    (["dataset.build.val_fraction=0.6", "dataset.build.test_fraction=0.5"], "leaves no training rows"),
]


@pytest.mark.parametrize("overrides,expect", BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_value_is_refused_by_the_config_check(overrides, expect):
    cfg = compose_config(["experiment=smoke", *overrides])
    with pytest.raises(ConfigError) as err:
        validate(cfg, world_size=1)
    assert expect in str(err.value)
    assert "\n" not in str(err.value)


def test_cuda_only_settings_refused_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: these settings are valid here")
    with pytest.raises(ConfigError, match="device=cuda but no CUDA device is visible"):
        validate(compose_config(["experiment=smoke", "device=cuda"]), world_size=1)
    with pytest.raises(ConfigError, match="row_wise needs CUDA"):
        validate(compose_config(["experiment=smoke", "trainer.sharding_type=row_wise"]), world_size=1)


def test_batch_not_divisible_by_processes():
    cfg = compose_config(["experiment=smoke", "trainer.batch_size=255"])
    validate(cfg, world_size=1)
    with pytest.raises(ConfigError, match=r"trainer.batch_size=255 is not divisible by the number of processes \(2\)"):
        validate(cfg, world_size=2)
    cfg = compose_config(["experiment=smoke", "trainer.eval_batch_size=4095"])
    with pytest.raises(ConfigError, match=r"trainer.eval_batch_size=4095 is not divisible"):
        validate(cfg, world_size=2)


def test_every_experiment_passes_the_check():
    from conftest import CONFIGS

    for path in sorted((CONFIGS / "experiment").glob("*.yaml")):
        cfg = compose_config([f"experiment={path.stem}"])
        validate(cfg, world_size=1)
        assert cfg.trainer.batch_size > 0 and cfg.method._target_
    validate(compose_config(["max_table_params=null"]), world_size=1)  # null: no limit


META = {"rows": {"train": 54_000, "val": 3_000, "test": 3_000}, "cardinalities": [100] * 26}


def test_unreachable_max_steps_is_refused_naming_both_numbers():
    cfg = compose_config(["experiment=smoke", "trainer.batch_size=1024", "trainer.max_steps=300"])
    with pytest.raises(ConfigError) as err:
        validate_against_dataset(cfg, META, world_size=1)
    # 54,000 // 1,024 = 52 batches per epoch; 300 steps need 6 epochs
    assert str(err.value) == ("trainer.max_steps=300 cannot be reached: trainer.epochs=1 x 52 batches per "
                              "epoch = 52 steps; set trainer.epochs=6 or trainer.max_steps<=52")
    validate_against_dataset(compose_config(["experiment=smoke", "trainer.batch_size=1024",
                                             "trainer.max_steps=300", "trainer.epochs=6"]), META, world_size=1)


def test_no_full_training_batch_is_refused():
    cfg = compose_config(["experiment=smoke", "trainer.batch_size=100000"])
    with pytest.raises(ConfigError, match=r"the training split \(54000 rows\) has no full batch of 100000"):
        validate_against_dataset(cfg, META, world_size=1)


def test_more_processes_than_tables_under_table_wise_sharding():
    cfg = compose_config(["experiment=smoke", "trainer.sharding_type=table_wise"])
    validate_against_dataset(cfg, META, world_size=26)
    with pytest.raises(ConfigError, match="27 processes share 26 tables: use at most 26 processes"):
        validate_against_dataset(cfg, META, world_size=27)
    # other sharding types split tables: no such limit
    validate_against_dataset(compose_config(["experiment=smoke", "trainer.sharding_type=column_wise"]),
                             META, world_size=27)


# ---- through the entry point ------------------------------------------------------------


def test_non_numeric_budget_refused_before_any_data_is_read(tmp_path):
    data = tmp_path / "data"  # the smoke dataset would be generated here: it must not be
    _fails_cleanly(["max_table_params=abc"], data, tmp_path,
                   "configuration error: max_table_params must be a positive integer")
    assert not data.exists()


@pytest.mark.parametrize("override,expect", [
    ("seed=-1", "configuration error: seed must be a non-negative integer, got -1"),
    ("trainer.max_steps=0", "configuration error: trainer.max_steps=0 would train nothing"),
    ("trainer.val_every=0", "configuration error: trainer.val_every must be a positive integer, got 0"),
])
def test_cli_refuses_in_one_line(tmp_path, override, expect):
    result = _fails_cleanly([override], tmp_path / "data", tmp_path, expect)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(expect), lines[-5:]  # the last line, and said once
    assert sum(expect in line for line in lines) == 1
    assert not (tmp_path / "data").exists()  # refused before any data was read or generated


@pytest.mark.slow
def test_unreachable_max_steps_refused_through_the_entry_point(tmp_path, data_dir):
    # smoke: 54,000 training rows at batch 256 = 210 batches per epoch
    _fails_cleanly(["trainer.max_steps=300"], data_dir, tmp_path,
                   "configuration error: trainer.max_steps=300 cannot be reached: trainer.epochs=1 x 210 "
                   "batches per epoch = 210 steps; set trainer.epochs=2 or trainer.max_steps<=210")


@pytest.mark.slow
def test_error_printed_once_under_torchrun(tmp_path):
    # 255 is fine for 1 process: the check reads the number of processes from torchrun
    result = _fails_cleanly(["trainer.batch_size=255"], tmp_path / "data", tmp_path, "", nproc=2)
    out = result.stdout + result.stderr
    message = ("configuration error: trainer.batch_size=255 is not divisible by the number of processes (2): "
               "the global batch is split evenly; use a multiple of it")
    assert out.count(message) == 1, out[-4000:]
    # torchrun's summary names it as the root cause (not "To enable traceback see: ...")
    root_cause = out[out.index("Root Cause"):]
    assert f"traceback : {message}" in root_cause
    assert "rank      : 0" in root_cause


def test_unknown_method(tmp_path, data_dir):
    _fails_cleanly(["method=nosuchmethod"], data_dir, tmp_path, "nosuchmethod")


def test_a_method_that_rewrites_rows_refuses_an_optimizer_with_row_state(tmp_path, data_dir):
    _fails_cleanly(["method=cafe", "trainer.optimizer=rowwise_adagrad"], data_dir, tmp_path,
                   "rewrites table rows during training and does not remap their optimizer state: "
                   "use trainer.optimizer=sgd, not rowwise_adagrad")


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
