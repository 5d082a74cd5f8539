"""Slides and maps coming and going in the viewer, as the dock sees them.

:class:`SlideEvents` follows the viewer's layer list: a slide layer opened gets its state's µm/px
and place (:class:`.slides.SlideKeeper`), a scale bar, the selection, and its analyses back (those
in memory, then those remembered on disk, :class:`.analysis_files.AnalysisFiles`); a slide closed
takes its overlays and regions with it; a probability map opened with File > Open becomes the
analysis of its slide, placed as a run's overlay is, with its regions and verdict (issue 21, D6).
It also gives an uncalibrated slide the µm/px the user enters, opens the slides of the case
list, keeps the scale bar readable (:func:`update_scale_bar`) and makes the dock show the slide
the user selects in the layer list. Restoring waits until napari has finished inserting the layer (a zero-delay timer).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_metastasis._napari.helpers import (
    apply_slide_mpp,
    error,
    is_calibrated,
    is_slide_layer,
    layer_for_slide,
    slide_layers,
    slide_path_of,
    warn,
)
from napari_metastasis.errors import MetastasisError
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.widgets.analysis_files import AnalysisFiles, map_file_of
from napari_metastasis.widgets.analysis_view import AnalysisView, AnalysisViews
from napari_metastasis.widgets.controls import SourceControls
from napari_metastasis.widgets.frame import SlideFrame
from napari_metastasis.widgets.lifetime import single_shot_timer
from napari_metastasis.widgets.regions_control import RegionsControl
from napari_metastasis.widgets.selected import SelectedSlide
from napari_metastasis.widgets.slides import SlideKeeper


def update_scale_bar(viewer: Any) -> None:
    """napari's scale bar while it can be read: on once every open slide is in µm (it reads µm,
    then mm); off while slides in µm and slides in pixels lie side by side, where its number, in
    pixels and without a unit, would read as µm beside the others."""
    slides = slide_layers(viewer)
    calibrated = [is_calibrated(layer) for layer in slides]
    bar = viewer.scale_bar
    if slides and all(calibrated):
        if not bar.visible:
            bar.visible = True
            bar.box = True
    elif any(calibrated) and bar.visible:
        bar.visible = False


class SlideEvents:
    """Slide layers opened and closed, maps opened, µm/px given, case slides opened."""

    def __init__(
        self,
        owner: Any,
        viewer: Any,
        selected: SelectedSlide,
        slides: SlideKeeper,
        views: AnalysisViews,
        files: AnalysisFiles,
        source: SourceControls,
        regions: RegionsControl,
        layers_changed: Callable[[], None],
    ) -> None:
        self.viewer = viewer
        self.selected = selected
        self.slides = slides
        self.views = views
        self.files = files
        self.source = source
        self.regions = regions
        self.layers_changed = layers_changed  # the dock's lists and views follow the layers
        self._pending_restore: list[Any] = []
        self._pending_maps: list[Any] = []
        self._restore_timer = single_shot_timer(owner, 0, self._restore_pending)
        files.on_shown = self.views_shown

    def connect(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self.on_inserted)
        events.removed.connect(self.on_removed)
        events.reordered.connect(self.layers_changed)
        self.viewer.layers.selection.events.active.connect(self.on_active)
        for layer in list(self.viewer.layers):  # slides opened before the dock
            if is_slide_layer(layer):
                self.slides.opened(layer)
                layer.events.name.connect(self.layers_changed)
                self.schedule_restore(layer)
        update_scale_bar(self.viewer)

    # --- the viewer's layer list -------------------------------------------------------------
    def on_inserted(self, event: Any) -> None:
        layer = event.value
        if is_slide_layer(layer):
            self.slides.opened(layer)  # its µm/px and place, before anything reads its frame
        layer.events.name.connect(self.layers_changed)
        self.layers_changed()
        if is_slide_layer(layer):
            update_scale_bar(self.viewer)
            self.selected.select_slide_layer(layer)
            self.schedule_restore(layer)
        elif map_file_of(layer) is not None:
            self._pending_maps.append(layer)  # File > Open of a map: shown as an analysis
            self._restore_timer.start()

    def on_removed(self, event: Any) -> None:
        if is_slide_layer(event.value):
            self.files.slide_closed(event.value)
            self.slides.closed(event.value)
        self.layers_changed()
        update_scale_bar(self.viewer)

    def on_active(self, event: Any) -> None:
        """The user selected a slide in the layer list: the dock shows that slide."""
        layer = getattr(event, "value", None)
        if is_slide_layer(layer) and layer is not self.selected.slide_layer:
            self.selected.select_slide_layer(layer)

    def schedule_restore(self, layer: Any) -> None:
        """Restore after the layer is fully inserted (the timer dies with the dock)."""
        self._pending_restore.append(layer)
        self._restore_timer.start()

    def _restore_pending(self) -> None:
        pending, self._pending_restore = self._pending_restore, []
        for layer in pending:
            self.files.restore(layer)
        maps, self._pending_maps = self._pending_maps, []
        for layer in maps:
            self.adopt_map_layer(layer)

    def adopt_map_layer(self, layer: Any) -> None:
        """A probability map opened with File > Open (any reader) becomes the analysis of its
        slide: placed as a run's overlay is, with its contours and verdict (D6). Its slide is
        opened if it is not yet and its file is where the map says."""
        file = map_file_of(layer)
        if file is None or layer not in self.viewer.layers:
            return
        try:
            prob_map = ProbabilityMap.load(file)
        except MetastasisError as exc:
            error(str(exc))
            return
        slide_path = prob_map.slide_path
        slide = layer_for_slide(self.viewer, slide_path) if slide_path else None
        if slide is None and slide_path and Path(slide_path).exists():
            slide = self.open_case_slide(slide_path)
        if slide is None:
            warn(
                f"{Path(file).name}: open its slide ({Path(slide_path or '?').name}) and load "
                "the map with Load analysis… to see its regions and verdict."
            )
            return
        try:
            self.files.load(file, slide)
        except MetastasisError as exc:
            error(str(exc))
            return
        self.viewer.layers.remove(layer)  # the analysis's own overlay shows it now

    def views_shown(self, layer: Any, views: list[AnalysisView]) -> None:
        """A load or restore showed these views: select the slide and the (last) model."""
        self.slides.record_calibration(layer)  # e.g. the µm/px a loaded analysis gave it
        self.selected.select_slide_layer(layer)
        for view in views:
            self.source.add_model(view.model_name, view.model_name, select=False)
        self.source.select_model(views[-1].model_name)
        self.source.show_mpp(layer)
        self.regions.update(recreate=True)

    # --- µm/px and the case list's slides ----------------------------------------------------
    def set_slide_mpp(self, layer: Any, mpp: float) -> bool:
        """Give an uncalibrated slide layer a µm/px (its layer and analyses move to µm)."""
        try:
            changed = apply_slide_mpp(layer, mpp)
        except ValueError as exc:
            warn(f"{layer.name}: {exc}.")
            return False
        if changed:
            self.slides.record_calibration(layer)  # kept for the session: a reopen restores it
            update_scale_bar(self.viewer)  # the slide is in µm now
            frame = SlideFrame.from_layer(layer)
            for view in self.views.for_slide(slide_path_of(layer)):  # type: ignore[arg-type]
                view.set_map(view.prob_map, frame)
                view.refresh_overlay()
            if layer is self.selected.slide_layer:
                self.source.show_mpp(layer)
                self.regions.update()
        return changed

    def open_case_slide(self, path: str, prob_map: ProbabilityMap | None = None) -> Any:
        """Open a slide of the case list (if not open yet) and show its analysis."""
        layer = layer_for_slide(self.viewer, path)
        if layer is None:
            try:
                self.viewer.open(path, plugin="napari-metastasis")
            except Exception as exc:  # noqa: BLE001 - napari wraps reader errors in its own types
                error(f"Could not open {Path(path).name}: {exc}")
                return None
            layer = layer_for_slide(self.viewer, path)
        if layer is None:
            return None
        if prob_map is None:
            self.selected.select_slide_layer(layer)
            return layer
        view = self.views.show(path, prob_map, layer)
        view.refresh_overlay()
        self.views_shown(layer, [view])
        return layer
