"""What the viewer shows of one analysis (one slide, one model): overlay, regions, edits.

An :class:`AnalysisView` owns the overlay (:mod:`.overlay`), the regions layer
(:mod:`.regions_layer`) and the pathologist's edits (:mod:`.region_edits`) of one
:class:`ProbabilityMap`; it turns the map into regions at a threshold
(:mod:`napari_metastasis.maps.contours`), highlights and frames a region, and draws itself in a
:class:`.display_controls.DisplayStyle`. It knows nothing about the controls or the run.
:class:`AnalysisViews` keeps one view per (slide, model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_metastasis._napari.colormaps import outline_colors
from napari_metastasis._napari.helpers import (
    centre_camera_on,
    keep_below,
    layer_for_slide,
    slide_key,
)
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.pipeline.answer import SlideAnswer, answer_slide
from napari_metastasis.widgets.display_controls import DisplayStyle
from napari_metastasis.widgets.frame import SlideFrame
from napari_metastasis.widgets.overlay import ProbabilityOverlay
from napari_metastasis.widgets.region_edits import RegionEdits
from napari_metastasis.widgets.regions_layer import RegionsLayer

ViewKey = tuple[str, str]  # (slide key, model name)


@dataclass
class AnalysisView:
    """The layers and edits showing one probability map over its slide."""

    slide_path: str
    slide_name: str
    prob_map: ProbabilityMap
    overlay: ProbabilityOverlay
    regions_layer: RegionsLayer
    edits: RegionEdits = field(default_factory=RegionEdits)
    regions: list = field(default_factory=list)  # after edits, in the layer's order
    labels: list = field(default_factory=list)
    selected: int | None = None  # index into ``regions`` of the highlighted region
    #: the map's answer the regions come from (before edits): regions, deposit rule, threshold
    answer: SlideAnswer | None = None
    #: whether the slide layer is shown: a hidden slide hides what is drawn over it
    slide_visible: bool = True

    @property
    def model_name(self) -> str:
        return self.prob_map.model_name

    @property
    def key(self) -> ViewKey:
        return slide_key(self.slide_path), self.model_name

    @property
    def frame(self) -> SlideFrame:
        return self.regions_layer.frame

    def layers(self) -> list[Any]:
        """The napari layers now shown (overlay, regions)."""
        return [v._layer for v in (self.overlay, self.regions_layer) if v.is_shown()]

    # --- the map -----------------------------------------------------------------------------
    def set_map(self, prob_map: ProbabilityMap, frame: SlideFrame | None = None) -> None:
        """Show another map in the same layers (layers are never churned needlessly: napari with
        software GL can crash drawing after a Shapes layer is removed and another added)."""
        self.prob_map = prob_map
        if frame is not None:
            self.regions_layer.frame = frame
        self.overlay.set_map(prob_map, frame)
        self.edits.clear()

    def place(self, frame: SlideFrame) -> None:
        """Draw over a slide layer in ``frame`` (a reopened slide, a slide moved beside another);
        the map and the pathologist's edits stay."""
        if frame == self.frame and frame == self.overlay.frame:
            return
        self.regions_layer.frame = frame
        self.overlay.set_map(self.prob_map, frame)
        self.regions_layer.place(frame)  # its shapes are drawn again by the next contours

    def reveal(self) -> None:
        """Show the layers as the display settings want them (they are put in the viewer
        hidden, so that napari's first drawing of a new layer is a step of its own)."""
        for layer in (self.overlay, self.regions_layer):
            if layer.is_shown() and layer._layer.visible != layer.visible:
                layer.set_visible(layer.visible)

    def slide_is_open(self) -> bool:
        return layer_for_slide(self.overlay.viewer, self.slide_path) is not None

    def refresh_overlay(self) -> None:
        """Show the map's current values; nothing while the slide is closed (a run on it goes
        on filling the map, which shows again when the slide is reopened)."""
        if self.slide_is_open():
            self.overlay.refresh()

    # --- regions -----------------------------------------------------------------------------
    def update_regions(self, threshold: float, min_area_um2: float) -> None:
        """Candidate regions of the map at ``threshold``, each decided by the map's deposit rule
        (:func:`~napari_metastasis.pipeline.answer.answer_slide`, as ``predict`` finds them), minus
        deletions, relabelled, drawn in the layer."""
        self.show_answer(answer_slide(self.prob_map, threshold, min_area_um2), threshold)

    def show_answer(self, answer: SlideAnswer, threshold: float | None = None) -> None:
        """Show the regions of ``answer`` (computed from this view's map, perhaps elsewhere)."""
        self.answer = answer
        self.show_regions(answer.regions, threshold)

    def regions_snapshot(self) -> ProbabilityMap:
        """A copy of the map to compute regions from on another thread (the run keeps writing)."""
        prob = self.prob_map
        return ProbabilityMap(
            prob.grid,
            prob.values.copy(),
            prob.class_name,
            prob.model_name,
            extra=dict(prob.extra),  # its deposit rule
        )

    def show_regions(self, regions: list, threshold: float | None = None) -> None:
        """Show regions computed from this view's map (edits applied, highlight kept)."""
        point = (
            self.regions[self.selected].polygon.representative_point()
            if self.selected is not None and self.selected < len(self.regions)
            else None
        )
        self.regions, self.labels = self.edits.apply(regions)
        self.regions_layer.show(self.regions, self.labels, threshold)
        # the highlighted region stays highlighted (as the region now covering the same spot)
        self.selected = next(
            (i for i, r in enumerate(self.regions) if point and r.polygon.intersects(point)), None
        )
        if self.selected is not None:
            self.regions_layer.highlight(self.regions[self.selected].uid)

    def delete(self, indices: list[int]) -> None:
        for i in indices:
            if 0 <= i < len(self.regions):
                self.edits.delete(self.regions[i])

    def relabel(self, indices: list[int], label: str) -> None:
        for i in indices:
            if 0 <= i < len(self.regions):
                self.edits.relabel(self.regions[i], label)

    def forget_deleted(self, ids: set[str]) -> None:
        """Regions the user removed with napari's own tools count as deleted."""
        for region in self.regions:
            if str(region.uid) in ids:
                self.edits.delete(region)

    def go_to(self, viewer: Any, index: int) -> bool:
        """Centre and zoom the camera on region ``index``, and highlight it."""
        if not 0 <= index < len(self.regions):
            return False
        region = self.regions[index]
        minx, miny, maxx, maxy = region.polygon.bounds
        (y0, x0), (y1, x1) = self.frame.to_world(np.array([[minx, miny], [maxx, maxy]]))
        centre_camera_on(viewer, (y0, x0, y1, x1))
        self.selected = index
        self.regions_layer.highlight(region.uid)
        return True

    # --- drawing -----------------------------------------------------------------------------
    def apply_style(self, style: DisplayStyle) -> None:
        self.overlay.set_visible(style.show_overlay and self.slide_visible)
        self.overlay.set_opacity(style.opacity)
        self.overlay.set_colormap(style.colormap, style.floor)
        self.regions_layer.set_colors(*outline_colors(style.colormap, style.threshold))
        self.regions_layer.set_visible(style.show_contours and self.slide_visible)

    def set_slide_visible(self, visible: bool, style: DisplayStyle) -> None:
        """The slide was hidden or shown: its overlay and regions follow."""
        self.slide_visible = bool(visible)
        self.overlay.set_visible(style.show_overlay and self.slide_visible)
        self.regions_layer.set_visible(style.show_contours and self.slide_visible)

    def keep_slide_below(self, viewer: Any, slide_layer: Any) -> None:
        """The slide under its overlay and regions (e.g. after it was closed and reopened)."""
        keep_below(viewer, slide_layer, self.layers())


