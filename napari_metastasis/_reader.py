"""npe2 reader: a whole-slide image becomes one lazy multiscale RGB Image layer in µm."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .errors import UnsupportedSlideError
from .pyramid import build_pyramid
from .slide import Slide, looks_like_slide

LayerData = tuple


def get_slide_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Claim paths that look like slides; decline anything else so other readers can try."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not looks_like_slide(path):
        return None
    return read_slide


def slide_layer_data(slide: Slide) -> LayerData:
    """The (data, kwargs, "image") tuple for ``slide``: multiscale, RGB, scaled in µm."""
    pyramid = build_pyramid(slide)
    metadata = slide.metadata()
    metadata["calibrated"] = pyramid.calibrated
    kwargs = {
        "name": slide.name,
        "rgb": True,
        "multiscale": True,
        "scale": pyramid.scale,
        "metadata": {"slide": metadata, "slide_path": str(slide.requested_path)},
    }
    if pyramid.calibrated:
        kwargs["units"] = "µm"
    return (pyramid.levels, kwargs, "image")


def read_slide(path: str) -> list[LayerData]:
    """Open ``path`` lazily. Raises the project's readable errors for broken slides."""
    slide = Slide(Path(path))
    slide.check_readable()
    if not slide.resolution:
        _warn_uncalibrated(slide)
    return [slide_layer_data(slide)]


def _warn_uncalibrated(slide: Slide) -> None:
    stated = slide.raw_mpp[0]
    why = f"its stated {stated:g} µm/px is implausible" if stated else "it has no resolution"
    message = f"{slide.name}: {why}; the layer is in pixels, so measurements are in pixels, not µm."
    try:
        from napari.utils.notifications import show_warning

        show_warning(message)
    except ImportError:  # pragma: no cover - napari is a dependency
        import warnings

        warnings.warn(message, stacklevel=2)


__all__ = ["UnsupportedSlideError", "get_slide_reader", "read_slide", "slide_layer_data"]
