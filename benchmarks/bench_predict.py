"""Whole-slide inference throughput, against the pipeline's own limits measured in the same run.

Three timings over the same patches, same batch size and same reader threads:

* ``pipeline``: :func:`napari_metastasis.engine.run_inference` end to end (read, decode, resize,
  copy to the device, normalise, forward pass, probabilities back);
* ``read``: (a) the engine's :class:`PatchReader` alone (read + decode + resize into batches);
* ``forward``: (b) the model's forward pass alone on a batch already prepared on the device.

If reading and the forward pass overlap perfectly, the pipeline runs at the slower of the two, so
``efficiency = pipeline / min(read, forward)`` is the figure of merit (goal >= 0.8). On a machine
without a GPU both stages compete for the same cores, so the JSON also gives the serial bound
``1 / (1/read + 1/forward)`` and the pipeline's efficiency against it. The numbers
are ratios measured in one process on one machine, so they compare across machines; the absolute
patches/s only describe the machine that ran it. Runs on CPU and CUDA alike.

    PYTHONPATH=. python benchmarks/bench_predict.py --out resources/bench_predict.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from napari_metastasis._sample_data import SAMPLE_SLIDE
from napari_metastasis.engine import (
    PatchReader,
    default_num_workers,
    make_grid,
    run_inference,
)
from napari_metastasis.models import load_model
from napari_metastasis.slide import Slide


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pipeline(slide, model, cells, grid, batch_size, workers) -> float:
    start = time.perf_counter()
    n = 0
    for batch in run_inference(
        slide, model, cells, grid, batch_size=batch_size, num_workers=workers
    ):
        n += len(batch.cells)
    assert n == len(cells)
    return time.perf_counter() - start


def time_read(slide, model, cells, grid, batch_size, workers) -> float:
    reader = PatchReader(slide, grid, model.input_size, num_workers=workers)
    boxes = grid.read_boxes(cells)
    start = time.perf_counter()
    n = 0
    for part, _pixels in reader.batches(boxes, batch_size):
        n += part.stop - part.start
    assert n == len(cells)
    return time.perf_counter() - start


def time_forward(model, n_patches, batch_size) -> float:
    h, w = model.input_size
    rng = np.random.default_rng(0)
    x = model.prepare(rng.integers(0, 256, (batch_size, h, w, 3), dtype=np.uint8))
    model.forward(x)  # warm-up (cuDNN autotuning, lazy init)
    _sync(model.device)
    full, rest = divmod(n_patches, batch_size)
    start = time.perf_counter()
    for _ in range(full):
        model.forward(x).cpu()
    if rest:
        model.forward(x[:rest]).cpu()
    _sync(model.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=SAMPLE_SLIDE)
    parser.add_argument("--mpp", type=float, help="level-0 µm/px for slides without one")
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=default_num_workers())
    parser.add_argument(
        "--passes",
        type=int,
        default=3,
        help="classify the whole grid this many times (longer runs)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="keep the best of this many runs")
    parser.add_argument("--out", type=Path, help="write the JSON here (also printed)")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    with Slide(args.slide, mpp=args.mpp) as slide:
        grid = make_grid(slide, model)
        cells = np.concatenate([grid.all_cells()] * args.passes)
        common = (slide, model, cells, grid, args.batch_size, args.workers)
        time_read(*common)  # warm the OS and OpenSlide caches so every timing sees the same state
        best = {"read": float("inf"), "forward": float("inf"), "pipeline": float("inf")}
        for _ in range(args.repeats):
            best["read"] = min(best["read"], time_read(*common))
            best["forward"] = min(best["forward"], time_forward(model, len(cells), args.batch_size))
            best["pipeline"] = min(best["pipeline"], time_pipeline(*common))
        level = PatchReader(slide, grid, model.input_size).level
    rates = {k: len(cells) / v for k, v in best.items()}
    limit = min(rates["read"], rates["forward"])
    serial = 1 / (1 / rates["read"] + 1 / rates["forward"])
    report = {
        "benchmark": "bench_predict",
        "slide": args.slide.name,
        "slide_level0": [grid.width, grid.height],
        "read_level": level,
        "model": model.name,
        "patch": f"{model.config.patch_size_pixels} px at {model.config.spacing_um_px} µm/px",
        "input_size": list(model.input_size),
        "device": str(model.device),
        "device_name": (
            torch.cuda.get_device_name(model.device)
            if model.device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "amp": model.amp,
        "patches": len(cells),
        "batch_size": args.batch_size,
        "reader_threads": args.workers,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "patches_per_s": {
            "pipeline": round(rates["pipeline"], 1),
            "read_decode_resize": round(rates["read"], 1),
            "forward": round(rates["forward"], 1),
        },
        "bottleneck": "read" if rates["read"] < rates["forward"] else "forward",
        "efficiency_pipeline_over_min": round(rates["pipeline"] / limit, 3),
        "goal": 0.8,
        # On a CPU-only machine reading and the forward pass share the same cores, so they cannot
        # fully overlap: the best possible is the serial bound 1 / (1/read + 1/forward).
        "serial_bound_patches_per_s": round(serial, 1),
        "efficiency_pipeline_over_serial_bound": round(rates["pipeline"] / serial, 3),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
