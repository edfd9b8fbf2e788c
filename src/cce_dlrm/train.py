"""Entry point: ``python -m cce_dlrm.train [overrides]`` (or under ``torchrun``).

Examples::

    python -m cce_dlrm.train method=hashing max_table_params=16000
    python -m cce_dlrm.train -m method=full,hashing max_table_params=4000,16000
    torchrun --standalone --nproc_per_node=2 -m cce_dlrm.train experiment=smoke
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cce_dlrm import run_stamp
from cce_dlrm.config_errors import USER_ERRORS, format_user_error

run_stamp.register()


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


@hydra.main(version_base="1.3", config_path="../../configs", config_name="config")
def main(cfg: DictConfig) -> float:
    from cce_dlrm.training.distributed import shutdown
    from cce_dlrm.training.run import run_training

    hydra_cfg = HydraConfig.get()
    try:
        metrics = run_training(cfg, hydra_cfg.runtime.output_dir,
                               method_key=hydra_cfg.runtime.choices.get("method", "?"))
    except USER_ERRORS as err:
        sys.exit(format_user_error(err))
    finally:
        shutdown()
    if _is_main():
        print(f"best val BCE {metrics['best_val_bce']:.5f} (AUC {metrics['best_val_auc']:.4f}) at step "
              f"{metrics['best_step']}, test BCE {metrics['test_bce']:.5f}; "
              f"{hydra_cfg.runtime.output_dir}/metrics.json")
    # returned for Hydra sweepers (e.g. Optuna) that minimise the validation BCE
    return metrics["best_val_bce"]


if __name__ == "__main__":
    main()
