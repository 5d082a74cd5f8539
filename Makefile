# Two entry points for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, so that installing the package pulls nothing more. Which build pip takes depends on
# where pip looks: these machines have a CPU wheel on disk; elsewhere plain PyPI gives the CUDA build
# on Linux. TORCH_INDEX_URL chooses, e.g. https://download.pytorch.org/whl/cpu for the CPU build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
TORCH_INDEX := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
XVFB := xvfb-run -a -s "-screen 0 1600x1200x24"
# pytest workers (pytest-xdist) for `make test`: 2 halves its time on two cores; 0 runs in one process.
PYTEST_WORKERS ?= 2

.PHONY: setup system-deps demo test test-fast conformance lint typecheck docs wheel-check format bench validate model clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[testing]"
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

demo: setup
	$(BIN)/napari-metastasis predict --sample --out demo-output

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: setup
	$(BIN)/mypy

# The docs site (mkdocs.yml, docs/) into site/, with every warning an error (a broken link or anchor,
# a page left out of the nav); first the CLI reference must match the parsers (scripts/).
docs: setup
	$(BIN)/python scripts/cli_reference.py --check
	$(BIN)/mkdocs build --strict --quiet

# The built wheel in a clean venv: napari lists the plugin, `predict --sample` runs (scripts/).
wheel-check: setup
	TORCH_SPEC="$(TORCH_SPEC)" bash scripts/check_wheel.sh $(BIN)/python

# The whole suite, the conformance tests (below) included.
test: system-deps setup lint typecheck docs
	$(XVFB) $(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)
	$(MAKE) wheel-check

# The edit loop: every test but the slow ones (marked `slow`: a whole prediction, a training run)
# and the GUI ones, with no display needed; under a minute on two quiet cores.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not gui" $(PYTEST_ARGS)

# Our outputs (predict --sample, evaluate, ASAP XML, maps, JPEG 2000 SVS) through the field's own
# reference code: Camelyon16's Evaluation_FROC.py and ASAP mask recipe (ported in tests/),
# ome-zarr-py, napari-ome-zarr, tifffile, OpenSlide. Tests marked `conformance`.
conformance: setup
	$(XVFB) $(BIN)/python -m pytest -m conformance $(PYTEST_ARGS)

# WSINFER_VENV=DIR (benchmarks/setup_wsinfer_venv.sh) adds WSInfer side by side to bench_answer.
bench: setup
	$(BIN)/python benchmarks/bench_reader.py --out resources/bench_reader.json
	$(BIN)/python benchmarks/bench_predict.py --out resources/bench_predict.json
	$(BIN)/python benchmarks/bench_cpu_options.py --out resources/bench_cpu_options.json
	$(BIN)/python benchmarks/bench_answer.py --nodes 40 --repeats 2 \
		$(if $(WSINFER_VENV),--wsinfer-venv $(WSINFER_VENV),) --out resources/bench_answer.json
	$(BIN)/python benchmarks/bench_first_pass.py --out resources/bench_first_pass.json
	$(BIN)/python benchmarks/bench_model.py --out resources/bench_model.json
	$(BIN)/python benchmarks/bench_faults.py --out resources/bench_faults.json
	$(XVFB) $(BIN)/python benchmarks/bench_gui.py --out resources/bench_gui.json
	$(XVFB) $(BIN)/python benchmarks/bench_gui.py --rounds 2 --second-slide none \
		--slide-path $${TMPDIR:-/tmp}/napari-metastasis-answer/slides/shared/camelyon_size_node-c128-s0.tif \
		--out resources/bench_gui_camelyon_size.json

# Node-level validation on held-out patches (issue 20): 40 node slides built in /tmp (cached), then
# `predict` with the bundled model (MODEL=DIR for another); about 10-20 min on 2 CPU cores.
MODEL ?= default
validate: setup
	$(BIN)/python benchmarks/bench_nodes.py --part test --model $(MODEL) --out resources/bench_nodes.json

model: setup
	$(BIN)/python scripts/train_bundled_model.py

clean:
	rm -rf $(VENV) demo-output site .pytest_cache .ruff_cache
