"""``metrics.json``: one file per run, rewritten atomically as the run goes.

A killed run leaves its last complete record (status ``running`` and the best validation
so far); the results tables are built from these files, never from logs.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(_clean(self.data), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)
