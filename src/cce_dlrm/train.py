"""Entry point: ``python -m cce_dlrm.train [overrides]`` (or under ``torchrun``).

Examples::

    python -m cce_dlrm.train method=hashing max_table_params=16000
    python -m cce_dlrm.train -m method=full,hashing max_table_params=4000,16000
    torchrun --standalone --nproc_per_node=2 -m cce_dlrm.train experiment=smoke

The composed config is checked (``cce_dlrm.config_check``) before any data is read; a bad
value, missing data or an unwritable run folder ends with one line and exit code 1
(``cce_dlrm.config_errors``), printed once however many processes run.
"""

from __future__ import annotations

import math
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cce_dlrm import run_stamp
from cce_dlrm.config_errors import USER_ERRORS, exit_with_user_error

run_stamp.register()


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _auc_text(metrics: dict, split: str, value: float | None) -> str:
    reason = metrics.get(f"{split}_auc_undefined")
    if reason or value is None or not math.isfinite(value):
        return f"AUC undefined ({reason or 'not computed'})"
    return f"AUC {value:.4f}"


def summary_line(metrics: dict, run_dir: str) -> str:
    """The one line printed at the end of a run, e.g.
    ``best val BCE 0.45012 (AUC 0.7831) at step 200, test BCE 0.45120 (AUC 0.7810); runs/.../metrics.json``."""
    def bce(value):
        return "n/a" if value is None or not math.isfinite(value) else f"{value:.5f}"

    return (f"best val BCE {bce(metrics.get('best_val_bce'))} ({_auc_text(metrics, 'val', metrics.get('best_val_auc'))}) "
            f"at step {metrics.get('best_step')}, test BCE {bce(metrics.get('test_bce'))} "
            f"({_auc_text(metrics, 'test', metrics.get('test_auc'))}); {run_dir}/metrics.json")


@hydra.main(version_base="1.3", config_path="../../configs", config_name="config")
def main(cfg: DictConfig) -> float:
    from cce_dlrm.config_check import validate
    from cce_dlrm.training import progress
    from cce_dlrm.training.distributed import shutdown
    from cce_dlrm.training.loop import TrainingDiverged, exit_diverged
    from cce_dlrm.training.run import run_training

    hydra_cfg = HydraConfig.get()
    try:
        validate(cfg)  # before any data is read or model built (and in every job of a sweep)
        progress.set_interval(cfg.logger.progress_interval)
        metrics = run_training(cfg, hydra_cfg.runtime.output_dir,
                               method_key=hydra_cfg.runtime.choices.get("method", "?"),
                               multirun=hydra_cfg.mode == RunMode.MULTIRUN)
    except USER_ERRORS as err:
        exit_with_user_error(err)
    except TrainingDiverged as err:
        exit_diverged(err)  # one line, exit code 3
    finally:
        shutdown()
    if _is_main():
        print(summary_line(metrics, hydra_cfg.runtime.output_dir))
    # returned for Hydra sweepers (e.g. Optuna) that minimise the validation BCE
    return metrics["best_val_bce"]


if __name__ == "__main__":
    main()
