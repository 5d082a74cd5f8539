#!/usr/bin/env bash
# Wheels the GPU machine lacks, for its Python 3.12 (the device tool's image holds torch, numpy,
# pandas, scikit-image, tifffile, pillow, tqdm ... but not these), at the versions of this
# checkout's venv, into .whl/ (ignored by git; about 40 MB, carried with the ~12 MB tree).
# Run here, once, from the repository root:  bash benchmarks/gpu_wheels.sh [VENV_PYTHON]
set -euo pipefail
venv_python=${1:-.venv/bin/python}
packages=()
for name in defusedxml donfig google-crc32c imagecodecs numcodecs openslide-python openslide-bin \
    platformdirs shapely zarr; do
    version=$("$venv_python" -m pip show "$name" | awk '/^Version:/ {print $2}')
    packages+=("$name==$version")
done
rm -rf .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${packages[@]}"
du -sh .whl
