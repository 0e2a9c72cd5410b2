#!/usr/bin/env bash
# GPU readiness check (issue 12): train speed at ~125M with bf16 + compile (MFU), the smoke grid on
# CUDA, DeepSpeed on 1 GPU, lm-eval on CUDA. Prints one JSON line; <= 8 min on an H100-class GPU.
# On the lent machine: `bash benchmarks/gpu_check.sh` (its python3 holds a CUDA torch; nothing is
# installed or fetched: the repo is put on PYTHONPATH, steps whose package is missing say so).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 1>&2 || true
exec "$PY" benchmarks/gpu_check.py "$@"
