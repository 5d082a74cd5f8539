"""The regions of the selected analysis: computed at the threshold, drawn, listed, edited, compared.

:class:`RegionsControl` turns the selected analysis's probability map into regions at the dock's
threshold and minimum area (:func:`napari_metastasis.pipeline.answer.answer_slide`, as ``predict``
finds them), draws them (:meth:`.analysis_view.AnalysisView.show_answer`) and records them, their sizes and the
verdict in the slide's state (:func:`.panels.record_regions`), which the region list and the
verdict show. Contours of a large map (over :data:`SYNC_CONTOUR_CELLS` cells, a whole node's) are
computed on a worker thread and the GUI thread only draws them (issue 21, D7); a small map's are
computed at once, so they are there when the call returns.
It also colours the regions by a reference annotation (:mod:`.comparison`), frames a region or a
reference lesion, and applies the pathologist's deletions and relabels.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from napari_metastasis._napari.colormaps import outline_colors
from napari_metastasis._napari.helpers import centre_camera_on, error
from napari_metastasis.errors import MetastasisError
from napari_metastasis.evaluation.compare import compare_with_reference
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.pipeline.answer import SlideAnswer, answer_slide
from napari_metastasis.widgets.analysis_view import AnalysisView
from napari_metastasis.widgets.annotation_buttons import AnnotationIOWidget
from napari_metastasis.widgets.comparison import STATUS_COLORS, ComparisonPanel, reference_geometry
from napari_metastasis.widgets.display_controls import DisplayControls
from napari_metastasis.widgets.lifetime import one_per_turn, single_shot_timer, while_alive
from napari_metastasis.widgets.panels import SelectedSlideViews, record_regions
from napari_metastasis.widgets.selected import SelectedSlide
from napari_metastasis.widgets.state import SlideAnalysis

#: Wait this long after the threshold or min-area last moved before recomputing contours (ms).
CONTOUR_DEBOUNCE_MS = 60
#: While a run streams in, contours are computed at most this often (s), or, for a large map,
#: as rarely as keeps them to a tenth of the run (:data:`CONTOUR_RUN_SHARE`).
CONTOUR_RUN_S = 6.0
#: The share of a run's time its live contours may take: their computing (on a worker thread,
#: whose core the classifying threads share) and their drawing and listing (on the GUI thread).
#: On a Camelyon-size node each update took 0.2-1.4 s to compute and 0.2-0.6 s to draw and list
#: as its regions grew to ~800, and came every 6 s: most of what the viewer's run cost beyond
#: ``predict_slide``'s (benchmarks/bench_gui.py).
CONTOUR_RUN_SHARE = 0.1
#: Maps of at most this many cells (64 x 64 patches, 26 mm² at 80 µm) have their contours computed
#: on the GUI thread at once (a few milliseconds); larger ones on a worker thread. The cost follows
#: the regions more than the cells: a Camelyon-size node (134 x 134 patches) with ~800 regions at
#: its threshold took 0.4 s of the GUI thread's time at each move of the slider.
SYNC_CONTOUR_CELLS = 4_096


def measured_answer(prob_map: ProbabilityMap, threshold: float, min_area: float) -> SlideAnswer:
    """The regions of ``prob_map`` and their sizes, computed together on a worker thread: the GUI
    thread then only draws them (measuring ~800 regions took it 0.1 s more)."""
    answer = answer_slide(prob_map, threshold, min_area)
    answer.deposits_by_region  # noqa: B018 - measured here, on this thread
    return answer


def in_background(view: AnalysisView) -> bool:
    """Whether the contours of ``view``'s map are computed off the GUI thread."""
    return int(view.prob_map.values.size) > SYNC_CONTOUR_CELLS


