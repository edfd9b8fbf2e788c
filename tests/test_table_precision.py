"""table_precision=fp16: sub-tables stored in half precision under DMP, and training still learns."""

import pytest
import torch
import torch.distributed as dist
from torchrec import KeyedJaggedTensor
from torch.distributed._shard.sharded_tensor import ShardedTensor

from cce_dlrm.embeddings.base import ConfigError, FeatureSpec
from cce_dlrm.embeddings.ce import CEEmbedding
from cce_dlrm.embeddings.hashing import HashingEmbedding
from cce_dlrm.model.dlrm import DLRM
from cce_dlrm.training.distributed import init_runtime, shard_model, unwrap
from cce_dlrm.training.table_access import ShardedTableAccess

FEATURES = [FeatureSpec("a", 5), FeatureSpec("b", 3000), FeatureSpec("c", 800)]
DIM, CAP, BATCH = 16, 1024, 512


def data(steps=1, seed=0):
    """Labels set by feature a's id (a learnable signal); dense features pure noise."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, f.num_ids, (BATCH,), generator=gen) for f in FEATURES])
    labels = (ids[0] % 2).float()
    kjt = KeyedJaggedTensor(keys=[f.name for f in FEATURES], values=ids.reshape(-1),
                            lengths=torch.ones(len(FEATURES) * BATCH, dtype=torch.int32))
    return torch.randn(BATCH, 13, generator=gen), kjt, labels


def test_learned_bytes_count_two_bytes_per_table_float():
    method = CEEmbedding(FEATURES, DIM, CAP, init_std=0.05, seed=0, columns=4)
    assert method.learned_bytes() == [4 * n for n in method.learned_params()]
    method.set_table_precision("fp16")
    assert method.learned_bytes() == [2 * n for n in method.learned_params()]
    assert all(w.dtype == torch.float16 for w in method.ebc.parameters())
    with torch.no_grad():
        out = method(data()[1])
    assert out.dtype == torch.float32 and out.std().item() == pytest.approx(0.05, rel=0.1)
    with pytest.raises(ConfigError):
        method.set_table_precision("fp8")


def train(sharding: str, precision: str, steps: int = 60):
    """Trains a DLRM with hashed tables under DMP (1 process); -> (losses, table dtypes, moved)."""
    torch.manual_seed(0)  # the MLPs' init: the same for both precisions
    runtime = init_runtime("cpu")
    try:
        method = HashingEmbedding(FEATURES, DIM, CAP, init_std=0.05, seed=0, device="meta")
        method.set_table_precision(precision)
        model = DLRM(method, dense_in_features=13, bottom_mlp=[16, DIM], top_mlp=[16, 1])
        model, optimizer = shard_model(model, runtime, sharding, lr=0.5)
        inner = unwrap(model).embedding
        access = ShardedTableAccess(model, "embedding", inner, runtime.device)
        access.reset(inner)
        dtypes = []
        for key, value in model.state_dict().items():
            if ".ebc.embedding_bags." in key:
                local = value.local_shards()[0].tensor if isinstance(value, ShardedTensor) else value
                dtypes.append(local.dtype)
        before = {name: access.read(name) for name in ("a__s0c0", "b__s0c0")}
        dense, kjt, labels = data()
        losses = []
        for _ in range(steps):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(dense, kjt), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        moved = all((access.read(name) != value).any() for name, value in before.items())
        return losses, dtypes, moved
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("sharding", ["table_wise", "column_wise", "data_parallel"])
def test_fp16_tables_are_half_precision_under_dmp_and_training_lowers_the_loss(sharding):
    losses, dtypes, moved = train(sharding, "fp16")
    assert dtypes and all(d == torch.float16 for d in dtypes)
    assert moved, "the fused optimizer never updated the fp16 tables"
    assert losses[-1] < losses[0] - 0.3, losses


def test_fp16_learns_like_fp32():
    half, _, _ = train("table_wise", "fp16")
    full, dtypes, _ = train("table_wise", "fp32")
    assert all(d == torch.float32 for d in dtypes)
    assert abs(half[-1] - full[-1]) < 0.02, (half[-1], full[-1])


@pytest.mark.slow
def test_fp16_tables_through_the_entry_point(tmp_path, data_dir):
    """`table_precision=fp16` from the command line: trained, and counted as 2 bytes a float."""
    from conftest import ROOT, read_metrics, run_cli

    common = ["experiment=smoke", f"paths.data_dir={data_dir}", "trainer.max_steps=20",
              "trainer.val_every=10", "logger.tensorboard=false", "table_precision=fp16"]
    done = run_cli([*common, "method=hashing", f"hydra.run.dir={tmp_path / 'h'}"], cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(tmp_path / "h")
    assert metrics["status"] == "completed"
    assert metrics["learned_bytes"] == 2 * metrics["learned_params"]  # hashing: tables only
    refused = run_cli([*common, "method=dhe", f"hydra.run.dir={tmp_path / 'd'}"], cwd=ROOT)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "table_precision=fp16 applies to table-based methods only" in refused.stderr
