"""Reader benchmark: time to open a slide, and a 2048x2048 view through the dask pyramid vs OpenSlide.

The pyramid view is read the way napari reads it (``np.asarray(level[y0:y1, x0:x1])`` with dask
task fusion off, dask's default threaded scheduler), the baseline is
``np.asarray(OpenSlide.read_region(...))`` of the same pixels. Each repetition uses fresh handles
(OpenSlide's tile cache starts cold for both), the order of the two alternates, and the ratio is
pyramid / OpenSlide of the medians, measured in the same run. Views are taken both aligned with
the blocks and misaligned (a real napari view is anywhere, so it touches partial blocks).

Slides: the bundled CMU-1-Small-Region.svs (JPEG, 240 px tiles) and, unless --no-synthetic, a
16384 px square pyramidal TIFF written to a temporary folder from JPEG tiles of that slide.

    python benchmarks/bench_reader.py --out resources/bench_reader.json
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dask
import numpy as np
import openslide
import tifffile
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from napari_metastasis._napari.sample_data import SAMPLE_SLIDE  # noqa: E402
from napari_metastasis._napari.slide_reader import read_slide  # noqa: E402
from napari_metastasis.outputs.atomic import write_text_atomic  # noqa: E402
from napari_metastasis.slides.pyramid import build_pyramid  # noqa: E402
from napari_metastasis.slides.slide import Slide  # noqa: E402

VIEW = 2048
GOAL = 1.2


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_open(path: Path, repeats: int) -> float:
    """Slide + corruption check + lazy pyramid + layer metadata: what the napari reader does."""
    return median_time(lambda: read_slide(path), repeats)


def napari_view(level, x: int, y: int) -> np.ndarray:
    with dask.config.set({"optimization.fuse.active": False}):
        return np.asarray(level[y : y + VIEW, x : x + VIEW])


def _timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    pixels = fn()
    return pixels, time.perf_counter() - wall, time.process_time() - cpu


def compare_view(
    path: Path, x: int, y: int, repeats: int, chunks: tuple[int, int] | None = None
) -> dict:
    """The same 2048 px view read both ways, ``repeats`` times with fresh handles each time.

    Ratios are medians of per-repetition ratios (the two reads of a repetition run back to back,
    so load from other processes affects both alike). CPU time (all threads of this process)
    shows the work done; wall time includes what dask's threads win back in parallel.
    """
    rows = []
    for rep in range(repeats):
        slide = Slide(path)
        level0 = build_pyramid(slide, chunks=chunks).levels[0]
        osr = openslide.OpenSlide(str(path))
        reads = {
            "pyramid": lambda level0=level0: napari_view(level0, x, y),
            "openslide": lambda osr=osr: np.asarray(osr.read_region((x, y), 0, (VIEW, VIEW))),
        }
        order = ["pyramid", "openslide"] if rep % 2 else ["openslide", "pyramid"]
        timed = {name: _timed(reads[name]) for name in order}
        if rep == 0 and not np.array_equal(timed["pyramid"][0], timed["openslide"][0][..., :3]):
            raise AssertionError(f"{path.name}: pyramid and OpenSlide disagree at ({x}, {y})")
        rows.append({name: t[1:] for name, t in timed.items()})
        osr.close()
        slide.close()
    chunk_rows, chunk_cols = level0.chunks[:2]
    covered = [_covered(chunks, start) for chunks, start in ((chunk_rows, y), (chunk_cols, x))]

    def med(values):
        return round(statistics.median(values), 4)

    return {
        "x": x,
        "y": y,
        "chunks": [chunk_rows[0], chunk_cols[0]],
        "aligned": covered[0] == VIEW and covered[1] == VIEW,
        "pixels_read": round(covered[0] * covered[1] / VIEW**2, 3),  # blocks under the view
        "pyramid_s": med(r["pyramid"][0] for r in rows),
        "openslide_s": med(r["openslide"][0] for r in rows),
        "ratio": round(statistics.median(r["pyramid"][0] / r["openslide"][0] for r in rows), 3),
        "cpu_ratio": round(statistics.median(r["pyramid"][1] / r["openslide"][1] for r in rows), 3),
    }


def _covered(chunks: tuple[int, ...], start: int) -> int:
    """Pixels along one axis of the blocks a VIEW-long read from ``start`` touches."""
    bounds = np.concatenate([[0], np.cumsum(chunks)])
    first = np.searchsorted(bounds, start, side="right") - 1
    last = np.searchsorted(bounds, start + VIEW, side="left")
    return int(bounds[last] - bounds[first])


def compare_pan(path: Path, x: int, y: int, steps: int, repeats: int) -> dict:
    """Panning right by a quarter view per step, as napari does it (with its dask cache).

    OpenSlide keeps its own tile cache between the reads of one handle, so both sides reuse
    what they decoded; the pyramid reuses whole blocks through napari's opportunistic cache.
    """
    from napari.utils._dask_utils import configure_dask

    rows, step = [], VIEW // 4
    for rep in range(repeats):
        slide = Slide(path)
        levels = build_pyramid(slide).levels
        indexer = configure_dask(levels)
        osr = openslide.OpenSlide(str(path))

        def through_pyramid(levels=levels, indexer=indexer):
            with indexer():
                for i in range(steps):
                    np.asarray(levels[0][y : y + VIEW, x + i * step : x + i * step + VIEW])

        def through_openslide(osr=osr):
            for i in range(steps):
                np.asarray(osr.read_region((x + i * step, y), 0, (VIEW, VIEW)))

        reads = {"pyramid": through_pyramid, "openslide": through_openslide}
        order = ["pyramid", "openslide"] if rep % 2 else ["openslide", "pyramid"]
        rows.append({name: _timed(reads[name])[1] for name in order})
        osr.close()
        slide.close()
    return {
        "x": x,
        "y": y,
        "steps": steps,
        "pyramid_s": round(statistics.median(r["pyramid"] for r in rows), 4),
        "openslide_s": round(statistics.median(r["openslide"] for r in rows), 4),
        "ratio": round(statistics.median(r["pyramid"] / r["openslide"] for r in rows), 3),
    }


def write_synthetic_slide(path: Path, size: int = 16384, tile: int = 256) -> Path:
    """A pyramidal JPEG TIFF built from 64 tiles of the sample slide's tissue, repeated.

    tifffile cannot JPEG-encode without imagecodecs, so PIL encodes the tiles (JFIF, YCbCr 4:2:0,
    the TIFF default) and the page tags are set to JPEG / YCbCr afterwards.
    """
    with Slide(SAMPLE_SLIDE) as sample:
        sources = [
            sample.read_region(0, 300 + (i % 8) * tile, 300 + (i // 8) * tile, tile, tile)
            for i in range(64)
        ]
    encoded = []
    for pixels in sources:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        encoded.append(buffer.getvalue())
    sizes = [size]
    while sizes[-1] > 1024:
        sizes.append(sizes[-1] // 2)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for index, side in enumerate(sizes):
            count = math.ceil(side / tile) ** 2
            tw.write(
                (encoded[(i * 7 + index) % len(encoded)] for i in range(count)),
                shape=(side, side, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression="zlib",  # placeholder: rewritten to JPEG below
                photometric="rgb",
                subfiletype=1 if index else 0,
                resolution=(40_000.0, 40_000.0),  # 0.25 µm/px
                resolutionunit=3,
                metadata=None,
            )
    with tifffile.TiffFile(path, mode="r+b") as tf:
        for page in tf.pages:
            page.tags["Compression"].overwrite(7)  # JPEG
            page.tags["PhotometricInterpretation"].overwrite(6)  # YCbCr
    return path


def bench_slide(path: Path, views: list[tuple[int, int]], repeats: int) -> dict:
    with Slide(path) as slide:
        info = {
            "dimensions": list(slide.dimensions),
            "levels": slide.level_count,
            "tile": slide.tile_size(0),
        }
    info["open_s"] = round(time_open(path, repeats), 4)
    info["views"] = [compare_view(path, x, y, repeats) for x, y in views]
    info["median_ratio"] = round(statistics.median(v["ratio"] for v in info["views"]), 3)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-synthetic", action="store_true", help="only the bundled slide")
    args = parser.parse_args(argv)

    results: dict = {
        "what": "2048x2048 level-0 view: napari-style dask read vs OpenSlide read_region",
        "goal_ratio": GOAL,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "openslide": openslide.__library_version__,
            "dask": dask.__version__,
        },
        "slides": {},
    }
    # Block-aligned, and misaligned by an odd amount (touches partial blocks on every side).
    results["slides"][SAMPLE_SLIDE.name] = bench_slide(
        SAMPLE_SLIDE, [(0, 0), (131, 517)], args.repeats
    )
    if not args.no_synthetic:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_synthetic_slide(Path(tmp) / "synthetic-16384.tif")
            views = [(4096, 4096), (5000, 7001)]
            results["slides"]["synthetic-16384-jpeg.tif"] = bench_slide(path, views, args.repeats)
            results["pan"] = compare_pan(path, 5000, 7001, 8, max(3, args.repeats // 2))
            results["chunk_sweep"] = [
                compare_view(path, x, y, args.repeats, chunks=(side, side))
                for side in (256, 512, 768, 1024)
                for x, y in views
            ]
    views = [v for s in results["slides"].values() for v in s["views"]]
    aligned = [v["ratio"] for v in views if v["aligned"]]
    misaligned = [v["ratio"] for v in views if not v["aligned"]]
    summary = {
        "aligned_view_ratio": round(statistics.median(aligned), 3),
        "misaligned_view_ratio": round(statistics.median(misaligned), 3),
        "misaligned_extra_pixels": round(
            statistics.median(v["pixels_read"] for v in views if not v["aligned"]), 3
        ),
        "goal": GOAL,
    }
    if "pan" in results:
        summary["pan_ratio"] = results["pan"]["ratio"]
    summary["meets_goal"] = {
        key.removesuffix("_ratio"): summary[key] <= GOAL
        for key in summary
        if key.endswith("_ratio")
    }
    results["summary"] = summary
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
