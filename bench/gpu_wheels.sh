#!/usr/bin/env bash
# Prepares bench/gpu_check.py for a lent GPU machine that reaches no registry (the device tool's nvidia-h200: Python
# 3.12, torch 2.11 CUDA 13, transformers, peft, lightning, but no bitsandbytes, fastapi, uvicorn or pydantic):
#   1. downloads exactly the wheels it lacks, for CPython 3.12 on manylinux x86-64, into .whl/ (git-ignored);
#   2. writes the check's inputs into .gpu_check/ (git-ignored): a tokenizer and the HELM-like request mix;
#   3. checks that both, with the working tree, fit the 64 MiB a device call may carry.
# Usage (from anywhere): bash bench/gpu_wheels.sh [TOKENIZER_CHECKPOINT_DIR [SHARED_DATA_DIR]]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
TOKENIZER_DIR=${1:-checkpoints/HuggingFaceTB/SmolLM2-135M-Instruct}
SHARED_DATA=${2:-../shared/data}

# The versions the tests here ran with. bitsandbytes ships one library per CUDA version in one wheel (41 MiB);
# torch 2.11+cu130 there loads libbitsandbytes_cuda130.so.
WHEELS=(
  bitsandbytes==0.50.2
  fastapi==0.165.0 starlette==1.10.0 opentelemetry-api==1.45.2
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
  uvicorn==0.54.0
)
rm -rf .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "${WHEELS[@]}"
"$PY" bench/gpu_check.py --prepare --tokenizer_dir "$TOKENIZER_DIR" --shared_data "$SHARED_DATA"

tree_kib=$(git ls-files -co --exclude-standard -z | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1)
carry_kib=$(du -ck .whl .gpu_check | tail -1 | cut -f1)
total_mib=$(( (tree_kib + carry_kib) / 1024 ))
echo "wheels $(du -sh .whl | cut -f1), inputs $(du -sh .gpu_check | cut -f1), working tree $((tree_kib / 1024)) MiB:" \
  "${total_mib} MiB of the 64 MiB a call carries"
if [ "$total_mib" -ge 64 ]; then echo "error: over the carry limit" >&2; exit 1; fi
