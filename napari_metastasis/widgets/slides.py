"""Slides in the viewer: each in its own place, with its own µm/px, and what belongs to it.

A pathologist opens a second slide to compare it with the first: napari puts every layer at the
origin, so the second covered the first and the overlays of both lay on top of each other. A slide
closed and opened again came back in pixels (the µm/px the user gave it was lost) with its overlay
placed for µm. Hiding a slide left its overlay and regions on screen (issue 21, D3 and D5).

:class:`SlideKeeper` applies the slide's :class:`.state.SlideAnalysis` to a slide layer the moment it
is opened (its µm/px, its place: beside the slides already open, or where it lay before) and makes
hiding or closing a slide hide or remove its overlay and regions. Units: a layer's translate and
extent are world units (µm for calibrated slides).
"""

from __future__ import annotations

import contextlib
from typing import Any

from napari_metastasis._napari.helpers import (
    apply_slide_mpp,
    is_calibrated,
    slide_layers,
    slide_path_of,
    suggested_mpp,
    user_mpp,
)
from napari_metastasis.widgets.analysis_view import AnalysisViews
from napari_metastasis.widgets.frame import SlideFrame
from napari_metastasis.widgets.state import SlideAnalysis, SlideStates

#: Space left between slides placed side by side, as a fraction of the widest slide.
GAP_FRACTION = 0.05


def world_extent(layer: Any) -> tuple[float, float, float, float]:
    """(y0, x0, y1, x1) of a slide layer in world units."""
    frame = SlideFrame.from_layer(layer)
    (y0, x0), (y1, x1) = frame.to_world([[0, 0], [frame.width, frame.height]])  # type: ignore[arg-type]
    return float(y0), float(x0), float(y1), float(x1)


def beside(viewer: Any, layer: Any) -> tuple[float, float] | None:
    """A translate that puts ``layer`` to the right of every other slide (None: it is alone)."""
    others = [other for other in slide_layers(viewer) if other is not layer]
    if not others:
        return None
    extents = [world_extent(other) for other in others]
    right = max(e[3] for e in extents)
    top = min(e[0] for e in extents)
    widest = max([e[3] - e[1] for e in extents] + [world_extent(layer)[3]])
    return top, right + GAP_FRACTION * widest


class SlideKeeper:
    """Keeps each slide layer in step with its slide's state while it is open."""

    def __init__(self, viewer: Any, states: SlideStates, views: AnalysisViews):
        self.viewer = viewer
        self.states = states
        self.views = views

    def state_of(self, layer: Any) -> SlideAnalysis | None:
        return self.states.get(slide_path_of(layer))

    def opened(self, layer: Any) -> SlideAnalysis | None:
        """A slide layer was added: give it its state's µm/px and place (or record them)."""
        path = slide_path_of(layer)
        if not path:
            return None
        state = self.states.get_or_create(path)
        if state.mpp and state.mpp_source == "given" and not is_calibrated(layer):
            with contextlib.suppress(ValueError):  # what the user gave it before it was closed
                apply_slide_mpp(layer, state.mpp)
        self.record_calibration(layer)
        if state.placement is not None:
            layer.translate = (*tuple(layer.translate)[:-2], *state.placement)
        elif not any(tuple(layer.translate)[-2:]):
            place = beside(self.viewer, layer)
            if place is not None:
                layer.translate = (*tuple(layer.translate)[:-2], *place)
        state.placement = (float(layer.translate[-2]), float(layer.translate[-1]))
        layer.events.visible.connect(self._on_visible)
        return state

    def record_calibration(self, layer: Any) -> None:
        """The slide's µm/px and its source, in its state (the state outlives the layer)."""
        state = self.state_of(layer)
        if state is None:
            return
        given = user_mpp(layer)
        if given:
            state.mpp, state.mpp_source = given, "given"
            return
        value, source = suggested_mpp(layer)
        state.mpp, state.mpp_source = value, source

    def closed(self, layer: Any) -> None:
        """A slide layer was removed: its overlays and regions go with it (they come back, with
        the slide's state, when it is opened again)."""
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            layer.events.visible.disconnect(self._on_visible)
        path = slide_path_of(layer)
        if not path:
            return
        for view in self.views.for_slide(path):
            view.overlay.remove()
            view.regions_layer.remove()

    def _on_visible(self, event: Any) -> None:
        layer = getattr(event, "source", None)
        path = slide_path_of(layer)
        if layer is None or not path:
            return
        for view in self.views.for_slide(path):
            view.set_slide_visible(bool(layer.visible), self.views.style())
