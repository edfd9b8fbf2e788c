"""``metrics.json``: one file per run, rewritten atomically as the run goes.

A killed run leaves its last complete record (status ``running`` and the best validation
so far); the results tables are built from these files, never from logs.

Fields worth a note (the rest are named for what they hold):

* ``status``: ``running``, ``completed`` or ``failed`` (with ``error``); only completed runs
  enter the results tables.
* ``baseline_bce_val`` / ``baseline_bce_test``: the BCE of always predicting the split's own
  click rate (the entropy of that rate), the number a model must beat on that split;
  ``baseline_bce`` is the validation one (``baseline_bce_val``), the split the model's BCE
  is chosen on. ``null`` for an empty split.
* ``val_auc_undefined`` / ``test_auc_undefined``: ``null`` when AUC is defined, otherwise the
  reason (e.g. "split has no positive rows"); the AUC fields of that split are then ``null``,
  never 0.
* Non-finite numbers (NaN, inf) are written as ``null``.

Writing goes to ``metrics.json.tmp`` and is renamed over ``metrics.json``: a crash or a full
disk mid-write leaves the previous complete file. A failed write removes the temporary file
and raises :class:`RunFolderError` (printed as one line by the entry point).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class RunFolderError(OSError):
    """The run folder cannot be written (disk full, read-only, not a folder)."""


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _write_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` and flushes it to disk (a full disk fails here, not later)."""
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def describe_os_error(err: OSError) -> str:
    """'No space left on device' rather than '[Errno 28] No space left on device: ...'."""
    return err.strerror or str(err)


class RunRecord:
    def __init__(self, path: Path | str, enabled: bool = True, **initial: Any):
        self.path = Path(path)
        self.enabled = enabled
        self.data: dict[str, Any] = dict(initial)
        self.save()

    def update(self, **values: Any) -> None:
        self.data.update(values)
        self.save()

    def save(self) -> None:
        if not self.enabled:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        text = json.dumps(_clean(self.data), indent=2, sort_keys=True) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_text(tmp, text)
            os.replace(tmp, self.path)
        except OSError as err:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # the folder itself is unusable; there is nothing to clean up
            kept = "the previous one is kept" if self.path.is_file() else "none was written"
            raise RunFolderError(
                f"cannot write {self.path} ({describe_os_error(err)}); {kept}. "
                "Free space or make the folder writable, or choose another with hydra.run.dir=..."
            ) from None


def record_job_failure(path: Path | str, status: str, error: str, **identity: Any) -> bool:
    """Leaves a ``metrics.json`` for a sweep job that failed before its run wrote one.

    A job refused before training (a missing baseline, a bad value for this grid point)
    has no record yet; without one, the results tables could not show it as failed. An
    existing record is never touched (the run wrote its own status, or the folder belongs
    to another live run). Returns whether it wrote.
    """
    path = Path(path)
    if path.exists():
        return False
    RunRecord(path, status=status, error=error, **identity)
    return True
