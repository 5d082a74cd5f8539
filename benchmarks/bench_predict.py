"""Whole-slide inference throughput against the limits of each stage, measured in the same run.

On the bundled sample and on a 50,000 x 40,000 px JPEG-tiled synthetic slide (0.25 µm/px, real
tissue tiles from the sample repeated over an elliptical section, written here), for the bundled
model and a read-bound model (64 px at 1 µm/px, a pooling layer: its forward pass is nearly free),
over the cells :func:`plan_cells` plans (tissue only), five rates in patches per second:

* (a) ``decode_limit``: every read-level tile under a planned cell decoded once (imagecodecs,
  into each thread's reused buffer as the reader does), on all cores, nothing else; also with
  processes instead of threads, shipping the decoded tiles back, which a process-based reader
  would have to do;
* (b) ``reader``: the engine's :class:`RegionReader` alone (regions, cuts, batched resize), with
  the one torch thread a run gives its resize on the CPU;
* (c) ``forward``: the model's forward pass alone on ready batches, three ways on the CPU: one
  torch thread, one OpenMP team over all cores, and each batch split over all cores (one torch
  thread per part, :class:`ForwardPool`, what a run does); ``c_forward_best`` is the fastest;
* (d) ``pipeline``: :func:`run_inference` end to end, as a new process starts it (a fresh
  :class:`ThreadTuner`, whose probes are part of the time); ``d_pipeline_old_split`` is the same
  with ``NAPARI_METASTASIS_TORCH_THREADS=readers``, the fixed split runs had before (torch got
  the cores the reader threads leave: one of two);
* (e) ``seeds_way``: one ``read_region`` per patch from the read level, PIL resize, batch, forward
  on torch's default threads (all cores), no prefetch (the first patches of the plan, row by row,
  so OpenSlide's tile cache helps it).

Goals (``GOALS``): forward-bound, (d) >= 0.9 ``c_forward_best`` (the model's best rate on all
cores); read-bound, (d) >= 0.9 (b) and (d) >= 5 (e); everywhere (b) >= 0.5 (a) and (d) >= 0.8
min(b, c). ``two_core_limits`` in the JSON says which goal two cores cannot show and why (the
serial bound 1 / (1/b + 1/c) is the rate when reading and the model share every core). With
``--wsinfer-venv`` (made by ``benchmarks/setup_wsinfer_venv.sh``) the peer runs too:
``napari-metastasis predict`` against ``wsinfer run`` as whole processes on the same slides and
model folder, batch 64, 2 workers, each with its own thread defaults.

    PYTHONPATH=. python benchmarks/bench_predict.py --out resources/bench_predict.json \\
        [--wsinfer-venv /work/wsinfer-venv]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from napari_metastasis._napari.sample_data import SAMPLE_SLIDE
from napari_metastasis.models import load_model
from napari_metastasis.models.loading import ForwardPool
from napari_metastasis.models.transforms import resize_patch
from napari_metastasis.pipeline import (
    RegionReader,
    default_num_workers,
    make_grid,
    plan_cells,
    run_inference,
    torch_threads,
)
from napari_metastasis.pipeline.inference import thread_tuner
from napari_metastasis.pipeline.reader import THREADS_ENV_VAR, available_cores
from napari_metastasis.slides.slide import Slide

GOALS = {
    "reader_over_decode": 0.5,
    "pipeline_over_min": 0.8,
    "read_bound_over_seeds": 5.0,
    "forward_bound_over_best_forward": 0.9,
    "read_bound_over_reader": 0.9,
}
SYNTHETIC_SIZE = (50_000, 40_000)
SYNTHETIC_MPP = 0.25


# --- inputs written by the benchmark ------------------------------------------------------------
def write_synthetic_slide(path: Path, *, size=SYNTHETIC_SIZE, mpp=SYNTHETIC_MPP, tile=256) -> Path:
    """A JPEG-tiled generic TIFF pyramid (exact halvings) of real tissue tiles on white glass.

    The sample's tissue is JPEG-encoded once, tile by tile; the slide repeats those tiles over an
    ellipse (the section), glass elsewhere, so writing 50k x 40k px takes seconds, not minutes.
    """
    with Slide(SAMPLE_SLIDE) as sample:
        w, h = sample.dimensions
        tissue = sample.read_region(0, 0, 0, w // tile * tile, h // tile * tile)
    pieces = [
        tissue[y : y + tile, x : x + tile]
        for y in range(0, tissue.shape[0], tile)
        for x in range(0, tissue.shape[1], tile)
    ]
    pieces = [p for p in pieces if p.mean() < 215]  # mostly tissue
    stack = np.concatenate([*pieces, np.full((tile, tile, 3), 243, np.uint8)])  # last: glass
    fh = io.BytesIO()
    tifffile.imwrite(fh, stack, tile=(tile, tile), compression="jpeg", photometric="rgb")
    fh.seek(0)
    with tifffile.TiffFile(fh) as tif:
        page = tif.pages[0]
        tags = {"photometric": page.photometric, "subsampling": page.subsampling}
        data = fh.getvalue()
        encoded = [
            data[offset : offset + count]
            for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True)
        ]
    glass = encoded[-1]
    width, height = size
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for level in range(5):
            ds = 2**level
            lw, lh = width // ds, height // ds
            rows, cols = -(-lh // tile), -(-lw // tile)
            yy, xx = np.mgrid[0:rows, 0:cols]
            # Tile centres in level-0 px, inside a 70 % x 60 % ellipse: about a third of the slide.
            u = ((xx + 0.5) * tile * ds / width - 0.5) / 0.35
            v = ((yy + 0.5) * tile * ds / height - 0.5) / 0.30
            inside = (u**2 + v**2 <= 1).ravel()
            choice = (yy * 7919 + xx * 104729).ravel() % (len(encoded) - 1)
            tiles = (encoded[c] if t else glass for c, t in zip(choice, inside, strict=True))
            tw.write(
                tiles,
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression="jpeg",
                resolution=(1e4 / (mpp * ds),) * 2,
                resolutionunit="CENTIMETER",
                subfiletype=1 if level else 0,
                metadata=None,
                **tags,
            )
    return path


class _MeanColour(torch.nn.Module):
    """Read-bound stand-in: mean colour -> two logits (a forward pass of microseconds)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3)))


