"""``napari-metastasis view SLIDE``: open napari with the slide and the detection dock widget."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..slide import Slide

PLUGIN = "napari-metastasis"
WIDGET = "Metastasis detection"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("view", help="open a slide in napari with the detection widget")
    parser.add_argument("slide", type=Path, nargs="?", help="slide to open (default: the sample)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._sample_data import SAMPLE_SLIDE

    path = args.slide or SAMPLE_SLIDE
    with Slide(path) as slide:  # fail fast, with our message, before a window opens
        slide.check_readable()
    import napari

    viewer = napari.Viewer(title=f"napari-metastasis: {Path(path).name}")
    viewer.open(str(path), plugin=PLUGIN)
    viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    napari.run()
    return 0
