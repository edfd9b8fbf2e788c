"""Progress for training and evaluation: a tqdm bar on a terminal, log lines otherwise.

A tqdm bar written to a file or a pipe (a cluster job's log, ``| tee``) becomes thousands
of carriage-return updates on one "line". When stderr is not a terminal, progress is instead
one log line (logger ``cce_dlrm.progress``, so it lands in Hydra's ``train.log`` too) every
``interval`` seconds::

    train: step 1,200/66,000 (1.8%), epoch 1/10, loss=0.4512, 5,300 samples/s, ETA 0:12:03

Both kinds have the interface the loop uses: ``update(n)``, ``set_postfix(**values)``, ``close()``.

Example::

    bar = progress_bar(total=steps, desc="train", enabled=True, batch_size=128, per_epoch=len(loader))
    for _ in range(steps):
        bar.update(1)
    bar.close()
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from typing import Callable

log = logging.getLogger("cce_dlrm.progress")

DEFAULT_INTERVAL = 30.0
_interval = DEFAULT_INTERVAL


def set_interval(seconds: float) -> None:
    """Seconds between log lines (``logger.progress_interval``); the entry point sets it once."""
    global _interval
    _interval = float(seconds)


class LogProgress:
    """Progress as a log line every ``interval`` seconds (and none for a task shorter than that)."""

    def __init__(self, total: int, desc: str, interval: float, batch_size: int = 0, per_epoch: int = 0,
                 initial: int = 0, clock: Callable[[], float] = time.monotonic,
                 emit: Callable[[str], None] = log.info):
        self.total, self.desc, self.interval = total, desc, interval
        self.batch_size, self.per_epoch = batch_size, per_epoch
        self.clock, self.emit = clock, emit
        self.n = self.initial = initial  # a resumed run starts counting at its step
        self.postfix: dict[str, object] = {}
        self.started = self.last = clock()

    def set_postfix(self, **values: object) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.emit(self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        done = self.n - self.initial  # in this process: the speed and ETA come from these
        parts = [f"{self.desc}: step {self.n:,}/{self.total:,} ({100 * self.n / max(self.total, 1):.1f}%)"]
        if self.per_epoch:
            epochs = -(-self.total // self.per_epoch)
            parts.append(f"epoch {min(self.n // self.per_epoch + 1, epochs)}/{epochs}")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        if self.batch_size:
            parts.append(f"{done * self.batch_size / elapsed:,.0f} samples/s")
        remaining = (self.total - self.n) * elapsed / max(done, 1)
        parts.append(f"ETA {datetime.timedelta(seconds=round(remaining))}")
        return ", ".join(parts)

    def close(self) -> None:
        pass  # the loop logs its own results; a closing line would repeat the last one


class NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values: object) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool, batch_size: int = 0, per_epoch: int = 0,
                 initial: int = 0, interval: float | None = None, stream=None):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a :class:`LogProgress`.

    ``batch_size`` (samples per update) and ``per_epoch`` (updates per epoch) add samples/s and
    the epoch to the log lines; ``initial``: the count already done (a resumed run's step).
    """
    if not enabled:
        return NoProgress()
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=desc == "train", file=stream)
    return LogProgress(total, desc, _interval if interval is None else interval, batch_size, per_epoch, initial)
