"""``napari-metastasis info SLIDE``: print a slide's metadata and write its thumbnail."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from ..atomic import atomic_path
from ..slide import Slide


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="show a slide's metadata and save a thumbnail")
    parser.add_argument("slide", type=Path)
    parser.add_argument("--thumbnail", type=Path, help="write a PNG thumbnail here")
    parser.add_argument(
        "--size",
        type=_thumbnail_size,
        default=1024,
        help=f"thumbnail's longer side (px, 1 to {MAX_THUMBNAIL})",
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
    with Slide(args.slide) as slide:
        print(json.dumps(slide.metadata(), indent=2))
        if args.thumbnail:
            with atomic_path(args.thumbnail) as tmp:
                Image.fromarray(slide.thumbnail(args.size)).save(tmp, format="PNG")
            print(f"thumbnail written to {args.thumbnail}")
    return 0
