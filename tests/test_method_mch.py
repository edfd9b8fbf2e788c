"""``mch``: torchrec's managed-collision tables keep the most frequent ids on rows of their own."""

import json

import pytest
import torch
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import ConfigError, FeatureSpec
from cce_dlrm.embeddings.mch import MCHEmbedding

from conftest import ROOT, read_metrics, run_cli

DIM, INIT_STD = 16, 0.05
# one feature that fits (a plain full table) and one managed one of 512 / 16 = 32 rows
FEATURES = [FeatureSpec("small", 7), FeatureSpec("big", 1000)]
BUDGET = 512
HOT = torch.arange(10)  # the frequent ids of "big"


def _skewed_batch(gen: torch.Generator) -> KeyedJaggedTensor:
    """400 samples: each hot id 20 times, then 200 draws from the 990 rare ids (once or twice each)."""
    big = torch.cat([HOT.repeat_interleave(20), torch.randint(10, 1000, (200,), generator=gen)])
    big = big[torch.randperm(big.numel(), generator=gen)]
    small = torch.randint(0, 7, (big.numel(),), generator=gen)
    return KeyedJaggedTensor(keys=["small", "big"], values=torch.cat([small, big]),
                             lengths=torch.ones(2 * big.numel(), dtype=torch.int32))


@pytest.mark.parametrize("policy", ["lfu", "distance_lfu"])
def test_the_most_frequent_ids_keep_distinct_stable_rows(policy):
    method = MCHEmbedding(FEATURES, DIM, BUDGET, INIT_STD, seed=0, eviction_policy=policy)
    assert method.rows == [7, 32]
    gen = torch.Generator().manual_seed(0)
    shared = 31  # the last row: every id the module does not keep
    assert (method.remapped_rows(1, HOT) == shared).all()  # nothing kept before training
    method.train()
    history = []
    for _ in range(6):
        method(_skewed_batch(gen))  # training-mode forwards count ids and evict (interval 1)
        history.append(method.remapped_rows(1, HOT))
    rows = history[1]
    assert len(set(rows.tolist())) == len(HOT), "each frequent id has a row of its own"
    assert (rows != shared).all() and (rows < shared).all()
    for later in history[2:]:
        torch.testing.assert_close(later, rows)  # and keeps it while it stays frequent
    # at most 31 ids are kept: most of the 990 rare ids share the last row
    rare = method.remapped_rows(1, torch.arange(10, 1000))
    assert (rare == shared).sum() >= 990 - (31 - len(HOT))
    kept = rare[rare != shared]
    assert len(set(kept.tolist()) | set(rows.tolist())) == kept.numel() + len(HOT)  # never two ids per row


def test_evaluation_does_not_change_the_remapping():
    method = MCHEmbedding(FEATURES, DIM, BUDGET, INIT_STD, seed=0)
    gen = torch.Generator().manual_seed(1)
    method.train()
    method(_skewed_batch(gen))
    before = method.remapped_rows(1, torch.arange(1000))
    method.eval()
    with torch.no_grad():
        for _ in range(3):
            method(_skewed_batch(gen))
    torch.testing.assert_close(method.remapped_rows(1, torch.arange(1000)), before)


@pytest.mark.parametrize("policy, metadata", [("lfu", 1), ("distance_lfu", 2)])
def test_aux_bytes_are_the_remapping_state(policy, metadata):
    """Per managed feature: sorted kept ids, their rows and the policy's counters, int64 per row."""
    method = MCHEmbedding(FEATURES, DIM, BUDGET, INIT_STD, seed=0, eviction_policy=policy)
    assert method.aux_bytes() == [0, 8 * 32 * (2 + metadata)]
    state = [b for n, b in method.named_buffers() if n.rsplit(".", 1)[-1].startswith("_mch_")
             and n.rsplit(".", 1)[-1] != "_mch_slots"]
    assert sum(b.numel() * b.element_size() for b in state) == method.aux_bytes()[1]
    assert method.learned_params() == [7 * DIM, 32 * DIM]
    assert method.allowed_sharding_types() == {"big": ["row_wise"]}  # the small table: any


@pytest.mark.parametrize("kwargs, text", [
    ({"eviction_policy": "lru"}, "eviction_policy must be one of"),
    ({"eviction_interval": 0}, "eviction_interval must be >= 1"),
    ({"decay_exponent": -1.0}, "decay_exponent must be >= 0"),
])
def test_bad_settings_are_config_errors(kwargs, text):
    with pytest.raises(ConfigError, match=text):
        MCHEmbedding(FEATURES, DIM, BUDGET, INIT_STD, seed=0, **kwargs)


def test_a_budget_below_two_rows_is_refused():
    with pytest.raises(ConfigError, match="fewer than 2 per rank"):
        MCHEmbedding(FEATURES, DIM, DIM, INIT_STD, seed=0)


SMOKE = ["experiment=smoke", "method=mch", "trainer.max_steps=30", "trainer.val_every=15",
         "logger.tensorboard=false"]


def _expected_aux(data_dir) -> int:
    cards = json.loads((data_dir / "processed" / "synthetic_smoke" / "meta.json").read_text())["cardinalities"]
    rows = [400 // 16 for n in cards if n * 16 > 400]  # the smoke experiment: P = 400, d = 16
    return sum(8 * 3 * r for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_mch_trains_end_to_end(tmp_path, data_dir, nproc):
    run_dir = tmp_path / f"mch{nproc}"
    result = run_cli([*SMOKE, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"], cwd=ROOT, nproc=nproc)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["steps"] == 30 and metrics["world_size"] == nproc
    assert metrics["best_val_bce"] < 1.0
    assert metrics["aux_bytes"] == _expected_aux(data_dir)
    assert all(p <= 400 or p == n * 16 for p, n in zip(
        metrics["learned_params_per_feature"],
        json.loads((data_dir / "processed" / "synthetic_smoke" / "meta.json").read_text())["cardinalities"]))


@pytest.mark.slow
def test_a_sharding_type_torchrec_cannot_give_mch_is_one_line(tmp_path, data_dir):
    result = run_cli([*SMOKE, f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'tw'}",
                      "trainer.sharding_type=table_wise"], cwd=ROOT)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "can only be sharded row_wise" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
