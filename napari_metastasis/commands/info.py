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
    parser.add_argument("--size", type=int, default=1024, help="thumbnail's longer side (px)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with Slide(args.slide) as slide:
        print(json.dumps(slide.metadata(), indent=2))
        if args.thumbnail:
            with atomic_path(args.thumbnail) as tmp:
                Image.fromarray(slide.thumbnail(args.size)).save(tmp, format="PNG")
            print(f"thumbnail written to {args.thumbnail}")
    return 0
