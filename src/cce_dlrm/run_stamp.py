"""``${run_stamp:}``: the time stamp in run folder names, the same on every rank.

Hydra's ``${now:...}`` is evaluated by each process; under ``torchrun`` the ranks start a
fraction of a second apart and could name different folders. Workers started by torchrun
share one parent (the elastic agent), so its start time names the run on every rank.
"""

from __future__ import annotations

import os
import time

from omegaconf import OmegaConf

FORMAT = "%Y-%m-%d_%H-%M-%S"


def _parent_start_time() -> float | None:
    """Start time (epoch seconds) of this process's parent, from /proc (Linux)."""
    try:
        with open(f"/proc/{os.getppid()}/stat") as f:
            # field 22 (starttime, clock ticks since boot) comes after the ')' of the name
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def run_stamp() -> str:
    started = _parent_start_time() if "TORCHELASTIC_RUN_ID" in os.environ else None
    return time.strftime(FORMAT, time.localtime(started if started is not None else time.time()))


def register() -> None:
    if not OmegaConf.has_resolver("run_stamp"):
        # cached: every field of one run that uses it gets the same stamp
        OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True)
