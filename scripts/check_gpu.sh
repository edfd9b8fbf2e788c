#!/usr/bin/env bash
# Checks the GPU path on a machine with an NVIDIA GPU, in under 10 minutes:
#   1. installs the CUDA build (make venv DEVICE=cuda)
#   2. smoke training of `full` and `cce` on one GPU (CCE's clustering rounds on FAISS's GPU
#      index: the round's log line must say GPU), and on two GPUs via torchrun if present
#   3. make bench BENCH_SCALE=small on the GPU
# and writes one report, results/bench/gpu_check_<host>.md. It stops at the first step that
# does not work and names it. Usage: scripts/check_gpu.sh   (from anywhere in the repo)
set -Eeuo pipefail  # -E: the ERR trap also fires inside functions

cd "$(dirname "$0")/.."
HOST=$(hostname -s 2>/dev/null || hostname)
REPORT=results/bench/gpu_check_${HOST}.md
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/cce_gpu_check.XXXXXX")
STEP="start"
START=$(date +%s)

fail() {
    echo "check_gpu: FAILED at step '$STEP' (logs in $LOGS)" >&2
    if [[ -f "$REPORT.partial" ]]; then
        printf '\n**FAILED at step: %s** (logs in %s)\n' "$STEP" "$LOGS" >> "$REPORT.partial"
        mv "$REPORT.partial" "$REPORT"
        echo "check_gpu: partial report in $REPORT" >&2
    fi
}
trap fail ERR

note() { printf '%s\n' "$*" | tee -a "$REPORT.partial"; }
elapsed() { echo $(( $(date +%s) - START )); }

# --- refuse clearly without an NVIDIA GPU (before installing anything) ---
STEP="find an NVIDIA GPU (nvidia-smi -L)"
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "check_gpu: no nvidia-smi on PATH: this machine has no NVIDIA GPU driver; nothing to check" >&2
    exit 2
fi
if ! GPUS=$(nvidia-smi -L 2>/dev/null) || [[ -z "$GPUS" ]]; then
    echo "check_gpu: nvidia-smi lists no GPU (nvidia-smi -L failed or printed nothing); nothing to check" >&2
    exit 2
fi
NGPU=$(grep -c '^GPU ' <<< "$GPUS" || true)

mkdir -p results/bench
rm -f "$REPORT.partial"
note "# GPU check: $HOST"
note ""
note "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
note "- GPUs ($NGPU):"
while read -r line; do note "  - $line"; done <<< "$GPUS"
note "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
note ""
note "| step | result | seconds |"
note "|---|---|---|"

run_step() {  # run_step "name" logfile command...
    STEP="$1"; local log="$LOGS/$2"; shift 2
    local t0; t0=$(date +%s)
    echo "check_gpu: [$(elapsed) s] $STEP" >&2
    if ! "$@" > "$log" 2>&1; then
        tail -n 30 "$log" >&2
        false
    fi
    note "| $STEP | ok | $(( $(date +%s) - t0 )) |"
}

run_step "install the CUDA build (make venv DEVICE=cuda)" venv.log make venv DEVICE=cuda
PY=.venv/bin/python
run_step "torch sees CUDA, FAISS sees a GPU" cuda.log \
    $PY -c "import torch, faiss; assert torch.cuda.is_available(), 'torch: no CUDA'; assert faiss.get_num_gpus() > 0, 'faiss: no GPU'; print(torch.cuda.get_device_name(0), faiss.get_num_gpus())"

RUNS=$LOGS/runs
# the smoke experiment's default CCE schedule clusters at 1/4 and 1/2 of its epoch
run_step "smoke training, full, 1 GPU" smoke_full_1.log \
    $PY -m cce_dlrm.train experiment=smoke method=full device=cuda hydra.run.dir=$RUNS/full_1
run_step "smoke training, cce, 1 GPU" smoke_cce_1.log \
    $PY -m cce_dlrm.train experiment=smoke method=cce device=cuda hydra.run.dir=$RUNS/cce_1
STEP="the cce round ran on FAISS's GPU index (log says GPU)"
grep -E "cce round [0-9]+ .*\(GPU\)" "$LOGS/smoke_cce_1.log" "$RUNS"/cce_1/*.log 2>/dev/null | head -2 >&2
grep -qE "cce round [0-9]+ .*\(GPU\)" "$LOGS/smoke_cce_1.log" "$RUNS"/cce_1/*.log 2>/dev/null
note "| $STEP | ok | 0 |"

if (( NGPU >= 2 )); then
    for m in full cce; do
        run_step "smoke training, $m, 2 GPUs (torchrun)" smoke_${m}_2.log \
            $PY -m torch.distributed.run --standalone --nproc_per_node=2 -m cce_dlrm.train \
            experiment=smoke method=$m device=cuda hydra.run.dir=$RUNS/${m}_2
    done
else
    note "| 2-GPU smoke training | skipped: 1 GPU | 0 |"
fi

run_step "make bench BENCH_SCALE=small on the GPU" bench.log make bench BENCH_SCALE=small
note ""
note "Benchmark report: results/bench/${HOST}.md. Total $(elapsed) s (budget: 600 s)."
mv "$REPORT.partial" "$REPORT"
echo "check_gpu: all steps passed in $(elapsed) s; report $REPORT" >&2
