"""`make bench` end to end at its tiny scale, and the GPU check's refusal without a GPU.

No timing assertions: the numbers of a shared test machine mean nothing; these tests check
that every section is produced and the files are written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cce_dlrm.bench.report import SECTION_TITLES

ROOT = Path(__file__).resolve().parents[1]


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "cce_dlrm.bench", "--out", str(tmp_path / "out"),
                           "--host", "testhost", "--workdir", str(tmp_path / "work"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_tiny_bench_writes_every_section(tmp_path):
    done = _bench(tmp_path, "--scale", "tiny")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    md = (tmp_path / "out" / "testhost.md").read_text()
    for title in SECTION_TITLES.values():
        assert f"## {title}" in md, title
    assert "## Targets" in md and "This section failed" not in md
    for target in ("torchrec at batch 128", "clustering round", "parse floor"):
        assert target in md
    csv = pd.read_csv(tmp_path / "out" / "testhost.csv")
    assert set(SECTION_TITLES) <= set(csv.section)
    tp = csv[csv.section == "throughput"]
    assert {"full", "cce", "torchrec DLRM (DMP)"} <= set(tp.method.dropna())
    assert (tp.samples_per_s.dropna() > 0).all()
    assert set(csv[csv.section == "scaling"].processes.dropna()) == {1.0, 2.0}
    for png in ("testhost_throughput.png", "testhost_clustering.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000
    assert "[bench" in done.stdout  # progress lines


def test_unknown_scale_and_section_are_one_line(tmp_path):
    for args in (["--scale", "huge"], ["--sections", "throughput,nonsense"]):
        done = _bench(tmp_path, *args)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def _check_gpu(tmp_path: Path, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path}
    return subprocess.run(["bash", str(ROOT / "scripts" / "check_gpu.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_check_gpu_refuses_without_nvidia_smi(tmp_path):
    done = _check_gpu(tmp_path, "/usr/bin:/bin")
    assert done.returncode == 2
    assert "no NVIDIA GPU" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not list((ROOT / "results" / "bench").glob("*.partial"))


def test_check_gpu_refuses_when_nvidia_smi_lists_no_gpu(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    (fake / "nvidia-smi").chmod(0o755)
    done = _check_gpu(tmp_path, f"{fake}:/usr/bin:/bin")
    assert done.returncode == 2
    assert "lists no GPU" in done.stderr and len(done.stderr.strip().splitlines()) == 1
