"""``napari-metastasis info SLIDE``: print a slide's metadata as JSON and write its thumbnail."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show a slide's metadata and save a thumbnail",
        description="Print a slide's metadata as JSON (format, vendor, size and levels, µm per "
        "pixel and where it came from, objective power, associated images) and, with "
        "--thumbnail, save a PNG thumbnail.",
    )
    parser.add_argument(
        "slide", type=Path, nargs="?", help="Slide file or DICOM folder (or give --sample)."
    )
    parser.add_argument(
        "--sample", action="store_true", help="Describe the bundled sample slide instead."
    )
    parser.add_argument(
        "--thumbnail", type=Path, metavar="PNG", help="Write a PNG thumbnail to this file."
    )
    parser.add_argument(
        "--size",
        type=_thumbnail_size,
        default=1024,
        metavar="PX",
        help=f"The thumbnail's longer side in pixels, 1 to {MAX_THUMBNAIL}. Default: %(default)s.",
    )
    parser.set_defaults(func=run)


#: Largest thumbnail side: 16384² RGB is 768 MB in memory.
MAX_THUMBNAIL = 16384


def _thumbnail_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_THUMBNAIL:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_THUMBNAIL}, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from napari_metastasis.errors import MetastasisError
    from napari_metastasis.outputs.atomic import atomic_path
    from napari_metastasis.slides.slide import Slide

    if args.sample:
        from napari_metastasis._napari.sample_data import SAMPLE_SLIDE

        if args.slide is not None:
            raise MetastasisError("give a SLIDE or --sample, not both")
        args.slide = SAMPLE_SLIDE
    if args.slide is None:
        raise MetastasisError("no slide given: pass a SLIDE path, or --sample")
    with Slide(args.slide) as slide:
        print(json.dumps(slide.metadata(), indent=2))
        if args.thumbnail:
            with atomic_path(args.thumbnail) as tmp:
                Image.fromarray(slide.thumbnail(args.size)).save(tmp, format="PNG")
            print(f"thumbnail written to {args.thumbnail}")
    return 0
