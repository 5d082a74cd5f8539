"""``napari-metastasis predict SLIDE ... --out DIR``: classify slides headless and write, per slide:

* ``<stem>.csv``: one row per patch, WSInfer's columns ``minx,miny,width,height,prob_<class>`` in
  level-0 pixels, so WSInfer/QuPath tooling reads it;
* ``<stem>.geojson``: the regions at ``--threshold``, as QuPath annotations (level-0 pixels);
* ``<stem>.heatmap.png``: a thumbnail with the probability map over it;
* ``<stem>.prob.tiff``: the probability grid with its geometry, which the viewer reloads.

Every file is written atomically. A slide that fails gets one line on stderr naming it and the
reason; the other slides are still processed, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..annotations.geojson import write_geojson
from ..annotations.model import TUMOUR_CLASS, TUMOUR_CLASSES
from ..contours import probability_contours, regions_to_annotations
from ..engine import DEFAULT_BATCH_SIZE, DEFAULT_TISSUE_MIN_FRACTION, predict_slide, write_patch_csv
from ..errors import MetastasisError
from ..heatmap import render_heatmap, save_heatmap
from ..models import DEFAULT_MODEL, DEVICE_CHOICES, LoadedModel, load_model
from ..slide import Slide


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify slides with a model; write CSV, GeoJSON, heatmap and probability grid",
        description=__doc__.split("\n\n", 1)[0].split(": ", 1)[-1],
    )
    parser.add_argument(
        "slides", nargs="*", type=Path, metavar="SLIDE", help="slide files or DICOM folders"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="DIR|NAME",
        help="model folder or name (see `models`)",
    )
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE, metavar="N")
    parser.add_argument(
        "--threshold", type=_probability, default=0.5, help="probability for regions (default 0.5)"
    )
    parser.add_argument(
        "--region", type=_region, metavar="X,Y,W,H", help="only this level-0 pixel rectangle"
    )
    parser.add_argument(
        "--mpp",
        type=_positive_float,
        metavar="UM",
        help="level-0 µm per pixel (overrides the file's)",
    )
    parser.add_argument(
        "--sample", action="store_true", help="also run on the bundled sample slide"
    )
    parser.add_argument(
        "--tissue-min-fraction",
        type=_fraction,
        default=DEFAULT_TISSUE_MIN_FRACTION,
        metavar="F",
        help="skip patches with less tissue than this (0 classifies every patch)",
    )
    parser.add_argument("--positive-class", metavar="NAME", help="class shown in the heatmap")
    parser.add_argument(
        "--min-area", type=float, default=0.0, metavar="UM2", help="smallest region (µm²)"
    )
    parser.add_argument("--workers", type=_positive_int, metavar="N", help="reader threads")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    slides = list(args.slides)
    if args.sample:
        from .._sample_data import SAMPLE_SLIDE

        slides.append(SAMPLE_SLIDE)
    if not slides:
        raise MetastasisError("no slide given: pass one or more SLIDE paths, or --sample")
    model = load_model(args.model, device=args.device, positive_class=args.positive_class)
    print(
        f"model {model.name} ({model.folder}): {model.config.patch_size_pixels} px at "
        f"{model.config.spacing_um_px:g} µm/px on {model.device}",
        file=sys.stderr,
    )
    failures = 0
    used_stems: set[str] = set()
    for path in slides:
        try:
            outputs = predict_one(path, model, args, used_stems)
        except MetastasisError as exc:
            failures += 1
            print(f"napari-metastasis predict: error: {exc}", file=sys.stderr)
        except Exception as exc:  # a bad file must not stop the other slides
            failures += 1
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            print(
                f"napari-metastasis predict: error: {path}: {type(exc).__name__}: {detail}",
                file=sys.stderr,
            )
        else:
            print(outputs)
    if failures:
        print(
            f"napari-metastasis predict: {failures} of {len(slides)} slides failed", file=sys.stderr
        )
    return 1 if failures else 0


def predict_one(path: Path, model: LoadedModel, args: argparse.Namespace, used: set[str]) -> str:
    """Classify one slide and write its four outputs; returns a one-line summary."""
    with Slide(path, mpp=args.mpp) as slide:
        slide.check_readable()
        resolution = slide.require_resolution()
        if resolution.source == "objective power":
            print(
                f"napari-metastasis predict: warning: {slide.path.name}: no usable µm/px in the "
                f"file; assuming {resolution.mpp:g} µm/px from its {slide.objective_power:g}x "
                "objective (pass --mpp to set it)",
                file=sys.stderr,
            )
        stem = _unique_stem(slide.name, used)
        with tqdm(
            desc=slide.name, unit="patch", file=sys.stderr, mininterval=0.5, delay=0.5
        ) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = predict_slide(
                slide,
                model,
                region=args.region,
                tissue_min_fraction=args.tissue_min_fraction,
                resolution=resolution,
                batch_size=args.batch_size,
                num_workers=args.workers,
                progress=progress,
            )
        regions = probability_contours(result.prob_map, args.threshold, args.min_area)
        result.prob_map.extra.update(
            resolution_source=resolution.source,
            threshold=args.threshold,
            model_folder=str(model.folder),
        )
        out: Path = args.out
        write_patch_csv(result.table, out / f"{stem}.csv")
        classification = (
            TUMOUR_CLASS if model.positive_class.lower() in TUMOUR_CLASSES else model.positive_class
        )
        write_geojson(
            out / f"{stem}.geojson",
            regions_to_annotations(regions, classification, args.threshold),
            mpp=resolution,
        )
        save_heatmap(out / f"{stem}.heatmap.png", render_heatmap(slide, result.prob_map, regions))
        result.prob_map.save(out / f"{stem}.prob.tiff")
    top = result.prob_map.max_probability()
    return (
        f"{slide.name}: {result.n_done} patches, max {model.positive_class} probability "
        f"{top:.3f}, {len(regions)} regions >= {args.threshold:g} -> {out / stem}.*"
    )


def _unique_stem(name: str, used: set[str]) -> str:
    stem, n = name, 2
    while stem in used:
        stem, n = f"{name}_{n}", n + 1
    used.add(stem)
    return stem


# --- argument types ---------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _probability(text: str) -> float:
    value = _fraction(text)
    if value == 0:
        raise argparse.ArgumentTypeError("threshold must be greater than 0")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _region(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected X,Y,W,H in level-0 pixels, got {text!r}"
        ) from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return x, y, w, h
