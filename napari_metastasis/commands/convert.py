"""``napari-metastasis convert IN OUT``: annotations between GeoJSON, ASAP XML, NCRF JSON and CSV;
probability maps between OME-Zarr, OME-TIFF and the project's TIFF.

The input format is found from the extension and content (NCRF JSON by its positive/negative
lists); the output format from OUT's extension (.geojson/.json -> QuPath GeoJSON, .xml -> ASAP XML,
.csv -> summary) or ``--to``. Prints one line: what was read and written, features by type.

A probability map (``<stem>.prob.zarr`` or ``<stem>.prob.tiff`` from ``predict``) is written as
OME-TIFF with its physical pixel size (OUT ending in .ome.tif or .ome.tiff), OME-Zarr (.zarr) or the
project's own TIFF (.tif, .tiff).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from napari_metastasis.defaults import ANNOTATION_FORMATS
from napari_metastasis.errors import AnnotationError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert annotations between QuPath GeoJSON, ASAP XML, NCRF JSON and a CSV summary",
        description=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("input", type=Path, help="annotation file (.geojson, .json, .xml)")
    parser.add_argument("output", type=Path, help="file to write (.geojson, .json, .xml, .csv)")
    parser.add_argument(
        "--to", choices=ANNOTATION_FORMATS, help="output format (default: by OUT's extension)"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--mpp", type=float, help="µm per pixel, for areas in µm² (CSV needs it)")
    size.add_argument("--slide", type=Path, help="take µm per pixel from this slide")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.input.resolve() == args.output.resolve():
        raise AnnotationError(f"{args.output.name}: output would overwrite the input")
    from napari_metastasis._napari.map_reader import is_probability_map
    from napari_metastasis.annotations import AnnotationRepairWarning, GeometryRepairWarning
    from napari_metastasis.annotations.io import (
        FORMAT_NAMES,
        output_format,
        read_annotations_with_format,
        summarize,
        write_annotations,
    )
    from napari_metastasis.annotations.placement import (
        check_placement,
        placement_warning,
        repairs_summary,
    )

    if is_probability_map(args.input):
        return convert_map(args.input, args.output)
    out_kind = output_format(args.output, args.to)  # fail on a bad extension before reading
    mpp, dimensions = _mpp(args)
    if out_kind == "csv" and mpp is None:
        raise AnnotationError(
            f"{args.output.name}: a CSV summary gives sizes in µm and needs the slide's µm per "
            "pixel; give --mpp or --slide"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnnotationRepairWarning)
        annotations, in_kind = read_annotations_with_format(args.input)
        write_annotations(args.output, annotations, out_kind, mpp=mpp)
    repairs = [str(w.message) for w in caught if issubclass(w.category, GeometryRepairWarning)]
    for message in repairs:
        log.info("%s", message)
    for warning in caught:  # other changes (a skipped feature, a replaced character) one by one
        if not issubclass(warning.category, GeometryRepairWarning):
            print(f"note: {warning.message}", file=sys.stderr)
    summary = repairs_summary(repairs, args.input.name)
    if summary:
        print(f"note: {summary}", file=sys.stderr)
    if dimensions is not None:
        placement = check_placement(annotations, *dimensions)
        outside = placement_warning(
            placement, args.input.name, args.slide.name, mpp.mpp if mpp is not None else None
        )
        if outside:
            print(f"warning: {outside}", file=sys.stderr)
    print(
        f"{args.input.name} ({FORMAT_NAMES[in_kind]}) -> {args.output.name} "
        f"({FORMAT_NAMES[out_kind]}): {summarize(annotations)}"
    )
    return 0


def convert_map(source: Path, target: Path) -> int:
    from napari_metastasis.errors import MetastasisError
    from napari_metastasis.maps.store import load_map, save_ome_tiff, save_zarr

    prob_map = load_map(source)
    name = target.name.lower()
    if name.endswith((".ome.tif", ".ome.tiff")):
        save_ome_tiff(prob_map, target)
        kind = "OME-TIFF"
    elif name.endswith(".zarr"):
        save_zarr(prob_map, target)
        kind = "OME-Zarr"
    elif name.endswith((".tif", ".tiff")):
        prob_map.save(target)
        kind = "probability TIFF"
    else:
        raise MetastasisError(
            f"{target.name}: a probability map is written as .ome.tif(f), .zarr or .tif(f)"
        )
    rows, cols = prob_map.grid.shape
    print(
        f"{source.name} (probability map) -> {target.name} ({kind}): {rows} x {cols} cells of "
        f"{prob_map.grid.step_um:g} µm, {prob_map.n_analysed} analysed"
    )
    return 0


def _mpp(args: argparse.Namespace) -> tuple[Any, tuple[int, int] | None]:
    """(µm/px (a number, or the slide's Resolution) or None, the slide's level-0 (width, height) or
    None)."""
    if args.mpp is not None:
        if not args.mpp > 0:
            raise AnnotationError(f"--mpp must be a positive number, got {args.mpp}")
        return args.mpp, None
    if args.slide is not None:
        from napari_metastasis.slides.slide import Slide

        with Slide(args.slide) as slide:
            return slide.require_resolution(), slide.dimensions
    return None, None