def write_model_folder(
    folder: Path, make_network, architecture: str, patch_px: int, spacing_um: float, transform
) -> Path:
    """A WSInfer-style model folder: a TorchScript network (weights from seed 0) and its config."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.jit.script(make_network().eval()).save(str(folder / "torchscript_model.pt"))
    config = {
        "spec_version": "1.0",
        "architecture": architecture,
        "num_classes": 2,
        "class_names": ["normal", "tumor"],
        "patch_size_pixels": patch_px,
        "spacing_um_px": spacing_um,
        "transform": transform,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def write_read_bound_model(folder: Path) -> Path:
    return write_model_folder(
        folder,
        _MeanColour,
        "mean colour + linear (read-bound benchmark model)",
        64,
        1.0,
        [{"name": "ToTensor", "arguments": {}}],
    )


# --- the five timings ---------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def planned_tiles(reader: RegionReader, boxes: np.ndarray) -> list[tuple[int, int]]:
    """(column, row) of every read-level tile under the planned patches, once each."""
    plan = reader.plan(boxes)
    tiles = {(c, row) for row, runs in plan.regions for c0, n in runs for c in range(c0, c0 + n)}
    w, h = reader.slide.level_dimensions[reader.level]
    tw, th = reader.tile_size
    return sorted((c, r) for c, r in tiles if c * tw < w and r * th < h)


_WORKER_SLIDE: Slide | None = None


def _open_in_worker(path: str) -> None:
    global _WORKER_SLIDE
    _WORKER_SLIDE = Slide(path)


def _decode_in_worker(level: int, tiles: list[tuple[int, int]]) -> list[np.ndarray]:
    return [_WORKER_SLIDE.tiles.tile(level, c, r) for c, r in tiles]


def time_decode(slide: Slide, level: int, tiles, workers: int, processes: bool) -> float | None:
    """Seconds to decode ``tiles`` once each, in threads or processes (None: not TIFF-family)."""
    if slide.tiles is None or not slide.tiles.has_level(level):
        return None
    if processes:
        chunks = [tiles[i : i + 32] for i in range(0, len(tiles), 32)]
        with ProcessPoolExecutor(
            workers, initializer=_open_in_worker, initargs=(str(slide.path),)
        ) as pool:
            list(pool.map(_decode_in_worker, [level], [chunks[0][:1]]))  # workers started
            start = time.perf_counter()
            for _ in pool.map(_decode_in_worker, [level] * len(chunks), chunks):
                pass
            return time.perf_counter() - start
    decode = slide.tiles.tile_view  # into each thread's reused buffer, as the reader does
    with ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        for _ in pool.map(lambda t: decode(level, *t), tiles):
            pass
        return time.perf_counter() - start


def time_reader(slide, grid, model, cells, batch_size, workers) -> float:
    reader = RegionReader(slide, grid, model.input_size, num_workers=workers, device=model.device)
    start = time.perf_counter()
    n = sum(len(index) for index, _ in reader.batches(grid.read_boxes(cells), batch_size))
    assert n == len(cells)
    return time.perf_counter() - start


def time_forward(
    model, n_patches: int, batch_size: int, threads: int | None = None, split: int = 0
) -> float:
    """Seconds for the model alone over ``n_patches`` ready patches: on ``threads`` torch
    threads (None: as they are), or with each batch split over ``split`` threads of one torch
    thread each (a run's :class:`ForwardPool`). On the CPU each batch starts from uint8 pixels,
    as in a run (``prepare``, the conversion to floats, is part of the model's work there); on a
    GPU from the prepared batch on the device."""
    h, w = model.input_size
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (batch_size, h, w, 3), dtype=np.uint8))
    x = model.prepare(pixels)
    cpu = model.device.type == "cpu"

    def batch(k: int) -> torch.Tensor:
        return model.prepare(pixels[:k]) if cpu else x[:k]

    with torch_threads(1 if split else threads), ForwardPool(max(1, split)) as pool:
        use = pool if split else None
        model.forward(x, use)  # warm-up (cuDNN autotuning, lazy init, the pool's threads)
        _sync(model.device)
        full, rest = divmod(n_patches, batch_size)
        start = time.perf_counter()
        for _ in range(full):
            model.forward(batch(batch_size), use).cpu()
        if rest:
            model.forward(batch(rest), use).cpu()
        _sync(model.device)
        return time.perf_counter() - start


def time_pipeline(slide, grid, model, cells, batch_size, workers, policy="auto") -> float:
    """Seconds for :func:`run_inference` over ``cells``, under the thread ``policy`` (the value
    of NAPARI_METASTASIS_TORCH_THREADS), with a fresh tuner as a new process has."""
    previous = os.environ.get(THREADS_ENV_VAR)
    os.environ[THREADS_ENV_VAR] = policy
    thread_tuner(model, fresh=True)
    try:
        start = time.perf_counter()
        n = sum(
            len(b.cells)
            for b in run_inference(
                slide, model, cells, grid, batch_size=batch_size, num_workers=workers
            )
        )
        seconds = time.perf_counter() - start
    finally:
        if previous is None:
            os.environ.pop(THREADS_ENV_VAR, None)
        else:
            os.environ[THREADS_ENV_VAR] = previous
    assert n == len(cells)
    return seconds


def time_seeds_way(slide, grid, model, cells, batch_size) -> float:
    """One read_region per patch from the read level, PIL resize, stack, forward: no threads,
    no prefetch."""
    level = slide.best_level_for_downsample(grid.read_downsample)
    ds = slide.level_downsamples[level]
    boxes = grid.cell_boxes(cells)
    start = time.perf_counter()
    for i in range(0, len(boxes), batch_size):
        patches = []
        for x, y, w, h in boxes[i : i + batch_size]:
            patch = slide.read_region(level, x, y, max(1, round(w / ds)), max(1, round(h / ds)))
            patches.append(resize_patch(patch, model.input_size))
        model.predict(np.stack(patches))
    return time.perf_counter() - start


def measure(slide_path: Path, model, args) -> dict:
    """The rates for one slide and model, each the best of ``--repeats`` runs (runs of a second
    or less vary by 10-20 % from run to run on a shared virtual machine), the ways interleaved
    round by round so that a change in the machine's load hits them alike; the forward passes,
    the pipelines and the per-patch way run once where the forward passes take more than
    ``--repeat-below`` seconds."""
    workers = args.workers
    cpu = model.device.type == "cpu"
    cores = available_cores()
    with Slide(slide_path) as slide:
        grid = make_grid(slide, model)
        cells = plan_cells(slide, grid)
        planned = len(cells)
        # Time at most what the forward pass gets through in --budget seconds (the first cells of
        # the plan, row by row), so a slow CPU still finishes in minutes; a GPU takes them all.
        split = cores if cpu else 0
        probe = (
            4
            * args.batch_size
            / time_forward(model, 4 * args.batch_size, args.batch_size, split=split)
        )
        cells = cells[: max(args.min_patches, int(probe * args.budget))]
        n = len(cells)
        repeats = args.repeats if n / probe <= args.repeat_below else 1
        reader = RegionReader(slide, grid, model.input_size, num_workers=workers)
        tiles = planned_tiles(reader, grid.read_boxes(cells))
        seeds_cells = cells[: min(n, args.seeds_patches)]
        time_reader(slide, grid, model, cells[: min(n, 2048)], args.batch_size, workers)  # warm-up
        best: dict[str, float | None] = {}
        tuners: list[dict] = []

        def keep(name, seconds):
            if seconds is not None:
                best[name] = min(best.get(name, math.inf), seconds)

        for round_ in range(args.repeats):  # decoding and reading take a second at most
            keep("a_decode_limit", time_decode(slide, reader.level, tiles, os.cpu_count(), False))
            with torch_threads(1 if cpu else None):  # the resize's one thread in a run
                keep("b_reader", time_reader(slide, grid, model, cells, args.batch_size, workers))
            if round_ >= repeats:
                continue
            if cpu:
                keep("c_forward_one_thread", time_forward(model, n, args.batch_size, threads=1))
                keep("c_forward_one_team", time_forward(model, n, args.batch_size, threads=cores))
                keep("c_forward_split", time_forward(model, n, args.batch_size, split=cores))
            else:
                keep("c_forward", time_forward(model, n, args.batch_size))
            keep("d_pipeline", time_pipeline(slide, grid, model, cells, args.batch_size, workers))
            tuners.append(thread_tuner(model).summary())
            if cpu:
                keep(
                    "d_pipeline_old_split",
                    time_pipeline(slide, grid, model, cells, args.batch_size, workers, "readers"),
                )
            keep("e_seeds_way", time_seeds_way(slide, grid, model, seeds_cells, args.batch_size))
        processes = time_decode(slide, reader.level, tiles, os.cpu_count(), True)
        level_dims = slide.level_dimensions[reader.level]
        downsample = slide.level_downsamples[reader.level]
    counts = {k: (len(seeds_cells) if k == "e_seeds_way" else n) for k in best}
    rates = {k: counts[k] / v for k, v in best.items()}
    if processes is not None:
        rates["a_decode_limit_processes"] = n / processes
    forwards = {k: v for k, v in rates.items() if k.startswith("c_forward")}
    rates["c_forward_best"] = c = max(forwards.values())
    b, d, e = rates["b_reader"], rates["d_pipeline"], rates["e_seeds_way"]
    ratios = {
        "pipeline_over_best_forward": d / c,
        "pipeline_over_reader": d / b,
        "pipeline_over_min_reader_forward": d / min(b, c),
        "pipeline_over_serial_bound": d / (1 / (1 / b + 1 / c)),
        "pipeline_over_seeds_way": d / e,
    }
    if "d_pipeline_old_split" in rates:
        ratios["pipeline_over_old_split"] = d / rates["d_pipeline_old_split"]
    if "a_decode_limit" in rates:
        ratios["reader_over_decode_limit"] = b / rates["a_decode_limit"]
    return {
        "slide": slide_path.name,
        "slide_level0": [grid.width, grid.height],
        "model": model.name,
        "patch": f"{model.config.patch_size_pixels} px at {model.config.spacing_um_px:g} µm/px",
        "read_level": reader.level,
        "read_level_size": list(level_dims),
        "read_level_downsample": round(downsample, 4),
        "crop_px_at_read_level": int(reader.crops(grid.read_boxes(cells[:1]))[0, 2]),
        "input_size": list(model.input_size),
        "planned_patches": planned,
        "patches_timed": n,
        "best_of": {"a, b": args.repeats, "c, d, e": repeats},
        "read_level_tiles_under_plan": len(tiles),
        "seeds_way_patches": len(seeds_cells),
        "cores": cores,
        "best_forward": max(forwards, key=forwards.__getitem__),
        "pipeline_tuner": tuners,  # what each timed run's fresh tuner measured and chose
        "patches_per_s": {k: round(v, 1) for k, v in sorted(rates.items())},
        "bottleneck": "read" if b < c else "forward",
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
    }


def goals_met(runs: list[dict]) -> dict:
    out = {}
    for run in runs:
        key = f"{run['slide']} / {run['model']}"
        r = run["ratios"]
        met = {}
        if "reader_over_decode_limit" in r:
            met["b >= 0.5 a"] = r["reader_over_decode_limit"] >= GOALS["reader_over_decode"]
        met["d >= 0.8 min(b, c)"] = (
            r["pipeline_over_min_reader_forward"] >= GOALS["pipeline_over_min"]
        )
        if run["bottleneck"] == "read":
            met["d >= 0.9 b (read-bound)"] = (
                r["pipeline_over_reader"] >= GOALS["read_bound_over_reader"]
            )
            met["d >= 5 e (read-bound)"] = (
                r["pipeline_over_seeds_way"] >= GOALS["read_bound_over_seeds"]
            )
        else:
            met["d >= 0.9 best c (forward-bound)"] = (
                r["pipeline_over_best_forward"] >= GOALS["forward_bound_over_best_forward"]
            )
        out[key] = met
    return out


def two_core_limits(runs: list[dict], cores: int) -> dict:
    """Which goals this machine's cores cannot show, and why, from the run's own numbers."""
    if cores > 2:
        return {}
    out = {}
    for run in runs:
        if run["bottleneck"] != "read":
            continue
        rates = run["patches_per_s"]
        b, c1 = rates["b_reader"], rates["c_forward_one_thread"]
        cap = 1 / (1 + b / (cores * c1))
        out[f"{run['slide']} / {run['model']}"] = {
            "goal": "d >= 0.9 b (read-bound)",
            "bound_over_reader": round(cap, 3),
            "why": (
                f"the reader alone keeps all {cores} cores busy ({cores} x {1e6 / b:.1f} µs = "
                f"{cores * 1e6 / b:.0f} µs of core time per patch: decoding, cutting, resizing), "
                f"and the pipeline adds the model's own {1e6 / c1:.1f} µs per patch on one core "
                "(uint8 to float, forward) on the same cores, so it can reach at most "
                f"1 / (1 + b / ({cores} c1)) = {cap:.2f} b before any hand-off between its "
                "threads; on a machine with a core to spare for the model the bound is b itself"
            ),
        }
    return out


# --- the peer -----------------------------------------------------------------------------------
def _csv_rows(path: Path) -> int:
    with open(path) as f:
        return sum(1 for _ in f) - 1


def run_peer(
    venv: Path, slides: list[Path], model_dir: Path, work: Path, workers: int, timeout: float
) -> dict:
    """napari-metastasis predict vs wsinfer run, whole processes, same slides and model folder,
    each with its own thread defaults, as a user runs them (pinning both to one OpenMP thread,
    as this benchmark once did, measured neither tool as it runs)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    python = venv / "bin" / "python"
    if not python.exists():
        return {
            "ran": False,
            "why": f"no WSInfer venv at {venv} (benchmarks/setup_wsinfer_venv.sh)",
        }
    peer = Path(__file__).resolve().parent / "wsinfer_peer.py"
    check = subprocess.run([python, peer, "--check"], capture_output=True, text=True)
    if check.returncode:
        why = (check.stderr.strip().splitlines() or ["unknown"])[-1]
        return {"ran": False, "why": f"WSInfer does not start: {why}"}
    results = []
    for slide in slides:
        row = {"slide": slide.name}
        ours = work / f"ours-{slide.stem}"
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "from napari_metastasis.cli import main; raise SystemExit(main())",
             "predict", str(slide), "--out", str(ours), "--model", str(model_dir),
             "--batch-size", "64", "--workers", str(workers)],
            check=True, capture_output=True, cwd=Path(__file__).resolve().parent.parent, env=env,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        n = _csv_rows(ours / f"{slide.stem}.csv")
        row["napari_metastasis"] = {"patches": n, "seconds": round(seconds, 2),
                                    "patches_per_s": round(n / seconds, 1)}  # fmt: skip
        wsi_dir = work / f"wsi-{slide.stem}"
        wsi_dir.mkdir(exist_ok=True)
        link = wsi_dir / slide.name
        if not link.exists():
            link.symlink_to(slide)
        theirs = work / f"wsinfer-{slide.stem}"
        start = time.perf_counter()
        try:
            done = subprocess.run(
                [python, peer, "run", "--wsi-dir", str(wsi_dir), "--results-dir", str(theirs),
                 "--model-path", str(model_dir / "torchscript_model.pt"),
                 "--config", str(model_dir / "config.json"), "--batch-size", "64",
                 "--num-workers", str(workers)],
                capture_output=True, text=True, env=env, timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            row["wsinfer"] = {"failed": f"still running after {timeout:g} s: stopped"}
            results.append(row)
            continue
        seconds = time.perf_counter() - start
        csvs = list((theirs / "model-outputs-csv").glob("*.csv"))
        if done.returncode or not csvs:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            row["wsinfer"] = {"failed": tail}
        else:
            n = _csv_rows(csvs[0])
            row["wsinfer"] = {"patches": n, "seconds": round(seconds, 2),
                              "patches_per_s": round(n / seconds, 1)}  # fmt: skip
            row["speedup"] = round(
                row["napari_metastasis"]["patches_per_s"] / row["wsinfer"]["patches_per_s"], 2
            )
        results.append(row)
    return {"ran": True, "model": str(model_dir.name), "batch_size": 64, "workers": workers,
            "threads": "each tool's defaults", "runs": results}  # fmt: skip


def emit_report(report: dict, out: Path | None) -> None:
    """Print the JSON report, and write it to ``out`` when one is given."""
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=default_num_workers())
    parser.add_argument("--repeats", type=int, default=5, help="best of this many (short runs)")
    parser.add_argument(
        "--repeat-below",
        type=float,
        default=10,
        help="repeat the timings where the forward passes take at most this many seconds",
    )
    parser.add_argument("--seeds-patches", type=int, default=1024, help="patches for (e)")
    parser.add_argument(
        "--budget", type=float, default=15, help="time at most this many seconds of forward passes"
    )
    parser.add_argument(
        "--min-patches", type=int, default=2048, help="time at least this many patches"
    )
    parser.add_argument("--synthetic", type=Path, help="reuse this synthetic slide")
    parser.add_argument("--wsinfer-venv", type=Path, help="run the WSInfer peer from this venv")
    parser.add_argument("--peer-timeout", type=float, default=300, help="seconds per peer process")
    parser.add_argument("--note", default="", help="conditions of the run, kept in the JSON")
    parser.add_argument("--out", type=Path, help="write the JSON here (also printed)")
    args = parser.parse_args()

    started = time.perf_counter()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp = Path(tmp)
        synthetic = args.synthetic
        if synthetic is None or not synthetic.exists():
            synthetic = write_synthetic_slide(args.synthetic or tmp / "synthetic-50k.tiff")
        bundled = load_model("default", device=args.device)
        read_bound_dir = write_read_bound_model(tmp / "read-bound")
        read_bound = load_model(read_bound_dir, device=args.device)
        runs = []
        for slide in (SAMPLE_SLIDE, synthetic):
            for model in (bundled, read_bound):
                runs.append(measure(slide, model, args))
                print(json.dumps(runs[-1]), file=sys.stderr)
        peer = (
            run_peer(
                args.wsinfer_venv,
                [SAMPLE_SLIDE, synthetic],
                bundled.folder,
                tmp,
                2,
                args.peer_timeout,
            )
            if args.wsinfer_venv
            else {"ran": False, "why": "not asked (--wsinfer-venv)"}
        )
    device = bundled.device
    report = {
        "benchmark": "bench_predict",
        "conditions": args.note,
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "reader_threads": args.workers,
        "batch_size": args.batch_size,
        "torch": torch.__version__,
        "load_average_1min": {
            "before": round(load_before, 2) if load_before is not None else None,
            "after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },
        "seconds": round(time.perf_counter() - started, 1),
        "synthetic_slide": f"{SYNTHETIC_SIZE[0]} x {SYNTHETIC_SIZE[1]} px at {SYNTHETIC_MPP} "
        "µm/px, JPEG 256-px tiles, 5 levels (exact halvings), tissue in an ellipse",
        "goals": GOALS,
        "runs": runs,
        "goals_met": goals_met(runs),
        "two_core_limits": two_core_limits(runs, available_cores()),
        "peer": peer,
    }
    emit_report(report, args.out)


if __name__ == "__main__":
    main()
