#!/usr/bin/env bash
# Throughput on one CUDA GPU: fp32, then bf16 autocast; about a minute on a modern GPU, under 5 in all.
#   bash benchmarks/gpu_check.sh [OUT_DIR]     # writes OUT_DIR/gpu_fp32.json and gpu_bf16.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
OUT=${1:-benchmarks/out}
mkdir -p "$OUT"

"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check: torch sees no CUDA device")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# Per-layer epochs and data as on CPU, more data so each workload runs long enough to time.
ARGS=(--device cuda --repeats 5 --n-train 16384 --matmul-iters 200)
timeout 150 "$PY" benchmarks/bench_throughput.py "${ARGS[@]}" --json "$OUT/gpu_fp32.json"
timeout 150 "$PY" benchmarks/bench_throughput.py "${ARGS[@]}" --precision bf16 --json "$OUT/gpu_bf16.json"
