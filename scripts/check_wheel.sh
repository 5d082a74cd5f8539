#!/usr/bin/env bash
# The package as a user gets it: build the wheel, install it in a clean virtual environment
# (torch first, as the README says), then check that napari lists the plugin and that
# `napari-metastasis predict --sample` runs from the installed wheel, outside the checkout (the
# bundled model through ONNX Runtime, the default on the CPU).
# Usage: scripts/check_wheel.sh [PYTHON_WITH_BUILD] (default: .venv/bin/python); TORCH_SPEC as in
# the Makefile. pip's cache (and any local wheel folders pip is configured with) keeps it quick.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_PYTHON=${1:-.venv/bin/python}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "wheel check: building"
"$BUILD_PYTHON" -m build --wheel --outdir "$work/dist" . >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/napari_metastasis-*.whl)
echo "wheel check: installing $(basename "$wheel") in a clean venv"
python3 -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip install -q --disable-pip-version-check)
{ "${pip[@]}" "$TORCH_SPEC" && "${pip[@]}" "$wheel"; } >"$work/install.log" 2>&1 \
    || { cat "$work/install.log"; exit 1; }

cd "$work"  # away from the checkout: only the installed package can be imported
installed=$("$work/venv/bin/python" -c "import napari_metastasis as m; print(m.__file__)")
case "$installed" in
    "$work/venv/"*) ;;
    *) echo "wheel check: imported $installed, not the installed wheel"; exit 1 ;;
esac
"$work/venv/bin/npe2" list --fields name,version,contributions > plugins.txt
grep -q "napari-metastasis" plugins.txt || { cat plugins.txt; echo "wheel check: napari does not list the plugin"; exit 1; }
"$work/venv/bin/python" -m npe2 validate napari-metastasis >/dev/null
"$work/venv/bin/napari-metastasis" predict --sample --out "$work/out" >"$work/predict.log" 2>&1 \
    || { cat "$work/predict.log"; exit 1; }
grep -q "on cpu (ONNX Runtime)" "$work/predict.log" \
    || { cat "$work/predict.log"; echo "wheel check: the bundled model did not run through ONNX Runtime"; exit 1; }
test -s "$work/out/CMU-1-Small-Region.geojson"
test -d "$work/out/CMU-1-Small-Region.prob.zarr"
echo "wheel check: OK (napari lists napari-metastasis; predict --sample ran from the wheel)"
