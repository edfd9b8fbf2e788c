"""Shared fixtures: the real configs composed and shrunk, a smoke dataset built once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def compose_config(overrides: list[str]):
    """The real training config with ``overrides`` (as on the command line)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=overrides)


def method_keys() -> list[str]:
    """Every method offered, found from the config folder (a new method is tested by existing)."""
    return sorted(p.stem for p in (CONFIGS / "method").glob("*.yaml"))


def run_cli(args: list[str], cwd: Path, nproc: int = 1, timeout: int = 600, env_extra: dict | None = None):
    """Runs the training entry point as a user would; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    if nproc == 1:
        cmd = [sys.executable, "-m", "cce_dlrm.train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "cce_dlrm.train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data folder with the smoke dataset generated once for the whole session."""
    from cce_dlrm.data.synthetic import build

    folder = tmp_path_factory.mktemp("data")
    cfg = compose_config(["experiment=smoke", f"paths.data_dir={folder}"])
    build_args = {k: v for k, v in cfg.dataset.build.items() if not k.startswith("_")}
    build(cfg.dataset.path, progress=False, **build_args)
    return folder
