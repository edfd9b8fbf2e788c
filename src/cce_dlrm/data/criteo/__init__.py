"""The Criteo Kaggle and Terabyte pipeline: raw TSV (plain or gzip) -> processed format.

Modules, in the order data flows through them: ``source`` (chunks of whole lines),
``parse`` and ``binary`` (validated columns), ``layout`` and ``sampling`` (splits, negative
subsampling), ``features`` (dense transform, factorisation), ``vocab`` (dictionaries),
``cache`` (work folder), ``pass1`` / ``pass2`` / ``outputs`` / ``workers`` (the two passes,
in worker processes), ``pipeline`` (stages, resume, meta.json) and ``api`` (``preprocess``).
``schema``, ``errors`` and ``inputs`` hold the column names, the error type and the
settings.
"""

from __future__ import annotations

import importlib

# Imported on first use, so that importing one module (say ``binary``) does not pull in
# pandas, tqdm and the rest of the pipeline.
_EXPORTS = {
    "preprocess": "cce_dlrm.data.criteo.api",
    "CriteoInputError": "cce_dlrm.data.criteo.errors",
    "PreprocessConfigError": "cce_dlrm.data.criteo.inputs",
    "PreprocessSettings": "cce_dlrm.data.criteo.inputs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
