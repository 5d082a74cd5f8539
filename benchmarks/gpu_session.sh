#!/usr/bin/env bash
# The GPU runs, as one command on the lent GPU machine (the device tool's `run`), from the
# repository root, with what the machine lacks carried (both made here, once, and ignored by git):
#   bash benchmarks/gpu_wheels.sh                       # .whl/: ~40 MB of wheels
#   PYTHONPATH=. python benchmarks/bench_answer.py --export-pool .gpu/heldout.npz   # 11 MB
#   run(command="bash benchmarks/gpu_session.sh answer", carry=[".whl", ".gpu"], timeout_s=540)
# WHAT (first argument):
#   answer  issue 24: benchmarks/bench_answer.py on CUDA (a CUDA run uses AMP and pinned crop
#           buffers by default): the node subset, then the Camelyon-size slide built there from
#           the carried held-out patches (~1-2 min of the machine's CPU), through the CLI;
#   gpu     issue 13: benchmarks/bench_gpu.py (five rates, utilisation, a 100k x 80k slide);
#   all     both, answer first.
# Further arguments go to the benchmark (e.g. `answer --quick`). JSON and logs land in $OUT;
# copy them to resources/bench_answer_gpu.json and resources/bench_gpu.json.
set -euo pipefail
what=${1:-answer}
shift || true
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" \
    | tee -a "$out/gpu.txt"
if [[ "$what" == answer || "$what" == all ]]; then
    if [[ ! -f .gpu/heldout.npz ]]; then
        echo "no .gpu/heldout.npz: make it here with bench_answer.py --export-pool" >&2
        exit 2
    fi
    python3 benchmarks/bench_answer.py --device cuda --modes current,exhaustive --pool .gpu/heldout.npz \
        --work /tmp/answer --note "GPU session: $(head -2 "$out/gpu.txt" | tail -1)" \
        --out "$out/bench_answer_gpu.json" "$@" 2>&1 | tee "$out/bench_answer_gpu.log"
fi
if [[ "$what" == gpu || "$what" == all ]]; then
    python3 benchmarks/bench_gpu.py --device cuda --out "$out/bench_gpu.json" "$@" 2>&1 \
        | tee "$out/bench_gpu.log"
fi
