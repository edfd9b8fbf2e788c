"""Worker processes for the passes' per-chunk work, with results taken in chunk order.

Threads cannot share this work: pandas' factorisation and the many small NumPy steps
hold the GIL, and two threads measured no faster than one. Worker processes are forked
(on Linux), so they start at once and read the parent's memory (pass 2's dictionaries)
without copying it. With one worker, or without ``fork``, the work runs in-process.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


_PR_SET_PDEATHSIG = 1


def _exit_with_parent(parent: int) -> None:
    """Worker initialiser: die with the parent, even if it is killed with SIGKILL (a worker
    blocked on its task queue would otherwise wait forever, holding memory)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's normal shutdown still applies
        pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def worker_count(setting: int) -> int:
    """``setting`` if positive, else one worker per CPU."""
    return setting if setting > 0 else (os.cpu_count() or 1)


class Workers:
    """A pool of forked worker processes (context manager)."""

    def __init__(self, n: int):
        self.n = max(1, n)
        self.pool = None
        if self.n > 1 and "fork" in mp.get_all_start_methods():
            self.pool = ProcessPoolExecutor(self.n, mp_context=mp.get_context("fork"),
                                            initializer=_exit_with_parent,
                                            initargs=(os.getpid(),))

    @property
    def in_process(self) -> bool:
        return self.pool is None

    def map_ordered(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        """``fn(task)`` for each task, in order, with at most two tasks per worker in flight
        (so memory stays bounded however many tasks there are). A worker's exception is
        raised here, when its task's turn comes."""
        if self.pool is None:
            for task in tasks:
                yield fn(task)
            return
        tasks = iter(tasks)
        in_flight = deque()
        for task in tasks:
            in_flight.append(self.pool.submit(fn, task))
            if len(in_flight) >= 2 * self.n:
                break
        while in_flight:
            result = in_flight.popleft().result()
            for task in tasks:  # keep the workers busy before handing out the result
                in_flight.append(self.pool.submit(fn, task))
                break
            yield result

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
