"""Entry point: ``python -m cce_dlrm.preprocess dataset=criteo_kaggle [overrides]``.

Turns the raw Criteo files in ``dataset.preprocess.raw_dir`` into the processed dataset
at ``dataset.path`` (see ``cce_dlrm.data.criteo``). Malformed input and wrong settings are
reported as one line on stderr, with a non-zero exit status.

Examples::

    python -m cce_dlrm.preprocess dataset=criteo_kaggle
    python -m cce_dlrm.preprocess dataset=criteo_kaggle dataset.preprocess.mode=lenient
    python -m cce_dlrm.preprocess dataset=criteo_terabyte dataset.preprocess.days=[0,1,23]
    python -m cce_dlrm.preprocess dataset=criteo_terabyte "++dataset.preprocess.days='0-3,23'"
    python -m cce_dlrm.preprocess dataset=criteo_terabyte_paper  # the paper's Terabyte variant

``make preprocess DATASET=criteo_terabyte DAYS=0-3,23`` passes the last form: quoted, since
Hydra reads an unquoted ``0,23`` on the command line as a sweep over two values.

A file that cannot be written (a full disk, an unwritable folder) ends the run with one line,
e.g. ``error: cannot write data/processed/criteo_kaggle.building: No space left on device``.
The previous dataset stays as it was; the unfinished work stays in ``<path>.building`` and
the same command, once there is room, resumes it (delete that folder to give the room back).
"""

from __future__ import annotations

import errno
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf


def preprocess_arguments(dataset: DictConfig) -> dict:
    """The keyword arguments of ``cce_dlrm.data.criteo.preprocess`` for a dataset config.

    ``days`` is passed (as a parsed list, e.g. ``"0-1,23"`` -> ``[0, 1, 23]``) only when the
    config has it: Terabyte always does (all 24 days by default); for Kaggle it is an error.
    """
    from cce_dlrm.data.criteo.inputs import parse_days

    p = OmegaConf.to_container(dataset.preprocess, resolve=True)
    args = dict(
        kind=p["kind"], raw_dir=p["raw_dir"], out_dir=dataset.path, name=dataset.name,
        file=p.get("file", "train.txt"), mode=p["mode"],
        frequency_threshold=p["frequency_threshold"], max_ind_range=p["max_ind_range"],
        negative_subsampling=p["negative_subsampling"], subsample_seed=p["subsample_seed"],
        chunk_mb=p["chunk_mb"], sync_mb=p["sync_mb"], workers=p.get("workers", 0),
        row_fraction=p.get("row_fraction", 1.0), per_feature_modulus=p.get("per_feature_modulus"),
    )
    if p.get("days") is not None:
        args["days"] = parse_days(p["days"])
    return args


# errors of writing, also when the error names no path (ENOSPC from a write call has none)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def run_folder(out_dir: Path | str) -> Path:
    """Where a run writes: ``<out_dir>.building`` next to the real output folder."""
    from cce_dlrm.data.criteo.pipeline import staging_folder

    out = Path(out_dir)
    return staging_folder(out.resolve() if out.is_symlink() else out)


def os_error_line(err: OSError, out_dir: Path | str, raw_dir: Path | str) -> str:
    """One line for an OSError of a run, e.g. ``error: cannot write
    /data/processed/x.building: No space left on device``.

    A raw file that cannot be read is ``cannot read <file>``; a write error without a path
    is put on the staging folder, where every file of a run is written.
    """
    reason = err.strerror or str(err)
    if err.filename is None:
        if err.errno in _WRITE_ERRNOS:
            return f"error: cannot write {run_folder(out_dir)}: {reason}"
        return f"error: {reason} (preprocessing {raw_dir} into {run_folder(out_dir)})"
    path = Path(err.filename)
    is_raw = path.resolve().is_relative_to(Path(raw_dir).resolve())
    verb = "read" if is_raw and err.errno not in _WRITE_ERRNOS else "write"
    return f"error: cannot {verb} {path}: {reason}"


@hydra.main(version_base="1.3", config_path="../../configs", config_name="preprocess")
def main(cfg: DictConfig) -> None:
    from cce_dlrm.data.criteo import CriteoInputError, PreprocessConfigError, preprocess

    dataset = cfg.dataset
    if dataset.get("preprocess") is None:
        sys.exit(f"configuration error: dataset {dataset.name!r} has no `preprocess` section "
                 "(it is built when training first uses it); nothing to preprocess")
    args = None
    try:
        args = preprocess_arguments(dataset)
        preprocess(**args, progress=bool(cfg.get("progress", True)))
    except CriteoInputError as err:
        sys.exit(f"input error: {err}")
    except (PreprocessConfigError, KeyError) as err:
        sys.exit(f"configuration error: {err}")
    except OSError as err:
        if args is None:
            sys.exit(f"error: {err}")
        stage = run_folder(args["out_dir"])
        if stage.is_dir():
            logging.getLogger(__name__).warning(
                "the unfinished work in %s is kept: run the same command again to resume it, "
                "or delete that folder to free its space", stage)
        sys.exit(os_error_line(err, args["out_dir"], args["raw_dir"]))


if __name__ == "__main__":
    main()
