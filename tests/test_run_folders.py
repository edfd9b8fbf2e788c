"""Run folders: unique names for runs started at once, one line for an unwritable folder."""

import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, read_metrics, run_cli
from cce_dlrm.run_folder_check import check_writable
from cce_dlrm.run_stamp import format_stamp
from cce_dlrm.training.run_record import RunFolderError

STAMP = "from cce_dlrm.run_stamp import run_stamp; print(run_stamp())"


def test_stamp_format():
    started = time.mktime((2026, 12, 2, 13, 47, 33, 0, 0, -1)) + 0.5123456
    assert format_stamp(started, 4821) == "2026-12-02_13-47-33.512346_4821"


def test_two_processes_started_at_once_get_different_stamps():
    env = {k: v for k, v in os.environ.items() if k != "TORCHELASTIC_RUN_ID"}
    procs = [subprocess.Popen([sys.executable, "-c", STAMP], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    stamps = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert stamps[0] != stamps[1]
    assert [s.rsplit("_", 1)[1] for s in stamps] == [str(p.pid) for p in procs]


def test_torchrun_ranks_share_one_stamp():
    # two workers of one agent (torchrun sets TORCHELASTIC_RUN_ID): the agent's start time and pid
    agent = ("import os, subprocess, sys\n"
             f"cmd = [sys.executable, '-c', {STAMP!r}]\n"
             "env = {**os.environ, 'TORCHELASTIC_RUN_ID': 'test'}\n"
             "procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]\n"
             "print(os.getpid(), *[p.communicate()[0].strip() for p in procs])\n")
    out = subprocess.run([sys.executable, "-c", agent], capture_output=True, text=True, timeout=60).stdout.split()
    pid, rank0, rank1 = out
    assert rank0 == rank1 and rank0.endswith(f"_{pid}")


def test_check_writable_names_the_folder_and_the_reason(tmp_path, monkeypatch):
    check_writable(tmp_path / "new" / "run", "hydra.run.dir")
    assert (tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match=r"cannot write to .*file/run \(Not a directory\): make it "
                                             r"writable, or choose another folder with hydra.run.dir=\.\.\."):
        check_writable(tmp_path / "file" / "run", "hydra.run.dir")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.TemporaryFile", read_only)
    with pytest.raises(RunFolderError, match=r"\(Permission denied\)"):
        check_writable(tmp_path / "ro", "hydra.sweep.dir")


def _one_line_failure(result, expect):
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(expect), result.stderr[-2000:]


def test_run_folder_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    result = run_cli(["experiment=smoke", f"paths.data_dir={tmp_path}/data", f"hydra.run.dir={tmp_path}/file/run"],
                     cwd=ROOT, timeout=300)
    _one_line_failure(result, f"run folder error: cannot write to {tmp_path}/file/run (Not a directory)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_folder_is_one_line(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    try:
        result = run_cli(["experiment=smoke", f"paths.data_dir={tmp_path}/data", f"paths.runs_dir={runs}"],
                         cwd=ROOT, timeout=300)
    finally:
        runs.chmod(0o755)
    _one_line_failure(result, f"run folder error: cannot write to {runs}/")


def test_unwritable_sweep_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    result = run_cli(["-m", "experiment=smoke", f"paths.data_dir={tmp_path}/data", "seed=1,2",
                      f"hydra.sweep.dir={tmp_path}/file/sweep"], cwd=ROOT, timeout=300)
    _one_line_failure(result, "run folder error: cannot write to")


@pytest.mark.slow
def test_disk_full_while_writing_metrics_is_one_line(tmp_path, data_dir):
    # a real ENOSPC: the temporary metrics file is a link to /dev/full
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json.tmp").symlink_to("/dev/full")
    result = run_cli(["experiment=smoke", f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}",
                      "trainer.max_steps=10", "logger.tensorboard=false"], cwd=ROOT, timeout=300)
    _one_line_failure(result, f"run folder error: cannot write {run_dir}/metrics.json (No space left on device)")
    assert not os.path.lexists(run_dir / "metrics.json.tmp")


@pytest.mark.slow
def test_two_runs_started_at_once_get_their_own_folders(tmp_path, data_dir):
    """Seeds 1 and 2 of one method, started in the same second: two folders, two results."""
    runs = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC")}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "cce_dlrm.train", "experiment=smoke", f"seed={seed}",
                               f"paths.data_dir={data_dir}", f"paths.runs_dir={runs}", "trainer.max_steps=10",
                               "trainer.val_every=10", "logger.tensorboard=false"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    folders = sorted((runs / "synthetic_smoke" / "full").iterdir())
    assert len(folders) == 2
    assert sorted(read_metrics(f)["seed"] for f in folders) == [1, 2]
