"""The errors a user can cause by configuration, missing data or an unwritable run folder.

Each is printed as one line, without a traceback, exactly once however many processes run:

* one process: ``configuration error: trainer.batch_size must be a positive integer, got 0``
  on stderr, exit code 1;
* under ``torchrun``: every rank finds the same error, but only rank 0 reports it, through
  torchelastic's error file (``TORCHELASTIC_ERROR_FILE``), so the launcher's closing summary
  shows the line as the root cause (``traceback : configuration error: ...``) instead of a
  link; the other ranks exit 1 silently, after a short grace period so that rank 0 is the
  failure the launcher observes first. (The launcher still prints its own
  ``ChildFailedError`` traceback above that summary: it is torchrun's, not ours.)
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import NoReturn

from cce_dlrm.data.processed import DatasetError
from cce_dlrm.embeddings.base import ConfigError
from cce_dlrm.training.run_record import RunFolderError

USER_ERRORS = (ConfigError, DatasetError, RunFolderError)

# Seconds a non-zero rank waits before exiting, so that the launcher sees rank 0's failure
# first: it stops the other workers as soon as it sees one fail, so this costs nothing when
# rank 0 exits, and rank 0 may take seconds to exit (interpreter teardown with torch loaded).
NON_MAIN_GRACE_SECONDS = 15.0


def format_user_error(err: Exception) -> str:
    if isinstance(err, ConfigError):
        kind = "configuration error"
    elif isinstance(err, RunFolderError):
        kind = "run folder error"
    else:
        kind = "data error"
    return f"{kind}: {err}"


def _write_elastic_error_file(path: str, message: str) -> bool:
    """Writes torchelastic's error-file JSON so the launcher reports ``message`` as the root cause."""
    record = {"message": {"message": message, "extraInfo": {"timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w") as f:
            json.dump(record, f)
        return True
    except OSError:
        return False


def exit_with_user_error(err: Exception) -> NoReturn:
    """Reports ``err`` as one line (once, on rank 0) and exits with code 1."""
    message = format_user_error(err)
    if os.environ.get("RANK", "0") != "0":
        if "TORCHELASTIC_RUN_ID" in os.environ:
            time.sleep(NON_MAIN_GRACE_SECONDS)
        sys.exit(1)
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file and _write_elastic_error_file(error_file, message):
        sys.exit(1)  # torchrun prints it in its summary: printing here too would show it twice
    sys.exit(message)
