"""Every run's ``metrics.json`` under a folder, as one row per run (the only input of the results).

Keys read (see ``cce_dlrm.training.run``): method, dataset, max_table_params, seed, status,
error, best_val_bce, test_bce, test_auc, learned_params, learned_params_largest_table,
learned_params_per_feature, aux_bytes, embedding_dim, history, and where present events
(CCE's clustering rounds), baseline_bce_val / baseline_bce_test and config.trainer.epochs.
Missing keys read as None. A file that is not valid JSON becomes a row with status
``unreadable`` and the parse error as its reason, so one bad file loses nothing else.

A sweep run twice can leave several files for one (dataset, epochs, method, cap, seed):
a completed one wins over any other (the newest completed, by file time); otherwise the
newest file is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

KEY = ["dataset", "epochs", "method", "max_table_params", "seed"]
SCALARS = [
    "method", "dataset", "max_table_params", "seed", "status", "error", "best_val_bce", "best_val_auc",
    "test_bce", "test_auc", "best_step", "steps", "learned_params", "learned_params_largest_table",
    "aux_bytes", "embedding_dim", "baseline_bce_val", "baseline_bce_test",
]
OBJECTS = ["learned_params_per_feature", "history", "events"]
COLUMNS = SCALARS + ["epochs", *OBJECTS, "run_dir", "mtime"]


def _row(path: Path) -> dict:
    row = {c: None for c in COLUMNS}
    row.update(run_dir=str(path.parent), mtime=path.stat().st_mtime)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as err:
        row.update(status="unreadable", error=f"{path}: {err}".splitlines()[0])
        return row
    for key in SCALARS + OBJECTS:
        row[key] = data.get(key)
    trainer = (data.get("config") or {}).get("trainer") or {}
    row["epochs"] = trainer.get("epochs") if isinstance(trainer, dict) else None
    if row["embedding_dim"] is None:
        model = (data.get("config") or {}).get("model") or {}
        row["embedding_dim"] = model.get("embedding_dim") if isinstance(model, dict) else None
    row["status"] = row["status"] or "unknown"
    return row


def load_runs(root: Path | str) -> pd.DataFrame:
    """One row per run (duplicates resolved as the module says), in a stable order."""
    rows = [_row(p) for p in sorted(Path(root).rglob("metrics.json"))]
    runs = pd.DataFrame(rows, columns=COLUMNS).astype(object)
    if runs.empty:
        return runs
    runs["_completed"] = runs.status == "completed"
    runs = runs.sort_values(["_completed", "mtime"], kind="stable")
    # unreadable files have no key: keep each of them
    keyed = runs[runs.status != "unreadable"]
    key = pd.Series(["|".join(map(str, k)) for k in keyed[KEY].itertuples(index=False)], index=keyed.index)
    keyed = keyed[~key.duplicated(keep="last")]
    runs = pd.concat([keyed, runs[runs.status == "unreadable"]]).drop(columns="_completed")
    return runs.sort_values("run_dir", kind="stable").reset_index(drop=True)


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that finished and have a test BCE: the only ones averaged anywhere."""
    if runs.empty:
        return runs
    return runs[(runs.status == "completed") & runs.test_bce.notna()]