class AnalysisViews:
    """One :class:`AnalysisView` per (slide, model), made when a map is first shown."""

    def __init__(self, viewer: Any, style: Callable[[], DisplayStyle]):
        self.viewer = viewer
        self.style = style
        self._views: dict[ViewKey, AnalysisView] = {}
        #: called with (view, region ids) when the user deletes regions in the layer itself
        self.on_user_delete: Callable[[AnalysisView, set[str]], None] | None = None

    def get(self, slide_path: str | None, model_name: str) -> AnalysisView | None:
        if not slide_path:
            return None
        return self._views.get((slide_key(slide_path), model_name))

    def for_slide(self, slide_path: str) -> list[AnalysisView]:
        key = slide_key(slide_path)
        return [view for (slide, _), view in self._views.items() if slide == key]

    def __iter__(self) -> Iterator[AnalysisView]:
        return iter(list(self._views.values()))

    def __len__(self) -> int:
        return len(self._views)

    def show(
        self, slide_path: str, prob_map: ProbabilityMap, slide_layer: Any, regions: bool = True
    ) -> AnalysisView:
        """The view showing ``prob_map``: new layers for a new map, the old ones otherwise.

        ``regions=False`` leaves the regions layer to the first contours.
        """
        view, new = self.prepare(slide_path, prob_map, slide_layer)
        if new:
            self.attach(view, slide_layer, view.overlay.build())
        if regions and not view.regions_layer.is_shown():
            _ = view.regions_layer.layer  # above the overlay
            if slide_layer is not None and slide_layer in self.viewer.layers:
                self.viewer.layers.selection.active = slide_layer  # its keys, not the Shapes'
        return view

    def prepare(
        self, slide_path: str, prob_map: ProbabilityMap, slide_layer: Any
    ) -> tuple[AnalysisView, bool]:
        """The view of ``prob_map`` (registered), and whether it is new (its layers not made:
        :meth:`build_layers` on any thread, then :meth:`attach` on the GUI thread)."""
        key = (slide_key(slide_path), prob_map.model_name)
        frame = (
            SlideFrame.from_layer(slide_layer)
            if slide_layer is not None
            else SlideFrame.from_grid(prob_map.grid)
        )
        view = self._views.get(key)
        if view is not None:
            if view.prob_map is not prob_map:
                view.set_map(prob_map, frame)
            elif view.frame != frame:
                view.place(frame)  # the same analysis over its reopened or moved slide
            return view, False
        slide_name = slide_layer.name if slide_layer is not None else Path(slide_path).stem
        title = f"{slide_name} · {prob_map.model_name}"
        overlay = ProbabilityOverlay(self.viewer, prob_map, f"{title} probability", frame)
        regions_layer = RegionsLayer(self.viewer, frame, f"{title} regions")
        view = AnalysisView(slide_path, slide_name, prob_map, overlay, regions_layer)
        view.apply_style(self.style())
        regions_layer.on_user_delete = lambda ids, view=view: self._user_deleted(view, ids)
        self._views[key] = view
        return view, True

    @staticmethod
    def build_layers(view: AnalysisView) -> tuple[Any, Any]:
        """The view's overlay and regions layers, not yet in the viewer (any thread)."""
        return view.overlay.build(), view.regions_layer.build()

    def attach(self, view: AnalysisView, slide_layer: Any, overlay: Any) -> None:
        """Put a built overlay in the viewer (GUI thread), the slide under it (the selected layer
        stays selected: the dock follows the slide the user selects, not a run's new layers)."""
        for step in self.attach_steps(view, slide_layer, overlay):
            step()

    def attach_steps(
        self, view: AnalysisView, slide_layer: Any, overlay: Any
    ) -> list[Callable[[], None]]:
        """:meth:`attach` as separate steps, for a caller that runs one per turn of the event
        loop: each costs napari tens of milliseconds (a visual, layer controls, a reorder), so run
        back to back they freeze the viewer for a third of a second on two cores. The overlay goes
        in hidden and shows at the last step: its first drawing (napari compiles the layer's
        shaders then) is a step of its own."""

        def slide_below() -> None:
            if slide_layer is not None and slide_layer in self.viewer.layers:
                view.keep_slide_below(self.viewer, slide_layer)

        def adopt_hidden() -> None:
            overlay.visible = False
            view.overlay.adopt(overlay, select=False)

        return [adopt_hidden, view.refresh_overlay, slide_below, view.reveal]

    def _user_deleted(self, view: AnalysisView, ids: set[str]) -> None:
        view.forget_deleted(ids)
        if self.on_user_delete is not None:
            self.on_user_delete(view, ids)

    def apply_style(self, style: DisplayStyle) -> None:
        for view in self:
            view.apply_style(style)
