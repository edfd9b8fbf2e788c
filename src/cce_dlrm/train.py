"""Entry point: ``python -m cce_dlrm.train [overrides]`` (or under ``torchrun``).

Examples::

    python -m cce_dlrm.train method=hashing max_table_params=16000
    python -m cce_dlrm.train -m method=full,hashing max_table_params=4000,16000
    torchrun --standalone --nproc_per_node=2 -m cce_dlrm.train experiment=smoke

The composed config is checked (``cce_dlrm.config_check``) before any data is read; a bad
value, missing data or an unwritable run folder ends with one line and exit code 1
(``cce_dlrm.config_errors``), printed once however many processes run.

Inside a sweep (``-m``) a job that fails or diverges does not stop the others: it prints
one line (``job failed: ...``), its ``metrics.json`` says ``failed`` or ``diverged`` with the
reason (the results tables list it, never average it), and the sweep goes on.
"""

from __future__ import annotations

import math
import os
import sys

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
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    method_key = hydra_cfg.runtime.choices.get("method", "?")
    try:
        validate(cfg)  # before any data is read or model built (and in every job of a sweep)
        progress.set_interval(cfg.logger.progress_interval)
        metrics = run_training(cfg, hydra_cfg.runtime.output_dir, method_key=method_key, multirun=multirun)
    except (*USER_ERRORS, TrainingDiverged) as err:
        if multirun and _is_main() and "TORCHELASTIC_RUN_ID" not in os.environ:
            return _job_failed(cfg, hydra_cfg.runtime.output_dir, method_key, err)
        if isinstance(err, TrainingDiverged):
            exit_diverged(err)  # one line, exit code 3
        exit_with_user_error(err)
    finally:
        shutdown()
    if _is_main():
        print(summary_line(metrics, hydra_cfg.runtime.output_dir))
    # returned for Hydra sweepers (e.g. Optuna) that minimise the validation BCE
    return metrics["best_val_bce"]


def _job_failed(cfg: DictConfig, run_dir: str, method_key: str, err: Exception) -> float:
    """A sweep job's failure: one line, a record the tables can show, and the sweep goes on."""
    from omegaconf import OmegaConf

    from cce_dlrm.config_errors import format_user_error
    from cce_dlrm.training.loop import TrainingDiverged
    from cce_dlrm.training.run_record import record_job_failure

    diverged = isinstance(err, TrainingDiverged)
    line = f"diverged: {err}" if diverged else format_user_error(err)
    print(f"job failed: {line}; {run_dir}", file=sys.stderr, flush=True)
    dataset = OmegaConf.select(cfg, "dataset.name", throw_on_resolution_failure=False)
    record_job_failure(f"{run_dir}/metrics.json", "diverged" if diverged else "failed", line,
                       method=method_key, dataset=dataset,
                       max_table_params=OmegaConf.select(cfg, "max_table_params", throw_on_resolution_failure=False),
                       seed=OmegaConf.select(cfg, "seed", throw_on_resolution_failure=False))
    return math.nan


if __name__ == "__main__":
    main()
