"""The errors a user can cause by configuration or missing data, printed as one line."""

from __future__ import annotations

from cce_dlrm.data.processed import DatasetError
from cce_dlrm.embeddings.base import ConfigError

USER_ERRORS = (ConfigError, DatasetError)


def format_user_error(err: Exception) -> str:
    kind = "configuration error" if isinstance(err, ConfigError) else "data error"
    return f"{kind}: {err}"
