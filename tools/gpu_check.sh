#!/usr/bin/env bash
# The GPU checks in one command, on a machine with CUDA and this checkout's venv (make install):
#   tools/gpu_check.sh [OUT_DIR]
# Runs tools/gpu_check.py: every head on the GPU in float32 and bf16 against float64 on the CPU, Inductor fullgraph
# inference and a compiled training step per variant, attn_implementation="flex_attention" against the default
# (training too), and the Longformer against transformers' at 4k and 8k.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
exec "$PY" tools/gpu_check.py --device cuda --out "${1:-gpu_check_results}"
