"""Training throughput: this project's DLRM step against torchrec's plain DLRM.

    python benchmarks/bench_train.py [--batch 2048] [--steps 40] [--method full]

Same data (the embedded synthetic dataset, built on first use), same tables
(``model=dlrm_kaggle``: d=16, bottom 13-512-256-64-16, top 512-256-1), same batches, one
process. Three contenders, each timed over the same pre-loaded batches (so data loading
is excluded) after a warm-up:

* ``ours``: ``cce_dlrm`` model under DistributedModelParallel (fused fbgemm SGD for the
  tables, SGD for the MLPs): exactly what ``python -m cce_dlrm.train`` runs;
* ``torchrec plain``: ``torchrec.models.dlrm.DLRM`` over an unsharded
  ``EmbeddingBagCollection``, ``torch.optim.SGD`` on every parameter;
* ``torchrec DMP``: the same torchrec DLRM under DistributedModelParallel with fused SGD
  (torchrec's own recipe).

Contenders take turns, round after round, and the median round counts (robust to load
from elsewhere). Prints samples/s of each and the ratio to ``ours``. Also times ``ours``
with its loader (memory-mapped reads included).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.models.dlrm import DLRM as TorchrecDLRM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cce_dlrm.data.loader import SplitLoader  # noqa: E402
from cce_dlrm.training.distributed import init_runtime, shard_model  # noqa: E402
from cce_dlrm.training.run import build_model, open_dataset  # noqa: E402
from cce_dlrm.training.table_access import ShardedTableAccess  # noqa: E402


def interleaved(steps: dict, batches, warmup: int, rounds: int) -> pd.DataFrame:
    """Times every contender on the same batches, round after round, in turn.

    Interleaving spreads any load from elsewhere on the machine over all contenders; the
    median round is reported.
    """
    for step in steps.values():
        for b in batches[:warmup]:
            step(b)
    seconds = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            tic = time.perf_counter()
            for b in batches[warmup:]:
                step(b)
            seconds[name].append(time.perf_counter() - tic)
    rows = len(batches[warmup:]) * batches[0].labels.shape[0]
    return pd.DataFrame([{"contender": n, "median_s": pd.Series(s).median(),
                          "samples_per_s": rows / pd.Series(s).median(),
                          "best_samples_per_s": rows / min(s)} for n, s in seconds.items()])


def sgd_step(model, optimizer, forward):
    def step(batch):
        loss = F.binary_cross_entropy_with_logits(forward(model, batch), batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--method", default="full")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["model=dlrm_kaggle", f"method={args.method}",
                                           f"trainer.batch_size={args.batch}", *args.overrides])
    runtime = init_runtime("cpu" if not torch.cuda.is_available() else "auto")
    dataset = open_dataset(cfg.dataset, runtime)
    loader = SplitLoader(dataset.split("train"), dataset.sparse_names, args.batch, shuffle=True, seed=0)
    it = loader.epoch(0)
    batches = [next(it).to(runtime.device) for _ in range(args.warmup + args.steps)]
    lr = cfg.trainer.lr
    steps = {}

    model = build_model(cfg, dataset, device="meta")
    ours, opt = shard_model(model, runtime, cfg.trainer.sharding_type, lr)
    ShardedTableAccess(ours, "embedding", ours.module.embedding, runtime.device).reset(ours.module.embedding)
    steps["ours"] = sgd_step(ours, opt, lambda m, b: m(b.dense, b.sparse))
    fresh = loader.epoch(1)

    def with_loader(_):
        steps["ours"](next(fresh).to(runtime.device))  # reads the next batch from the memory map
    steps["ours + loader"] = with_loader

    def torchrec_dlrm(device):
        tables = [EmbeddingBagConfig(name=f"t_{n}", embedding_dim=cfg.model.embedding_dim, num_embeddings=c,
                                     feature_names=[n]) for n, c in zip(dataset.sparse_names, dataset.cardinalities)]
        torch.manual_seed(0)
        return TorchrecDLRM(EmbeddingBagCollection(tables=tables, device=device), dense_in_features=13,
                            dense_arch_layer_sizes=list(cfg.model.bottom_mlp),
                            over_arch_layer_sizes=list(cfg.model.top_mlp))

    def tr_forward(m, b):
        return m(b.dense, b.sparse).squeeze(-1)

    plain = torchrec_dlrm(runtime.device)
    steps["torchrec plain"] = sgd_step(plain, torch.optim.SGD(plain.parameters(), lr=lr), tr_forward)

    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    tr = torchrec_dlrm(torch.device("meta"))
    apply_optimizer_in_backward(torch.optim.SGD, tr.sparse_arch.parameters(), {"lr": lr})
    tr_dmp = DistributedModelParallel(tr, device=runtime.device)
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(tr_dmp.named_parameters())),
                                  lambda p: torch.optim.SGD(p, lr=lr))
    steps["torchrec DMP"] = sgd_step(tr_dmp, CombinedOptimizer([tr_dmp.fused_optimizer, dense]), tr_forward)

    table = interleaved(steps, batches, args.warmup, args.rounds)
    table["vs_ours"] = table.samples_per_s / table.samples_per_s[table.contender == "ours"].item()
    print(f"batch {args.batch}, {args.rounds} rounds of {args.steps} steps (median round), method={args.method}, threads={torch.get_num_threads()}, "
          f"tables {dataset.cardinalities[:3]}... (sum {sum(dataset.cardinalities):,} rows)")
    print(table.to_string(index=False, float_format=lambda x: f"{x:,.3f}"))


if __name__ == "__main__":
    main()
