"""``python -m cce_dlrm.bench [--scale small|full] [--sections a,b] [--out results/bench]``.

Runs the sections in order, prints progress with elapsed time, and writes the report even
when a section fails (the failure is one line in its section; the exit status is then 1).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

SECTIONS = ("throughput", "memory", "scaling", "clustering", "preprocess")


def _hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores visible"
    try:
        gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        if gpus.returncode == 0 and gpus.stdout.strip():
            text += "; " + "; ".join(gpus.stdout.strip().splitlines())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return text


def main(argv: list[str] | None = None) -> int:
    from cce_dlrm.bench.scales import SCALES

    ap = argparse.ArgumentParser(prog="python -m cce_dlrm.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default=os.environ.get("BENCH_SCALE", "small"))
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    ap.add_argument("--out", type=Path, default=Path("results/bench"))
    ap.add_argument("--host", default=socket.gethostname().split(".")[0])
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "cce_bench")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--note", default=os.environ.get("BENCH_NOTE", ""),
                    help="a line for the report's header (e.g. what else ran on the machine)")
    args = ap.parse_args(argv)
    if args.scale not in SCALES:
        print(f"bench: unknown scale {args.scale!r} (one of {', '.join(SCALES)})", file=sys.stderr)
        return 2
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"bench: unknown section(s) {', '.join(unknown)} (one of {', '.join(SECTIONS)})", file=sys.stderr)
        return 2

    import torch

    import importlib

    from cce_dlrm.bench.plots import plot_sections
    from cce_dlrm.bench.report import SECTION_TITLES, Section, write_report
    from cce_dlrm.training.distributed import init_runtime

    scale = SCALES[args.scale]
    args.workdir.mkdir(parents=True, exist_ok=True)
    runtime = init_runtime(args.device)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[bench {time.perf_counter() - started:6.0f} s] {msg}", flush=True)

    def runner(name: str):
        return importlib.import_module(f"cce_dlrm.bench.{name}").run(scale, runtime, args.workdir, log)

    owned = {"throughput": ["throughput", "loader", "split", "profile"]}
    sections: list[Section] = []
    failed = []
    for name in wanted:
        log(f"section {name} (scale {scale.name})")
        tic = time.perf_counter()
        try:
            produced = runner(name)
        except Exception as err:  # the report keeps the other sections
            traceback.print_exc()
            failed.append(name)
            produced = [Section(k, "", error=f"{type(err).__name__}: {err}".splitlines()[0])
                        for k in owned.get(name, [name])]
        for s in produced:
            s.title = s.title or SECTION_TITLES[s.key]
        produced[0].seconds = time.perf_counter() - tic
        sections += produced
        log(f"section {name} done in {time.perf_counter() - tic:.0f} s")
    try:
        plot_sections(sections, args.out, args.host)
    except Exception as err:
        failed.append("plots")
        print(f"bench: plots failed: {type(err).__name__}: {err}", file=sys.stderr)
    header = [
        f"# Benchmark report: {args.host}",
        "",
        f"- scale: **{scale.name}**: vocabularies "
        + (f"clipped at {scale.vocab_cap:,} (not Kaggle's: ratios are indicative only)" if scale.vocab_cap
           else "Criteo Kaggle's 26 (33,762,577 rows)"),
        *([f"- note: **{args.note}**"] if args.note else []),
        f"- hardware: {_hardware()}",
        f"- device: {runtime.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"Python {platform.python_version()}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, total {time.perf_counter() - started:.0f} s",
        "- command: `make bench BENCH_SCALE=" + scale.name + "` (`python -m cce_dlrm.bench`)",
        "- every figure: median of interleaved rounds; `spread_pct` = (slowest - fastest round) / median",
    ]
    md, csv = write_report(sections, args.out, args.host, header)
    log(f"report: {md} and {csv}" + (f"; FAILED sections: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
