"""The napari helpers every piece of glue needs, written once.

* **Slide layers**: an Image layer whose metadata has ``"slide"`` (as :mod:`napari_metastasis._napari.slide_reader`
  makes); finding the one in use, or the one of a given file.
* **Calibration and the µm/px rule**: a slide layer's scale is its level-0 µm per pixel (y, x) when
  the slide states a plausible one; otherwise it is 1 (world = pixels) until the user gives a µm/px
  (:func:`apply_slide_mpp`), which rescales the layer to µm. :func:`suggested_mpp` is what the widget
  pre-fills: the stated resolution, else the objective power's estimate, else nothing.
* **Notifications** from any thread (napari draws them with Qt widgets, which only the main thread
  may create), and napari's own repeated "Inconsistent units" notice shown once.
* **The camera**: the canvas size, what is in view, centring on a box.
* **Lazily re-added layers** (:class:`LazyLayer`): a layer the user may delete at any time and that
  the next explicit request adds again, instead of failing.
* **Layer order**: keeping a slide under what is drawn over it.

Library code never imports this module; only glue (``_reader``, ``_annotation_io``, ``widgets``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from napari_metastasis.slides.slide import MICRONS_PER_PIXEL_TIMES_POWER, is_plausible_mpp

logger = logging.getLogger(__name__)

UM = "µm"
#: Minimum extent of the view (µm) when the camera is centred on a small object.
MIN_VIEW_UM = 300.0


# --- slide layers ------------------------------------------------------------------------------
def is_slide_layer(layer: Any) -> bool:
    return type(layer).__name__ == "Image" and "slide" in (getattr(layer, "metadata", None) or {})


def slide_layers(viewer: Any) -> list[Any]:
    return [layer for layer in viewer.layers if is_slide_layer(layer)] if viewer else []


def find_slide_layer(viewer: Any) -> Any | None:
    """The selected slide layer, else the top-most one, else None."""
    if viewer is None:
        return None
    active = viewer.layers.selection.active
    if is_slide_layer(active):
        return active
    slides = slide_layers(viewer)
    return slides[-1] if slides else None


def slide_key(path: str | Path) -> str:
    """A stable identity for a slide file: its absolute path (what the user reopens)."""
    return str(Path(path).expanduser().resolve())


def slide_path_of(layer: Any) -> str | None:
    return (layer.metadata or {}).get("slide_path") if layer is not None else None


def layer_for_slide(viewer: Any, slide_path: str | Path) -> Any | None:
    """The slide layer showing the file ``slide_path``, if one is open."""
    key = slide_key(slide_path)
    for layer in slide_layers(viewer):
        path = slide_path_of(layer)
        if path and slide_key(path) == key:
            return layer
    return None


def current_viewer() -> Any | None:
    try:
        import napari

        return napari.current_viewer()
    except Exception:  # noqa: BLE001 - no Qt app / no viewer: callers carry on in pixels
        return None


# --- calibration -------------------------------------------------------------------------------
def slide_calibration(slide_layer: Any | None) -> tuple[tuple[float, float], bool]:
    """``((mpp_y, mpp_x), calibrated)`` of a slide layer; ``((1, 1), False)`` without one."""
    if slide_layer is None:
        return (1.0, 1.0), False
    scale = tuple(float(s) for s in slide_layer.scale[-2:])
    calibrated = bool(slide_layer.metadata["slide"].get("calibrated", scale != (1.0, 1.0)))
    return (scale[0], scale[1]), calibrated


def is_calibrated(slide_layer: Any | None) -> bool:
    return slide_calibration(slide_layer)[1]


def user_mpp(slide_layer: Any | None) -> float | None:
    """The µm/px the user gave an uncalibrated slide layer (None when the file's own is used)."""
    if slide_layer is None:
        return None
    value = slide_layer.metadata["slide"].get("user_mpp")
    return float(value) if value else None


def suggested_mpp(slide_layer: Any | None) -> tuple[float | None, str]:
    """What the µm/px field shows for a slide layer, and where the number comes from.

    The file's plausible resolution ("metadata"), the value given earlier ("given"), the objective
    power's estimate (10 / power: 0.5 µm/px at 20x), or (None, "none").
    """
    if slide_layer is None:
        return None, "none"
    meta = slide_layer.metadata["slide"]
    given = user_mpp(slide_layer)
    if given:
        return given, "given"
    if meta.get("mpp") and meta.get("mpp_source") == "metadata":
        mpp_y, mpp_x = meta["mpp"]
        return (float(mpp_y) + float(mpp_x)) / 2, "metadata"
    power = meta.get("objective_power")
    if power and power > 0:
        return MICRONS_PER_PIXEL_TIMES_POWER / float(power), "objective power"
    return None, "none"


def apply_slide_mpp(slide_layer: Any, mpp: float) -> bool:
    """Give an uncalibrated slide layer a µm/px: its scale and units become µm.

    Returns whether anything changed. A slide whose file states a usable resolution keeps it (the
    file is the authority; ``predict --mpp`` is there to override it on purpose).
    """
    if not is_plausible_mpp(mpp):
        raise ValueError(f"{mpp} µm/px is not a plausible slide resolution")
    meta = slide_layer.metadata["slide"]
    if meta.get("mpp_source") == "metadata":
        return False
    if meta.get("user_mpp") == mpp and meta.get("calibrated"):
        return False
    meta["user_mpp"] = float(mpp)
    meta["calibrated"] = True
    slide_layer.scale = (*tuple(slide_layer.scale)[:-2], mpp, mpp)
    slide_layer.units = (UM,) * len(slide_layer.scale)
    return True


def layer_units(slide_layer: Any | None) -> dict:
    """``units=`` for a layer drawn over a slide layer (napari wants units consistent)."""
    if slide_layer is None or not is_calibrated(slide_layer):
        return {}
    return {"units": (UM, UM)}


# --- notifications -----------------------------------------------------------------------------
def notify(severity: str, message: str) -> None:
    """Show ``message`` as a napari notification ("info", "warning" or "error"), from any thread."""
    logger.debug("%s: %s", severity, message)  # napari echoes notifications to the console
    try:
        from napari.utils.notifications import Notification, notification_manager
    except ImportError:  # pragma: no cover - napari is a dependency
        return
    notification = Notification(message, severity=severity)
    if threading.current_thread() is threading.main_thread():
        notification_manager.dispatch(notification)
        return
    try:
        from qtpy.QtCore import QCoreApplication
        from superqt.utils import ensure_main_thread

        if QCoreApplication.instance() is not None:
            ensure_main_thread(notification_manager.dispatch)(notification)
            return
    except ImportError:  # pragma: no cover - no Qt: nothing to draw on
        pass
    notification_manager.dispatch(notification)


def info(message: str) -> None:
    notify("info", message)


def warn(message: str) -> None:
    notify("warning", message)


def error(message: str) -> None:
    notify("error", message)


#: napari notices that repeat on every redraw of a viewer holding a µm slide next to a px one.
ONCE_PER_SESSION = ("Inconsistent units across layers",)


def show_repeated_notices_once() -> None:
    """Let napari's notices in :data:`ONCE_PER_SESSION` through once; later repeats go to the log.

    napari re-announces inconsistent layer units on every world-unit update (each layer added,
    moved or rescaled), which buries the viewer in identical toasts when a calibrated slide and an
    uncalibrated one are open together. Idempotent.
    """
    from napari.utils.notifications import notification_manager

    dispatch = notification_manager.dispatch
    if getattr(dispatch, "_shows_repeats_once", False):
        return
    seen: set[str] = set()

    def dispatch_once(notification: Any) -> Any:
        text = str(getattr(notification, "message", ""))
        for prefix in ONCE_PER_SESSION:
            if text.startswith(prefix):
                if prefix in seen:
                    logger.info("%s (repeated notice not shown)", text)
                    return None
                seen.add(prefix)
        return dispatch(notification)

    dispatch_once._shows_repeats_once = True  # type: ignore[attr-defined]
    notification_manager.dispatch = dispatch_once


# --- the camera --------------------------------------------------------------------------------
def camera(viewer: Any) -> Any:
    """napari ≥ 0.9 keeps the camera on the scene; older versions on the viewer."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def canvas_size(viewer: Any) -> tuple[float, float]:
    """(height, width) of the canvas view box in screen pixels (one box when in grid mode)."""
    canvas = getattr(viewer, "canvas", None)
    if canvas is not None and hasattr(canvas, "viewbox_size"):
        size = canvas.viewbox_size(viewer.layers)
    elif canvas is not None and hasattr(canvas, "size"):
        size = canvas.size
    else:
        size = viewer._canvas_size  # napari < 0.9
    return float(size[0]), float(size[1])


def visible_world_rect(viewer: Any) -> tuple[float, float, float, float]:
    """(y0, x0, y1, x1) in world units (µm) of what the 2D canvas shows right now.

    The camera puts ``center`` in the middle of the canvas and draws ``zoom`` screen pixels per
    world unit, so the canvas spans size / zoom world units around the centre.
    """
    cam = camera(viewer)
    cy, cx = (float(c) for c in cam.center[-2:])
    height, width = canvas_size(viewer)
    half_h, half_w = height / (2 * cam.zoom), width / (2 * cam.zoom)
    return cy - half_h, cx - half_w, cy + half_h, cx + half_w


def centre_camera_on(
    viewer: Any,
    bounds_yx: tuple[float, float, float, float],
    margin: float = 2.0,
    min_extent: float = MIN_VIEW_UM,
) -> None:
    """Centre the camera on a (y0, x0, y1, x1) world box and zoom so it fills most of the canvas."""
    y0, x0, y1, x1 = bounds_yx
    height, width = canvas_size(viewer)
    extent_y = max((y1 - y0) * margin, min_extent)
    extent_x = max((x1 - x0) * margin, min_extent)
    cam = camera(viewer)
    centre = ((y0 + y1) / 2, (x0 + x1) / 2)
    cam.center = (*tuple(cam.center)[:-2], *centre)
    cam.zoom = min(height / extent_y, width / extent_x)


# --- layers ------------------------------------------------------------------------------------
class LazyLayer:
    """A layer the viewer shows on request and the user may delete at any time.

    Subclasses implement :meth:`build` (a new napari layer, not yet in a viewer: napari's layer
    models need no Qt, so this may run on a worker thread, which is where most of the time of
    making a layer goes) and may override :meth:`_attached`. :attr:`layer` adds it again if it
    is gone; :meth:`adopt` adds one built elsewhere; :meth:`is_shown` and :attr:`was_removed`
    tell apart "never made" from "deleted by the user" (which only an explicit action undoes).
    """

    def __init__(self, viewer: Any, name: str):
        self.viewer = viewer
        self.name = name
        self.visible = True
        self._layer: Any = None

    def build(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _attached(self, layer: Any) -> None:
        """Called once the layer is in the viewer (connect its events here)."""

    def adopt(self, layer: Any, select: bool = True) -> Any:
        """Show ``layer`` (from :meth:`build`), unless one is shown already. ``select=False``
        leaves the selected layer selected (napari selects a layer it inserts, which swaps the
        layer controls twice when the caller selects the slide again)."""
        if not self.is_shown():
            layers = self.viewer.layers
            activate = getattr(layers, "_activate_on_insert", None)
            if not select and activate is not None:
                layers._activate_on_insert = False
            try:
                self._layer = self.viewer.add_layer(layer)
            finally:
                if not select and activate is not None:
                    layers._activate_on_insert = activate
            self._attached(self._layer)
        return self._layer

    @property
    def layer(self) -> Any:
        """The layer, added to the viewer if it is not there (any more), without taking the
        selection from the layer the user selected."""
        if self._layer is None or self._layer not in self.viewer.layers:
            self._layer = None
            self.adopt(self.build(), select=False)
        return self._layer

    def is_shown(self) -> bool:
        return self._layer is not None and self._layer in self.viewer.layers

    @property
    def was_removed(self) -> bool:
        """The layer existed and the user deleted it."""
        return self._layer is not None and self._layer not in self.viewer.layers

    def set_visible(self, visible: bool) -> None:
        self.visible = bool(visible)
        if self.is_shown():
            self._layer.visible = self.visible

    def remove(self) -> None:
        if self.is_shown():
            self.viewer.layers.remove(self._layer)
        self._layer = None


def keep_below(viewer: Any, layer: Any, above: Iterable[Any]) -> None:
    """Move ``layer`` just under the lowest of ``above`` (layers drawn over it), if it is higher."""
    layers = viewer.layers
    if layer not in layers:
        return
    indices = [layers.index(other) for other in above if other is not None and other in layers]
    if not indices:
        return
    lowest = min(indices)
    current = layers.index(layer)
    if current > lowest:
        layers.move(current, lowest)


def names(layers: Sequence[Any]) -> list[str]:
    return [layer.name for layer in layers]