class RegionsControl:
    """Computes, draws and records the regions of the selected analysis (and of others)."""

    def __init__(
        self,
        owner: Any,
        viewer: Any,
        selected: SelectedSlide,
        display: DisplayControls,
        panels: SelectedSlideViews,
        comparison: ComparisonPanel,
        annotation_io: AnnotationIOWidget,
    ) -> None:
        self.owner = owner  # the dock widget: timers and worker callbacks die with it
        self.viewer = viewer
        self.selected = selected
        self.display = display
        self.panels = panels
        self.comparison = comparison
        self.annotation_io = annotation_io
        self.worker: Any = None  # the contour worker now running, if any
        self._pending: tuple[AnalysisView, bool] | None = None  # asked for while it ran
        self.next_at = 0.0  # during a run: no new contours before this time (perf_counter)
        self.last_comparison: Any = None
        self.debounce = single_shot_timer(owner, CONTOUR_DEBOUNCE_MS, self.update)

    @property
    def threshold(self) -> float:
        return self.display.threshold_value

    # --- the selected analysis ---------------------------------------------------------------
    def update(self, recreate: bool = False) -> None:
        """Recompute the regions of the selected analysis at the current threshold and min area.

        A regions layer the user deleted comes back only on an explicit action (``recreate``: a
        new run, ticking Contours, reopening the slide), not on every slider move. Large maps
        are computed off the GUI thread (:func:`in_background`).
        """
        self.debounce.stop()
        view = self.selected.analysis
        if view is None or (view.regions_layer.was_removed and not recreate):
            self.sync()
            return
        if in_background(view):
            self.start(view, recreate)
            return
        self.style_outlines(view)
        try:
            view.update_regions(self.threshold, self.display.min_area_um2)
        except MetastasisError as exc:
            error(str(exc))
            return
        self.after_shown(view)

    def start(self, view: AnalysisView, recreate: bool = False) -> None:
        """Compute the regions of ``view`` off the GUI thread; draw them when they arrive (if
        the view is still the selected one and the settings have not moved meanwhile). Asked
        again while a worker runs, the latest request runs once it is done."""
        if self.worker is not None:
            self._pending = (view, recreate)
            return
        from napari.qt.threading import create_worker

        snapshot = view.regions_snapshot()
        threshold, min_area = self.threshold, self.display.min_area_um2
        started = time.perf_counter()
        worker = create_worker(measured_answer, snapshot, threshold, min_area, _start_thread=False)

        def done(answer: SlideAnswer) -> None:
            current = (threshold, min_area) == (self.threshold, self.display.min_area_um2)
            wanted = recreate or not view.regions_layer.was_removed
            if view is self.selected.analysis and wanted and current:
                self.style_outlines(view)
                view.show_answer(answer, threshold)
                # the list, verdict and comparison at the next turn: the viewer draws between
                one_per_turn(self.owner, [lambda: self.paced(lambda: self.after_shown(view))])
            self.pace(started)

        def finished() -> None:
            self.worker = None
            pending, self._pending = self._pending, None
            if pending is not None:
                self.start(*pending)

        worker.returned.connect(while_alive(self.owner, done))
        worker.finished.connect(while_alive(self.owner, finished))
        self.worker = worker
        worker.start()

    def pace(self, started: float) -> None:
        """During a run, the next contours start no sooner than :data:`CONTOUR_RUN_S` after
        these started, nor before these have cost at most :data:`CONTOUR_RUN_SHARE` of the time
        between (their computing and drawing so far: :meth:`paced` adds their listing)."""
        cost = time.perf_counter() - started
        self.next_at = started + max(CONTOUR_RUN_S, cost / CONTOUR_RUN_SHARE)

    def paced(self, step: Callable[[], None]) -> None:
        """Run ``step`` (listing the contours drawn) and count its time in the run's pace."""
        began = time.perf_counter()
        step()
        self.next_at += (time.perf_counter() - began) / CONTOUR_RUN_SHARE

    def style_outlines(self, view: AnalysisView) -> None:
        tumour, highlight = outline_colors(self.display.colormap.value, self.threshold)
        view.regions_layer.tumour_color, view.regions_layer.highlight_color = tumour, highlight

    def after_shown(self, view: AnalysisView) -> None:
        self.sync()
        self.update_comparison()
        self.annotation_io.select_layer(view.regions_layer.name)

    def sync(self) -> None:
        """The selected analysis's regions, sizes and verdict into the selected slide's state
        (the region list and the verdict show it); never adds layers."""
        state = self.selected.state
        if state is None:
            self.panels.show(None)
            return
        view = self.selected.analysis
        if view is None or not view.regions_layer.is_shown():
            state.clear_regions()
        else:
            record_regions(state, view, self.threshold)
        self.panels.show(state)

    # --- a run's end, and slides that are not selected ---------------------------------------
    def after_run(self, view: AnalysisView, state: SlideAnalysis) -> None:
        """The regions of a finished run: the selected analysis as :meth:`update` does (the
        pace of a run's contours reset); another slide measured into its own state."""
        if view is not self.selected.analysis:
            self.measure(view, state)
        else:
            self.next_at = 0.0
            self.update()

    def measure(self, view: AnalysisView, state: SlideAnalysis) -> None:
        """The regions and verdict of a slide that is not selected, at its own threshold."""
        if not view.slide_is_open():
            state.clear_regions()  # measured again when it is reopened
            return
        threshold = state.threshold if state.threshold is not None else self.threshold
        min_area = self.display.min_area_um2
        if not in_background(view):
            try:
                view.update_regions(threshold, min_area)
            except MetastasisError as exc:
                error(str(exc))
                return
            record_regions(state, view, threshold)
            return
        from napari.qt.threading import create_worker

        worker = create_worker(
            measured_answer, view.regions_snapshot(), threshold, min_area, _start_thread=False
        )

        def done(answer: SlideAnswer) -> None:
            if view.slide_is_open():  # it may have been closed meanwhile
                view.show_answer(answer, threshold)
                record_regions(state, view, threshold)
            else:
                state.clear_regions()

        worker.returned.connect(while_alive(self.owner, done))
        worker.start()

    def on_user_deleted(self, view: AnalysisView, ids: set[str]) -> None:
        """Regions deleted with napari's own tools: redrawn (orphaned holes go) once napari is
        done with its event."""
        if view is self.selected.analysis:
            self.debounce.start()

    # --- navigation, edits and the comparison ------------------------------------------------
    def go_to_region(self, index: int) -> None:
        """Centre and zoom the camera on region ``index`` of the selected analysis; highlight it."""
        view = self.selected.analysis
        if view is not None:
            view.go_to(self.viewer, index)

    def go_to_lesion(self, bounds: tuple[float, float, float, float]) -> None:
        """Centre the camera on a reference lesion (level-0 bounds)."""
        view = self.selected.analysis
        frame = view.frame if view is not None else self.selected.frame()
        if frame is None:
            return
        minx, miny, maxx, maxy = bounds
        (y0, x0), (y1, x1) = frame.to_world([[minx, miny], [maxx, maxy]])  # type: ignore[arg-type]
        centre_camera_on(self.viewer, (y0, x0, y1, x1))

    def delete(self, indices: list[int]) -> None:
        view = self.selected.analysis
        if view is not None:
            view.delete(indices)
            self.update()

    def relabel(self, indices: list[int], label: str) -> None:
        view = self.selected.analysis
        if view is not None:
            view.relabel(indices, label)
            self.update()

    def restore(self) -> None:
        view = self.selected.analysis
        if view is not None:
            view.edits.clear()
            self.update()

    def update_comparison(self) -> None:
        """Colour the regions by the reference (hit / false positive) and show the score."""
        view = self.selected.analysis
        if view is None or not view.regions_layer.is_shown():
            self.comparison.show_comparison(None)
            return
        layer = self.comparison.reference_layer
        if not self.comparison.active or layer is None:
            view.regions_layer.set_region_colors({})
            self.comparison.show_comparison(None)
            return
        geometry = reference_geometry(layer, view.frame.scale_yx)
        if geometry.is_empty:
            view.regions_layer.set_region_colors({})
            self.comparison.show_comparison(None, f"{layer.name}: no outline to compare with.")
            return
        result = compare_with_reference(view.prob_map, view.regions, geometry, self.threshold)
        view.regions_layer.set_region_colors(
            {
                str(r.uid): STATUS_COLORS[s]
                for r, s in zip(view.regions, result.region_status, strict=True)
            }
        )
        self.comparison.show_comparison(result)
        self.last_comparison = result
