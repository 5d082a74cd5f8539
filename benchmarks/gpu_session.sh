#!/usr/bin/env bash
# Issue #13's GPU run, as one command on the lent GPU machine (the device tool's `run`), from the
# repository root, with the wheels of benchmarks/gpu_wheels.sh carried:
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=540)
# It installs the wheels beside the machine's own torch, prints the GPU, and runs
# benchmarks/bench_gpu.py (JSON and log under $OUT; copy the JSON to resources/bench_gpu.json).
set -euo pipefail
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" \
    | tee -a "$out/gpu.txt"
python3 benchmarks/bench_gpu.py --device cuda --out "$out/bench_gpu.json" "$@" 2>&1 \
    | tee "$out/bench_gpu.log"
