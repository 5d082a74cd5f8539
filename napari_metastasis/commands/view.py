"""``napari-metastasis view SLIDE``: open napari with the slide and the detection dock widget.

Without a display (a server, an SSH session without X forwarding) Qt would abort the process
(exit code 134) while creating the window; ``view`` checks first and says so in one sentence.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

PLUGIN = "napari-metastasis"
WIDGET = "Metastasis detection"
#: Qt platforms that need no display server.
HEADLESS_QT_PLATFORMS = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "view",
        help="open a slide in napari with the detection widget",
        description="Open napari with a slide and the Metastasis detection widget. Needs a "
        "display; on a server use `predict` instead.",
    )
    parser.add_argument(
        "slide",
        type=Path,
        nargs="?",
        help="Slide to open. Default: the bundled sample slide.",
    )
    parser.set_defaults(func=run)


def display_problem(
    environ: Mapping[str, str] = os.environ, platform: str = sys.platform
) -> str | None:
    """Why no window can open here (None when one can, as far as can be told without Qt)."""
    if not platform.startswith("linux"):
        return None  # macOS and Windows always have a display for a logged-in user
    qt_platform = environ.get("QT_QPA_PLATFORM", "")
    if qt_platform.startswith(HEADLESS_QT_PLATFORMS):
        return None
    wayland = environ.get("WAYLAND_DISPLAY", "")
    display = environ.get("DISPLAY", "")
    if wayland:
        return None
    if not display:
        return "there is no display to open a window on (DISPLAY is not set)"
    host, _, number = display.rpartition(":")
    if host in ("", "unix") and number:
        socket = Path("/tmp/.X11-unix") / f"X{number.split('.')[0]}"
        if not socket.exists():
            return f"there is no X server on display {display} ({socket} does not exist)"
    return None


def run(args: argparse.Namespace) -> int:
    from napari_metastasis._napari.sample_data import SAMPLE_SLIDE
    from napari_metastasis.errors import MetastasisError
    from napari_metastasis.slides.slide import Slide

    path = args.slide or SAMPLE_SLIDE
    with Slide(path) as slide:  # fail fast, with our message, before a window opens
        slide.check_readable()
    problem = display_problem()
    if problem:
        raise MetastasisError(
            f"{problem}; run `view` on a desktop (or over ssh -X), or use `predict` to analyse "
            "slides without a window"
        )
    import napari

    viewer = napari.Viewer(title=f"napari-metastasis: {Path(path).name}")
    viewer.open(str(path), plugin=PLUGIN)
    viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    napari.run()
    return 0
