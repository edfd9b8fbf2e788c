"""Training samples/s of every method at a budget, as a ratio to ``full``.

    python benchmarks/bench_methods.py --budgets 16000 160000 [--methods full,hashing,cce]

``model=dlrm_kaggle``, batch 2048, 1 process, the embedded synthetic data; each method
exactly as ``python -m cce_dlrm.train`` builds it (DMP, fused SGD for tables). Methods
take turns on the same batches, round after round; the median round counts. Step time
only: CCE's clustering rounds are timed by ``bench_clustering.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_train import interleaved, sgd_step  # noqa: E402
from cce_dlrm.data.loader import SplitLoader  # noqa: E402
from cce_dlrm.embeddings.base import TableMethod  # noqa: E402
from cce_dlrm.training.distributed import init_runtime, shard_model  # noqa: E402
from cce_dlrm.training.run import build_model, open_dataset  # noqa: E402
from cce_dlrm.training.table_access import ShardedTableAccess  # noqa: E402


def main() -> None:
    methods_dir = ROOT / "configs" / "method"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[16000, 160000])
    parser.add_argument("--methods", default=",".join(sorted(p.stem for p in methods_dir.glob("*.yaml"))))
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    methods = args.methods.split(",")
    if "full" not in methods:
        methods.insert(0, "full")
    runtime = init_runtime("auto")
    tables = []
    for budget in args.budgets:
        steps, dataset = {}, None
        for key in methods:
            with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
                cfg = compose("config", overrides=["model=dlrm_kaggle", f"method={key}",
                                                   f"trainer.batch_size={args.batch}", f"max_table_params={budget}"])
            dataset = open_dataset(cfg.dataset, runtime)
            model, optimizer = shard_model(build_model(cfg, dataset, device="meta"), runtime,
                                           cfg.trainer.sharding_type, cfg.trainer.lr)
            method = model.module.embedding
            if isinstance(method, TableMethod):
                ShardedTableAccess(model, "embedding", method, runtime.device).reset(method)
            steps[key] = sgd_step(model, optimizer, lambda m, b: m(b.dense, b.sparse))
        it = SplitLoader(dataset.split("train"), dataset.sparse_names, args.batch, shuffle=True).epoch(0)
        batches = [next(it).to(runtime.device) for _ in range(args.warmup + args.steps)]
        table = interleaved(steps, batches, args.warmup, args.rounds).rename(columns={"contender": "method"})
        table["vs_full"] = table.samples_per_s / table.samples_per_s[table.method == "full"].item()
        table.insert(0, "max_table_params", budget)
        tables.append(table)
    print(f"batch {args.batch}, median of {args.rounds} interleaved rounds of {args.steps} steps, "
          f"threads {torch.get_num_threads()}, device {runtime.device}")
    print(pd.concat(tables).to_string(index=False, float_format=lambda x: f"{x:,.2f}"))


if __name__ == "__main__":
    main()
