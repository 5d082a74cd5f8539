"""Following runs: their requests submitted and cancelled, their progress drawn, their end recorded.

:class:`RunFollower` listens to the :class:`.runner.AnalysisRunner` and writes whatever a run
reports into the state of the slide it runs on (:mod:`.run_status` phrases it), whichever slide
is selected (issue 21, D1 and D4). It draws a run as it streams in without ever holding the GUI
thread for long (D7):

* a new analysis's layers are built on a worker thread and put in the viewer one step per turn
  of the event loop (:meth:`.analysis_view.AnalysisViews.attach_steps`);
* the status line follows a run every :data:`REFRESH_MS`; the overlay is refreshed (only the
  chunks the batches changed, :meth:`.overlay.ProbabilityOverlay.refresh`) at most every
  :data:`OVERLAY_RUN_S`, or ten times as rarely as it takes; the contours are computed on a
  worker thread at most every :data:`.regions_control.CONTOUR_RUN_S`, and on a large map as
  rarely as keeps them (computing, drawing, listing) to a tenth of the run's time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from napari_metastasis._napari.helpers import error, layer_for_slide, notify
from napari_metastasis.widgets import run_status
from napari_metastasis.widgets.analysis_files import AnalysisFiles
from napari_metastasis.widgets.analysis_view import AnalysisView, AnalysisViews
from napari_metastasis.widgets.controls import RunControls
from napari_metastasis.widgets.jobs import JobRequest, Planned
from napari_metastasis.widgets.lifetime import one_per_turn, single_shot_timer, while_alive
from napari_metastasis.widgets.regions_control import RegionsControl
from napari_metastasis.widgets.runner import AnalysisRunner, Progress, RunSummary
from napari_metastasis.widgets.selected import SelectedSlide
from napari_metastasis.widgets.session import REPLACED_GRID, replaced_grid_message, slide_key
from napari_metastasis.widgets.state import QUEUED, SlideStates

#: The status line follows a run this often (ms).
REFRESH_MS = 500
#: While a run streams in, the overlay is refreshed at most this often (s), or after ten times
#: as long as its last refresh took: each refresh also makes napari draw the canvas, which with
#: software OpenGL costs the classifying threads CPU time (benchmarks/bench_gui.py).
OVERLAY_RUN_S = 2.0


class RunFollower:
    """Submits requests to the runner and shows what its runs report."""

    def __init__(
        self,
        owner: Any,
        viewer: Any,
        runner: AnalysisRunner,
        selected: SelectedSlide,
        states: SlideStates,
        views: AnalysisViews,
        regions: RegionsControl,
        files: AnalysisFiles,
        run_controls: RunControls,
    ) -> None:
        self.owner = owner  # the dock widget: timers and worker callbacks die with it
        self.viewer = viewer
        self.runner = runner
        self.selected = selected
        self.states = states
        self.views = views
        self.regions = regions
        self.files = files
        self.run_controls = run_controls
        self.view: AnalysisView | None = None  # the analysis the current run fills
        self._latest: Progress | None = None
        self._next_overlay_at = 0.0
        self._building: set[int] = set()  # views whose layers are being built
        self.refresh_timer = single_shot_timer(owner, REFRESH_MS, self.refresh)
        runner.stage.connect(self.on_stage)
        runner.planned.connect(self.on_planned)
        runner.progressed.connect(self.on_progress)
        runner.failed.connect(self.on_failed)
        runner.finished.connect(self.on_finished)

    # --- requests ----------------------------------------------------------------------------
    def submit(self, request: JobRequest) -> JobRequest:
        """Run ``request`` now, or after the runs already queued (clicks can pile up)."""
        was_running = self.runner.is_running
        self.runner.submit(request)
        state = self.selected.state_of(request.slide_path)
        if was_running:
            run_status.queued(state, request.description, len(self.runner.queue))
        else:
            run_status.starting(state, request.description)
            self.run_controls.cancel_button.enabled = True
        return request

    def cancel(self) -> None:
        """Stop the current run after its current batch (finished patches are kept), drop the queue."""
        waiting = list(self.runner.queue)
        current = self.runner.current
        if self.runner.cancel():
            self.run_controls.cancel_button.enabled = False
            if current is not None:
                run_status.cancelling(self.selected.state_of(current.slide_path))
        for request in waiting:  # dropped from the queue: their slides wait no longer
            state = self.selected.state_of(request.slide_path)
            if state.run_state == QUEUED:
                state.set_status(
                    "Cancelled before it started.",
                    run_state="cancelled",
                    progress=(0, 1),
                    progress_format="cancelled",
                )

    # --- what the runner reports -------------------------------------------------------------
    def on_stage(self, message: str) -> None:
        request = self.runner.current
        if request is not None:
            run_status.stage(self.selected.state_of(request.slide_path), message)

    def on_planned(self, event: Planned) -> None:
        """The run's map is known: show it. A new analysis's layers are built on a worker
        thread (napari needs a good fraction of a second per layer) and put in the viewer when
        ready, one step per turn of the event loop, so the viewer never freezes for them."""
        path = event.request.slide_path
        replaced = event.prob_map.extra.pop(REPLACED_GRID, None)
        if replaced is not None:  # never silently: the earlier analysis leaves the screen
            notify("info", replaced_grid_message(Path(path).name, replaced, event.prob_map.grid))
        view, new = self.views.prepare(path, event.prob_map, layer_for_slide(self.viewer, path))
        self.view = view
        run_status.planned(self.selected.state_of(path), event)
        if not new:
            view.refresh_overlay()
            if self.selected.analysis is view:
                one_per_turn(self.owner, [lambda: self.show_regions(view)])
            return
        from napari.qt.threading import create_worker

        self._building.add(id(view))
        worker = create_worker(self.views.build_layers, view, _start_thread=False)

        def built(layers: tuple[Any, Any]) -> None:
            overlay, regions = layers
            steps = self.views.attach_steps(view, layer_for_slide(self.viewer, path), overlay)
            steps.append(lambda: self._building.discard(id(view)))
            steps.append(lambda: self.show_regions(view, regions))
            one_per_turn(self.owner, steps)

        worker.returned.connect(while_alive(self.owner, built))
        worker.start()

    def show_regions(self, view: AnalysisView, regions_layer: Any = None) -> None:
        """The regions of the run's analysis (its regions layer put in hidden, shown at the
        next turn: napari's first drawing of a new layer is a step of its own)."""
        if regions_layer is not None:
            regions_layer.visible = False
            view.regions_layer.adopt(regions_layer, select=False)
            one_per_turn(self.owner, [view.reveal])
        if view is self.selected.analysis:
            if self.runner.is_running and self.view is view:
                self.regions.next_at = 0.0
                self.regions.start(view)
            else:
                self.regions.update(recreate=True)

    def on_progress(self, progress: Progress) -> None:
        """A batch is in the map: shown at the next refresh (a few times a second, not per
        batch: the GUI thread's time is the classifying threads' too)."""
        self._latest = progress
        if not self.refresh_timer.isActive():
            self.refresh_timer.start()

    def refresh(self) -> None:
        """Follow a run: the status each tick, the overlay and the contours less often."""
        self.show_latest_progress()
        view = self.view
        if view is None or id(view) in self._building:
            return  # its layers are still being made
        now = time.perf_counter()
        if now >= self._next_overlay_at:
            view.refresh_overlay()
            cost = time.perf_counter() - now
            self._next_overlay_at = time.perf_counter() + max(OVERLAY_RUN_S, 10 * cost)
        if view is self.selected.analysis and time.perf_counter() >= self.regions.next_at:
            self.regions.start(view)
        self.refresh_timer.start()  # keep ticking while the run lasts

    def show_latest_progress(self) -> None:
        progress, self._latest = self._latest, None
        if progress is not None:
            run_status.progressed(self.selected.state_of(progress.request.slide_path), progress)

    def on_failed(self, message: str) -> None:
        request = self.runner.current
        if request is not None:
            run_status.failed(self.selected.state_of(request.slide_path), message)
        error(message)

    def on_finished(self, summary: RunSummary) -> None:
        """A run ended: everything it found goes into the state of the slide it ran on, whichever
        slide is selected now (D1): its regions and verdict are measured here, not when (or if)
        the user selects it again."""
        view, self.view = self.view, None
        self.refresh_timer.stop()
        self.run_controls.cancel_button.enabled = self.runner.is_running
        self.show_latest_progress()
        state = self.selected.state_of(summary.request.slide_path)
        run_status.finished(state, summary)
        if view is not None:
            view.reveal()  # layers put in hidden for their first drawing show by now
            view.refresh_overlay()  # the chunks the last batches changed
            self.regions.after_run(view, state)
            # writing the map to disk waits a turn of the event loop: the viewer draws first
            one_per_turn(self.owner, [lambda: self.files.remember(view)])
        following = self.runner.current  # the next queued request started
        if following is not None:
            run_status.starting(self.selected.state_of(following.slide_path), following.description)
        self.release_dropped_requests(summary)

    def release_dropped_requests(self, summary: RunSummary) -> None:
        """Slides whose queued requests the runner dropped (after a failure) say so, instead of
        waiting "queued" for ever (D11)."""
        waiting = {slide_key(r.slide_path) for r in self.runner.queue}
        if self.runner.current is not None:
            waiting.add(slide_key(self.runner.current.slide_path))
        for state in self.states:
            if state.run_state == QUEUED and state.key not in waiting:
                why = "the run before it failed" if summary.error else "the queue was emptied"
                state.set_status(
                    f"Not run: {why}. Run it again.",
                    run_state="cancelled",
                    progress=(0, 1),
                    progress_format="not run",
                )
