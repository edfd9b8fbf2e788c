"""The benchmark's data and models: Kaggle-sized tables, Zipf ids, both DLRMs.

    folder = zipf_dataset(workdir, cardinalities, rows=40_960)    # processed format, once
    cfg = compose_config("cce", cap=16_000, batch=128, dataset_path=folder)
    ours, optimizer, method = build_ours(cfg, runtime)            # as `cce_dlrm.train` builds it
    theirs, optimizer = build_torchrec(cfg, dataset, runtime)     # torchrec.models.dlrm.DLRM + DMP
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cce_dlrm.data.processed import (NUM_DENSE, NUM_SPARSE, ProcessedDataset, SplitWriter,
                                     write_meta)
from cce_dlrm.embeddings.base import TableMethod
from cce_dlrm.training.distributed import Runtime, shard_model
from cce_dlrm.training.run import build_model
from cce_dlrm.training.table_access import ShardedTableAccess

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs"


def all_methods() -> list[str]:
    """Every method config, ``full`` first."""
    names = sorted(p.stem for p in (CONFIGS / "method").glob("*.yaml"))
    return ["full"] + [n for n in names if n != "full"]


def zipf_ids(n: int, rows: int, rng: np.random.Generator, salt: int) -> np.ndarray:
    """``rows`` ids in ``0..n-1`` with Zipf(1) frequencies (rank r drawn with p ~ 1/r).

    The rank is log-uniform (floor((n+1)^u) - 1); a fixed bijection ``r -> (a r + b) mod n``
    then scatters the frequent ids over the table, as a real id dictionary does.
    """
    rank = np.floor(np.exp(rng.random(rows) * math.log(n + 1))).astype(np.int64) - 1
    rank = np.clip(rank, 0, n - 1)
    a = 2654435761 % n if n > 1 else 1
    while n > 1 and math.gcd(a, n) != 1:
        a += 1
    return (rank * a + salt * 40503) % n


def zipf_dataset(workdir: Path, cards: list[int], rows: int, seed: int = 0) -> Path:
    """A processed dataset (train = val = test = ``rows`` rows) with Zipf ids; reused if present."""
    tag = f"zipf_{rows}_{abs(hash(tuple(cards))) % 10**8}"
    folder = Path(workdir) / tag
    if (folder / "meta.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        writer = SplitWriter(folder, split)
        dense = np.log1p(rng.exponential(5.0, (rows, NUM_DENSE))).astype(np.float32)
        sparse = np.stack([zipf_ids(n, rows, rng, j) for j, n in enumerate(cards)], 1)
        assert sparse.shape[1] == NUM_SPARSE
        writer.write(dense, sparse.astype(np.int32), (rng.random(rows) < 0.25).astype(np.uint8))
        writer.finish()
    write_meta(folder, {"cardinalities": cards, "rows": {s: rows for s in ("train", "val", "test")},
                        "source": "cce_dlrm.bench: Zipf(1) ids, Kaggle vocabularies"})
    return folder


def compose_config(method: str, cap: int, batch: int, dataset_path: Path, *extra: str) -> DictConfig:
    """The training config ``python -m cce_dlrm.train model=dlrm_kaggle ...`` would compose."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=[
            "model=dlrm_kaggle", "dataset=criteo_kaggle", f"dataset.path={dataset_path}",
            f"method={method}", f"trainer.batch_size={batch}", f"max_table_params={cap}", *extra])


def build_ours(cfg: DictConfig, dataset: ProcessedDataset, runtime: Runtime, sharding: str | None = None):
    """The project's DLRM exactly as the trainer builds it: meta tables, DMP, fused SGD, init."""
    model = build_model(cfg, dataset, device="meta")
    dmp, optimizer = shard_model(model, runtime, sharding or cfg.trainer.sharding_type, cfg.trainer.lr)
    method = dmp.module.embedding
    if isinstance(method, TableMethod):
        ShardedTableAccess(dmp, "embedding", method, runtime.device).reset(method)
    return dmp, optimizer, method


def build_torchrec(cfg: DictConfig, dataset: ProcessedDataset, runtime: Runtime):
    """torchrec's own DLRM (``torchrec.models.dlrm.DLRM``), full tables, under DMP with fused SGD
    for the tables and SGD for the MLPs: torchrec's recipe, the reference every ratio uses."""
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.models.dlrm import DLRM
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    lr = cfg.trainer.lr
    tables = [EmbeddingBagConfig(name=f"t_{n}", embedding_dim=cfg.model.embedding_dim, num_embeddings=c,
                                 feature_names=[n]) for n, c in zip(dataset.sparse_names, dataset.cardinalities)]
    torch.manual_seed(0)
    model = DLRM(EmbeddingBagCollection(tables=tables, device=torch.device("meta")),
                 dense_in_features=dataset.meta["num_dense"],
                 dense_arch_layer_sizes=list(cfg.model.bottom_mlp),
                 over_arch_layer_sizes=list(cfg.model.top_mlp))
    apply_optimizer_in_backward(torch.optim.SGD, model.sparse_arch.parameters(), {"lr": lr})
    dmp = DistributedModelParallel(model, device=runtime.device)
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())),
                                  lambda p: torch.optim.SGD(p, lr=lr))
    return dmp, CombinedOptimizer([dmp.fused_optimizer, dense])
