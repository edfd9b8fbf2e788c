"""End-to-end training through the real entry point, on 1 and 2 processes."""

import pytest

import json

from conftest import ROOT, method_keys, read_metrics, run_cli

SMOKE = ["experiment=smoke", "logger.tensorboard=true"]


def _train(tmp_path, data_dir, name, extra, nproc=1):
    run_dir = tmp_path / name
    result = run_cli([*SMOKE, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *extra],
                     cwd=ROOT, nproc=nproc)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return read_metrics(run_dir), run_dir


@pytest.mark.slow
def test_short_training_beats_the_label_entropy_baseline(tmp_path, data_dir):
    metrics, run_dir = _train(tmp_path, data_dir, "full", ["method=full"])
    assert metrics["status"] == "completed"
    assert metrics["steps"] == 200
    assert [h["step"] for h in metrics["history"]] == [100, 200]
    # clearly below: the entropy baseline is about 0.557 on this data
    assert metrics["best_val_bce"] < metrics["baseline_bce"] - 0.01
    assert 0.5 < metrics["best_val_auc"] <= 1.0
    assert metrics["test_bce"] is not None and metrics["samples_per_second"] > 0
    assert metrics["learned_params"] == sum(metrics["learned_params_per_feature"])
    assert metrics["aux_bytes"] == 0  # a full table stores nothing but its floats
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["table_wise", "column_wise"])
def test_two_processes_match_one_process(tmp_path, data_dir, sharding):
    """Same global batch, same data order: model parallelism must not change the numbers."""
    extra = ["method=hashing", f"trainer.sharding_type={sharding}", "logger.tensorboard=false"]
    one, _ = _train(tmp_path, data_dir, "one", extra, nproc=1)
    two, _ = _train(tmp_path, data_dir, "two", extra, nproc=2)
    assert two["world_size"] == 2 and one["world_size"] == 1
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["step"] == b["step"]
        # float sums in another order (all-to-all, allreduce): equal to ~1e-6 in practice
        assert b["val_bce"] == pytest.approx(a["val_bce"], abs=1e-4)
        assert b["val_auc"] == pytest.approx(a["val_auc"], abs=1e-4)


@pytest.mark.slow
def test_rowwise_adagrad_is_the_same_update_whatever_the_sharding(tmp_path, data_dir):
    """Sharded tables train with fbgemm's fused row-wise Adagrad, data-parallel ones with
    torchrec's Python one: the plan must not change the numbers (element-wise Adagrad on the
    data-parallel tables would)."""
    runs = {}
    for sharding in ("data_parallel", "table_wise", "column_wise"):
        metrics, _ = _train(tmp_path, data_dir, sharding, [
            "method=hashing", "trainer.optimizer=rowwise_adagrad", "trainer.lr=0.01",
            f"trainer.sharding_type={sharding}", "logger.tensorboard=false"])
        assert metrics["optimizer"] == "rowwise_adagrad"
        runs[sharding] = [(h["step"], h["val_bce"]) for h in metrics["history"]]
    print(runs)
    for sharding in ("table_wise", "column_wise"):
        for (step, bce), (ref_step, ref) in zip(runs[sharding], runs["data_parallel"], strict=True):
            assert step == ref_step and bce == pytest.approx(ref, abs=1e-5)


@pytest.mark.slow
def test_multirun_gives_each_job_its_own_folder(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", *SMOKE, f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}",
                      "method=full,hashing", "trainer.max_steps=20", "trainer.val_every=10",
                      "logger.tensorboard=false"], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0_full_P400", "1_hashing_P400"]
    metrics = [read_metrics(sweep / job) for job in jobs]
    assert [m["method"] for m in metrics] == ["full", "hashing"]
    assert metrics[0]["learned_params"] > metrics[1]["learned_params"]


@pytest.mark.slow
@pytest.mark.parametrize("key", method_keys())
def test_every_method_trains_end_to_end(tmp_path, data_dir, key):
    metrics, _ = _train(tmp_path, data_dir, key, [f"method={key}", "trainer.max_steps=30",
                                                  "trainer.val_every=15", "logger.tensorboard=false"])
    assert metrics["status"] == "completed" and metrics["steps"] == 30
    assert metrics["best_val_bce"] < 1.0 and metrics["learned_params"] > 0


@pytest.mark.slow
def test_cce_clusters_under_two_processes(tmp_path, data_dir):
    """A round under DMP with 2 ranks, through the real entry point; the accounting follows it."""
    extra = ["method=cce", "method.cluster_every=10", "method.cluster_unit=batches", "method.last_cluster=1.0", "trainer.max_steps=20",
             "trainer.val_every=10", "trainer.sharding_type=column_wise", "logger.tensorboard=false"]
    two, run_dir = _train(tmp_path, data_dir, "cce2", extra, nproc=2)
    assert two["status"] == "completed" and two["world_size"] == 2
    assert "cce round 2 at step 20" in (run_dir / "train.log").read_text()
    # after a round the cluster ids are stored: auxiliary memory of n*c int16 per compressed feature
    compressed_ids = sum(n for n, p in zip(_cards(data_dir), two["learned_params_per_feature"]) if p < n * 16)
    assert two["aux_bytes"] >= compressed_ids * 4 * 2


def _cards(data_dir):
    return json.loads((data_dir / "processed" / "synthetic_smoke" / "meta.json").read_text())["cardinalities"]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["method=cafe"], ["method=mde"], ["method=dpq"],
                                   ["method=hashing", "table_precision=fp16"]],
                         ids=["cafe", "mde", "dpq", "hashing-fp16"])
def test_newer_methods_train_under_two_processes(tmp_path, data_dir, extra):
    """The newer methods (mch has its own 2-process test) under DMP with 2 ranks."""
    two, _ = _train(tmp_path, data_dir, "two", [*extra, "trainer.max_steps=20", "trainer.val_every=10",
                                                "logger.tensorboard=false"], nproc=2)
    assert two["status"] == "completed" and two["world_size"] == 2 and two["steps"] == 20
    assert two["best_val_bce"] < two["baseline_bce"] + 0.05 and two["learned_params"] > 0
