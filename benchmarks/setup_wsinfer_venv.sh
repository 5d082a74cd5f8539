#!/usr/bin/env bash
# The WSInfer 0.6.1 peer for benchmarks/bench_predict.py, in its own venv (outside the repo).
# WSInfer installs here only with the workarounds found when it was first run side by side:
# torchvision without its dependencies (its own pins would replace the CPU torch), WSInfer's
# dependencies by hand with zarr<3 (tiffslide 2 needs zarr 2), then WSInfer itself --no-deps.
# benchmarks/wsinfer_peer.py declares torchvision's nms operator and keeps the zoo offline.
#   bash benchmarks/setup_wsinfer_venv.sh [VENV]      (default /work/wsinfer-venv)
set -euo pipefail
VENV=${1:-/work/wsinfer-venv}
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip install -q"
$PIP --upgrade pip
$PIP "torch==2.13.0"
$PIP --no-deps "torchvision==0.28.0"
$PIP "click>=8.0,<9,!=8.1.4,!=8.1.5" h5py numpy opencv-python-headless pandas pillow \
    "scikit-image>=0.20" shapely "tifffile>=2023.1.23" "zarr<3" "tiffslide>=2.2,<3" tqdm \
    "imagecodecs>=2023.7.10" huggingface-hub jsonschema tabulate openslide-python openslide-bin
$PIP --no-deps "wsinfer==0.6.1" "wsinfer-zoo==0.6.3"
"$VENV/bin/python" "$(dirname "$0")/wsinfer_peer.py" --check
