"""``${run_stamp:}``: the unique stamp in run folder names, the same on every rank.

Example: ``2026-12-02_13-47-33.512345_4821`` (local time to the microsecond, then a process
id). Two runs started in the same second get different folders: their start times differ
below the second, and two processes alive at once never share a pid.

Hydra's ``${now:...}`` is evaluated by each process; under ``torchrun`` the ranks start a
fraction of a second apart and could name different folders. Workers started by torchrun
share one parent (the elastic agent), so its start time and pid name the run on every rank.
Without torchrun, the process's own clock and pid name it.
"""

from __future__ import annotations

import os
import time

from omegaconf import OmegaConf

FORMAT = "%Y-%m-%d_%H-%M-%S"


def _parent_start_time() -> float | None:
    """Start time (epoch seconds, to the clock tick, usually 1/100 s) of this process's parent (Linux)."""
    try:
        with open(f"/proc/{os.getppid()}/stat") as f:
            # field 22 (starttime, clock ticks since boot) comes after the ')' of the name
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def format_stamp(started: float, pid: int) -> str:
    """``started`` (epoch seconds) and ``pid`` as ``YYYY-mm-dd_HH-MM-SS.micros_pid``."""
    seconds = int(started)
    micros = min(int(round((started - seconds) * 1e6)), 999_999)
    return f"{time.strftime(FORMAT, time.localtime(seconds))}.{micros:06d}_{pid}"


def run_stamp() -> str:
    if "TORCHELASTIC_RUN_ID" in os.environ:
        started = _parent_start_time()
        if started is not None:
            return format_stamp(started, os.getppid())
    return format_stamp(time.time(), os.getpid())


def register() -> None:
    if not OmegaConf.has_resolver("run_stamp"):
        # cached: every field of one run that uses it gets the same stamp
        OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True)
