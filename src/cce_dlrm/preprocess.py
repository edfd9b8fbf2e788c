"""Entry point: ``python -m cce_dlrm.preprocess dataset=criteo_kaggle [overrides]``.

Turns the raw Criteo files in ``dataset.preprocess.raw_dir`` into the processed dataset
at ``dataset.path`` (see ``cce_dlrm.data.criteo``). Malformed input and wrong settings are
reported as one line on stderr, with a non-zero exit status.

Examples::

    python -m cce_dlrm.preprocess dataset=criteo_kaggle
    python -m cce_dlrm.preprocess dataset=criteo_kaggle dataset.preprocess.mode=lenient
    python -m cce_dlrm.preprocess dataset=criteo_terabyte dataset.preprocess.days=[0,1,23]
    python -m cce_dlrm.preprocess dataset=criteo_terabyte "++dataset.preprocess.days='0-3,23'"

``make preprocess DATASET=criteo_terabyte DAYS=0-3,23`` passes the last form: quoted, since
Hydra reads an unquoted ``0,23`` on the command line as a sweep over two values.
"""

from __future__ import annotations

import sys

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
    )
    if p.get("days") is not None:
        args["days"] = parse_days(p["days"])
    return args


@hydra.main(version_base="1.3", config_path="../../configs", config_name="preprocess")
def main(cfg: DictConfig) -> None:
    from cce_dlrm.data.criteo import CriteoInputError, PreprocessConfigError, preprocess

    dataset = cfg.dataset
    if dataset.get("preprocess") is None:
        sys.exit(f"configuration error: dataset {dataset.name!r} has no `preprocess` section "
                 "(it is built when training first uses it); nothing to preprocess")
    try:
        preprocess(**preprocess_arguments(dataset), progress=bool(cfg.get("progress", True)))
    except CriteoInputError as err:
        sys.exit(f"input error: {err}")
    except (PreprocessConfigError, KeyError) as err:
        sys.exit(f"configuration error: {err}")


if __name__ == "__main__":
    main()
