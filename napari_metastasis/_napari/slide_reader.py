"""npe2 reader: a whole-slide image becomes one lazy multiscale RGB Image layer in µm.

Errors never reach napari as exceptions: napari would wrap them in a generic "Tried opening with
napari-metastasis, but failed" notification (or a reader-choice dialog) with a traceback button.
Instead the reader shows the project's one-sentence message as a napari error notification and
returns npe2's "read, but no layers" value ``[(None,)]``, so the viewer carries on unchanged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from napari_metastasis._napari.helpers import notify, show_repeated_notices_once
from napari_metastasis.errors import MetastasisError, SlideError
from napari_metastasis.errors.policy import user_message
from napari_metastasis.slides.pyramid import build_pyramid
from napari_metastasis.slides.slide import (
    WSI_ONLY_EXTENSIONS,
    Slide,
    detect_format,
    looks_like_slide,
)

LayerData = tuple
#: npe2's value for "the reader handled the path and made no layers" (napari adds nothing).
NO_LAYERS: list[LayerData] = [(None,)]

logger = logging.getLogger(__name__)


def get_slide_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Claim paths that are slides; decline anything else so other readers can try.

    ``.tif``/``.tiff``/``.dcm`` files are declined unless OpenSlide recognises them (plain TIFFs,
    CT or MR DICOM images belong to other readers); a file with a slide-only extension (``.svs``,
    ``.ndpi``…) is claimed even when broken, so the user learns why it does not open.
    """
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    path = str(path)
    if not looks_like_slide(path):
        return None
    if detect_format(path) is None and Path(path).suffix.lower() not in WSI_ONLY_EXTENSIONS:
        return None
    return read_slide_layers


def read_slide_layers(path: str | list[str]) -> list[LayerData]:
    """The npe2 reader function: layers for ``path``, or a notification saying why not."""
    if isinstance(path, list | tuple):
        path = path[0]
    show_repeated_notices_once()  # a µm slide beside a px one: napari's units notice, once
    try:
        return read_slide(path)
    except MetastasisError as exc:
        notify("error", str(exc))
    except Exception as exc:  # a library failure we did not foresee: still no traceback dump
        logger.exception("opening %s failed", path)
        notify("error", f"{Path(path).name}: cannot open slide ({user_message(exc)})")
    return NO_LAYERS


def read_slide(
    path: str | Path, *, mpp: float | None = None, to_srgb: bool = False
) -> list[LayerData]:
    """Open ``path`` lazily as layer data; raises the project's readable errors for broken slides."""
    slide = Slide(Path(path), mpp=mpp, to_srgb=to_srgb)
    try:
        slide.check_readable()
    except SlideError:
        slide.close()
        raise
    return [slide_layer_data(slide)]


def slide_layer_data(slide: Slide, *, warn_uncalibrated: bool = True) -> LayerData:
    """The (data, kwargs, "image") tuple for ``slide``: multiscale, RGB, scaled in µm.

    Uncalibrated slides get scale 1 and, unless ``warn_uncalibrated`` is False, a warning
    notification that measurements on them are in pixels. Blocks that fail to decode later are
    drawn white and reported once, so one corrupt tile does not break the viewer.
    """
    pyramid = build_pyramid(slide, on_error=_report_once(slide))
    metadata = slide.metadata()
    metadata["calibrated"] = pyramid.calibrated
    metadata["pyramid_levels"] = pyramid.slide_levels
    kwargs = {
        "name": slide.name,
        "rgb": True,
        "multiscale": True,
        "scale": pyramid.scale,
        "contrast_limits": (0, 255),
        "metadata": {"slide": metadata, "slide_path": str(slide.requested_path)},
    }
    if pyramid.calibrated:
        kwargs["units"] = "µm"
    elif warn_uncalibrated:
        notify(
            "warning",
            f"{slide.name}: no usable resolution ({slide.resolution_problem()}); the layer is "
            "in pixels, so lengths and areas measured on it are in pixels, not µm.",
        )
    return (pyramid.levels, kwargs, "image")


def _report_once(slide: Slide) -> Callable[[SlideError], None]:
    lock = threading.Lock()
    reported: list[SlideError] = []

    def on_error(exc: SlideError) -> None:
        logger.warning("%s", exc)
        with lock:
            if reported:
                return
            reported.append(exc)
        notify("warning", f"{exc}; the unreadable area of {slide.name} is shown white.")

    return on_error


__all__ = ["get_slide_reader", "read_slide", "read_slide_layers", "slide_layer_data"]
