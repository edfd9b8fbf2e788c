"""A Hydra callback that checks the run folder can be written before Hydra writes into it.

Hydra creates the run folder, saves ``.hydra/`` and opens ``train.log`` before the task
function runs, so an unwritable folder (read-only, a file in its path, a full disk) used to
end in a Hydra traceback. This check runs first (``on_run_start``, ``on_multirun_start``) and
turns it into one line::

    run folder error: cannot write to runs/synthetic/full/... (Permission denied): ...
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cce_dlrm.training.run_record import RunFolderError, describe_os_error


def check_writable(folder: Path | str, setting: str) -> None:
    """Creates ``folder`` if needed and writes (and removes) a probe file in it.

    Raises RunFolderError naming the folder, the system's reason and ``setting`` (the
    override that picks another folder).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise RunFolderError(f"cannot write to {folder} ({describe_os_error(err)}): make it writable, "
                             f"or choose another folder with {setting}=... (or paths.runs_dir=...)") from None


def _check(config: DictConfig, key: str) -> None:
    from cce_dlrm.config_errors import exit_with_user_error

    HydraConfig.instance().set_config(config)  # `${hydra:...}` in the folder name needs it
    try:
        check_writable(str(OmegaConf.select(config, key)), key)
    except RunFolderError as err:
        exit_with_user_error(err)


class CheckRunFolder(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check(config, "hydra.run.dir")
        from cce_dlrm.config_errors import exit_with_user_error
        from cce_dlrm.training.run_folder import RunFolderTaken, refuse_completed

        try:  # a completed run's folder: refused before Hydra rewrites its .hydra/
            refuse_completed(str(OmegaConf.select(config, "hydra.run.dir")))
        except RunFolderTaken as err:
            exit_with_user_error(err)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check(config, "hydra.sweep.dir")
