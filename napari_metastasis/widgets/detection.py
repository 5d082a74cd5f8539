"""The "Metastasis detection" dock widget: it assembles the parts and wires them together.

* :mod:`.controls` (magicgui): slide and model, the analysis mode, the display settings;
* :mod:`.runner` runs requests in napari thread workers, filling the slide's shared
  :class:`ProbabilityMap` (:mod:`.session`); :mod:`.run_status` phrases what happens;
* :mod:`.analysis_view`: per slide and model, the overlay, the regions and the edits;
* :mod:`.regions_panel`: the region list, previous / next;
* :mod:`.analysis_files`: save, load, remember, restore; :mod:`.annotation_io`: import / export;
* :mod:`.verdict`: the slide verdict and *Report…*; :mod:`.measure`: the Measure tool;
  :mod:`.cases`: the case list, analysed in the background, with the patient's pN stage.

This module only turns the viewer's state into requests (:mod:`.selection`) and routes events; it
computes nothing the engine or the contours module knows how to compute, and never blocks the GUI
thread on the slide or the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QLabel,
    QLineEdit,
    QMessageBox,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from .._napari.helpers import (
    apply_slide_mpp,
    centre_camera_on,
    error,
    info,
    is_calibrated,
    is_slide_layer,
    layer_for_slide,
    show_repeated_notices_once,
    show_scale_bar,
    slide_path_of,
    user_mpp,
    warn,
)
from ..clinical import camelyon_patient, measure_regions, slide_stem, slide_verdict
from ..deposit_decision import rule_for_map
from ..errors import MetastasisError
from ..evaluation.compare import compare_with_reference
from ..models import resolve_threshold
from ..models.trust import TrustCheck, check_trust
from ..probability import ProbabilityMap
from ..report import write_case_report, write_slide_files
from . import run_status, selection
from .analysis_files import AnalysisFiles, map_file_of
from .analysis_view import AnalysisView, AnalysisViews
from .annotation_io import AnnotationIOWidget
from .cases import CaseList
from .comparison import STATUS_COLORS, ComparisonPanel, reference_geometry
from .controls import (
    CLICK,
    MODES,
    SHAPES,
    VISIBLE,
    WHOLE,
    DisplayControls,
    RunControls,
    SourceControls,
)
from .frame import SlideFrame
from .jobs import JobRequest, Planned, Resources
from .legend import ProbabilityLegend
from .lifetime import while_alive
from .measure import MeasureTool
from .overlay import outline_colors
from .regions_panel import RegionsPanel
from .run_status import RunStatus
from .runner import AnalysisRunner, Progress, RunSummary
from .session import AnalysisStore, slide_key
from .slides import SlideKeeper
from .state import SlideAnalysis, SlideStates, confirmed_regions
from .verdict import VerdictPanel

__all__ = ["CLICK", "MODES", "SHAPES", "VISIBLE", "WHOLE", "MetastasisWidget"]

#: The dock's width on a 1280 × 800 laptop: the canvas keeps at least 900 px (D13).
DOCK_WIDTH = 360
#: Input fields may shrink to this (px) so that every section fits the dock without clipping.
FIELD_MIN_WIDTH = 48
#: The status line follows a run this often (ms).
REFRESH_MS = 250
#: While a run streams in, the overlay is redrawn at most this often (s), or after ten times as
#: long as its last redraw took: each redraw also makes napari draw the canvas, which with
#: software OpenGL costs the classifying threads real CPU time (benchmarks/bench_gui.py: redrawing
#: every 0.25 s made a CPU run ~35 % slower than `predict`, none at all ~8 %).
OVERLAY_RUN_S = 2.0
#: Wait this long after the threshold or min-area last moved before recomputing contours (ms).
CONTOUR_DEBOUNCE_MS = 60
#: While a run streams in, contours are redrawn at most this often (s).
CONTOUR_RUN_S = 4.0
#: At the end of a run, contours that took less than this (s) last time are drawn at once;
#: slower ones are computed on a worker thread.
SYNC_CONTOURS_S = 0.05
#: Wait this long after the threshold last moved before re-measuring the case list (ms).
CASES_DEBOUNCE_MS = 300
#: A press and release closer than this (screen px) is a click, farther is a pan.
CLICK_TOLERANCE_PX = 5
#: Keyboard shortcuts, bound to the viewer (napari's key bindings): key -> (method, what it does).
#: Shift keeps them clear of napari's own single-letter layer keys (R rectangle, P polygon...).
SHORTCUTS = {
    "Shift-R": ("run", "run the analysis (the selected mode)"),
    "Shift-X": ("cancel", "cancel the run"),
    "Shift-N": ("next_region", "next region in the list"),
    "Shift-B": ("previous_region", "previous region in the list (back)"),
    "Shift-O": ("toggle_overlay", "show / hide the probability map"),
    "Shift-C": ("toggle_contours", "show / hide the contours"),
}


def shortcuts_help() -> str:
    rows = "".join(
        f"<tr><td><b>{key}</b></td><td>{what}</td></tr>" for key, (_, what) in SHORTCUTS.items()
    )
    return f"<b>Keyboard shortcuts</b> (in the viewer)<table>{rows}</table>"


class SidewaysScroll(QScrollArea):
    """Scrolls a widget sideways only, as tall as the widget wants: the region table needs about
    520 px for its seven columns side by side, more than a laptop's dock; it scrolls on its own
    instead of widening (and clipping) every other section."""

    def __init__(self) -> None:
        super().__init__()
        self.setWidgetResizable(True)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # type: ignore[attr-defined]
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)  # type: ignore[attr-defined]
        self.setFrameShape(QFrame.NoFrame)

    def _height(self, hint: QSize) -> int:
        return hint.height() + self.horizontalScrollBar().sizeHint().height()  # type: ignore[union-attr]

    def minimumSizeHint(self) -> QSize:
        widget = self.widget()
        if widget is None:
            return super().minimumSizeHint()
        return QSize(0, self._height(widget.minimumSizeHint()))

    def sizeHint(self) -> QSize:
        widget = self.widget()
        if widget is None:
            return super().sizeHint()
        return QSize(0, self._height(widget.sizeHint()))


class MetastasisWidget(QWidget):
    """Plugins > napari-metastasis > Metastasis detection."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.store = AnalysisStore()
        #: one analysis state per slide opened this session (what the views show)
        self.states = SlideStates()
        self.resources = Resources()
        self.runner = AnalysisRunner(self.store, self.resources, parent=self)

        self.source = SourceControls(napari_viewer)
        self.run_controls = RunControls(napari_viewer)
        self.display = DisplayControls()
        self.status = RunStatus()
        self.views = AnalysisViews(napari_viewer, self.display.style)
        self.slides = SlideKeeper(napari_viewer, self.states, self.views)
        self.regions_panel = RegionsPanel()
        self.annotation_io = AnnotationIOWidget(napari_viewer)
        self.files = AnalysisFiles(napari_viewer, self.store, self.views)
        self.verdict_panel = VerdictPanel()
        self.measure = MeasureTool(napari_viewer, lambda: self.slide_layer)
        self.cases = CaseList(self.store, self.resources)
        self.legend = ProbabilityLegend()
        self.comparison = ComparisonPanel(napari_viewer)
        self.regions_panel.add_section(self.comparison)
        self.help = QLabel(shortcuts_help())
        self.help.setWordWrap(True)

        self._run_view: AnalysisView | None = None
        self._latest_progress: Progress | None = None
        self._next_overlay_at = 0.0
        self._building: set[int] = set()  # views whose layers are being built
        self._contour_worker = None
        self._contours_again = False
        self._contour_cost = 0.0  # seconds the last contours took (computed and drawn)
        self.last_comparison = None
        self._next_contours_at = 0.0
        self._refresh_timer = self._timer(REFRESH_MS, self._refresh_current_run)
        self._contour_timer = self._timer(CONTOUR_DEBOUNCE_MS, self.update_contours)
        self._pending_restore: list = []
        self._pending_maps: list = []
        self._restore_timer = self._timer(0, self._restore_pending)
        self._cases_timer = self._timer(CASES_DEBOUNCE_MS, self.cases.remeasure)

        show_repeated_notices_once()  # napari's "Inconsistent units" notice, once
        self._build()
        self._connect()
        self._on_layers_changed()
        self._on_model_changed()
        self._on_mode_changed()
        for layer in list(self.viewer.layers):  # slides opened before the widget
            if is_slide_layer(layer):
                self.slides.opened(layer)
                layer.events.name.connect(self._on_layers_changed)
                show_scale_bar(self.viewer, layer)
                self._schedule_restore(layer)

    def _timer(self, ms: int, slot) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(ms)
        timer.timeout.connect(slot)
        return timer

    # ============================================================================ building
    def _build(self) -> None:
        """A dock for a 1280 × 800 laptop (D13): :data:`DOCK_WIDTH` px wide, and
        what a pathologist reads and does first at the top without scrolling: the verdict
        (with Report… and Measure), what to analyse with the one Run button, and the progress.
        Everything else sits in sections that open on demand."""
        table = self.navigator.table  # the one panel wider than the dock scrolls on its own
        layout_of_table = table.parentWidget().layout()  # type: ignore[union-attr]
        sideways = SidewaysScroll()
        layout_of_table.replaceWidget(table, sideways)  # type: ignore[union-attr]
        sideways.setWidget(table)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(4, 4, 4, 4)
        self.verdict_panel.add_tool(self.measure)
        top_layout.addWidget(self.verdict_panel)
        top_layout.addWidget(self.run_controls.native)
        top_layout.addWidget(self.status)
        display_box = QWidget()
        display_layout = QVBoxLayout(display_box)
        display_layout.setContentsMargins(0, 0, 0, 0)
        display_layout.addWidget(self.display.native)
        display_layout.addWidget(self.legend)
        self.sections: dict[str, QCollapsible] = {}
        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.setContentsMargins(0, 0, 0, 0)
        for title, widget, expanded in (
            ("Slide and model", self.source.native, True),
            ("Regions", self.regions_panel, True),
            ("Overlay and contours", display_box, False),
            ("Case (pN stage of a patient)", self.cases, False),
            ("Annotations", self.annotation_io, False),
            ("Analysis files", self.files, False),
            ("Help", self.help, False),
        ):
            layout.addWidget(self._section(title, widget, expanded))
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # type: ignore[attr-defined]
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(top)
        outer.addWidget(scroll, 1)
        self.top_box = top
        self.scroll_area = scroll
        for combo in self.findChildren(QComboBox):  # long layer names must not widen the dock
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        for field in inner.findChildren((QComboBox, QAbstractSpinBox, QLineEdit, QAbstractSlider)):
            field.setMinimumWidth(FIELD_MIN_WIDTH)  # a field shrinks; the dock never clips it
        for label in inner.findChildren(QLabel):
            label.setWordWrap(True)  # long explanations wrap instead of widening the dock
        self._fit_width()

    def _section(self, title: str, widget: QWidget, expanded: bool) -> QCollapsible:
        section = QCollapsible(title)
        section.addWidget(widget)
        if expanded:
            section.expand(animate=False)
        else:
            section.collapse(animate=False)
        self.sections[title] = section
        return section

    def _fit_width(self) -> None:
        """:data:`DOCK_WIDTH` px: room for every section (fields shrink, long texts wrap, the
        region table scrolls sideways) while the canvas keeps the rest of a laptop's screen."""
        self.setFixedWidth(DOCK_WIDTH)

    def _connect(self) -> None:
        runner = self.runner
        runner.stage.connect(self._on_stage)
        runner.planned.connect(self._on_planned)
        runner.progressed.connect(self._on_progress)
        runner.failed.connect(self._on_failed)
        runner.finished.connect(self._on_run_finished)

        self.source.slide.changed.connect(self._on_slide_changed)
        self.source.model.changed.connect(self._on_model_changed)
        self.source.mpp.changed.connect(self._on_mpp_changed)
        self.source.browse.changed.connect(self._browse_model)
        self.run_controls.mode.changed.connect(self._on_mode_changed)
        self.run_controls.new_shapes.changed.connect(self.new_shapes_layer)
        self.run_controls.run_button.changed.connect(self.run)
        self.run_controls.cancel_button.changed.connect(self.cancel)
        self.display.on_style_changed(self._on_style_changed)
        self.display.on_regions_changed(self._threshold_moved)
        self.display.on_regions_changed(self._contour_timer.start)
        self.display.on_regions_changed(self._cases_timer.start)
        self.display.on_regions_changed(self._update_legend)
        self.comparison.changed.connect(self.update_comparison)
        self.comparison.lesion_activated.connect(self.go_to_lesion)

        self.regions_panel.activated.connect(self.go_to_region)
        navigator = self.regions_panel.navigator
        navigator.delete_requested.connect(self.delete_regions)
        navigator.relabel_requested.connect(self.relabel_regions)
        navigator.restore_requested.connect(self.restore_regions)

        self.views.on_user_delete = self._on_layer_deleted
        self.annotation_io.slide_layer_provider = lambda: self.slide_layer
        self.files.current_view = lambda: self.current_analysis
        self.files.current_slide = lambda: self.slide_layer
        self.files.on_shown = self._on_views_shown
        self.verdict_panel.report_requested.connect(self._report_dialog)
        self.cases.request_for = lambda path: self._make_request(None, "whole slide", path)
        self.cases.model_name = lambda: self.model_name
        self.cases.threshold = lambda: self.threshold
        self.cases.min_area_um2 = lambda: self.display.min_area_um2
        self.cases.on_analysed = self._remember_map
        self.cases.open_requested.connect(self.open_case_slide)
        self.cases.runner.finished.connect(self._on_case_finished)

        events = self.viewer.layers.events
        events.inserted.connect(self._on_layer_inserted)
        events.removed.connect(self._on_layer_removed)
        events.reordered.connect(self._on_layers_changed)
        self.viewer.mouse_drag_callbacks.append(self._on_mouse_drag)
        self._bind_keys()
        self.destroyed.connect(self._disconnect_viewer)

    def _bind_keys(self) -> None:
        """The shortcuts, registered the napari way (the viewer's key bindings)."""
        for key, (method, _what) in SHORTCUTS.items():

            def callback(viewer, method=method):
                getattr(self, method)()

            self.viewer.bind_key(key, callback, overwrite=True)

    def _disconnect_viewer(self, *_) -> None:
        if self._on_mouse_drag in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_mouse_drag)
        for key in SHORTCUTS:
            self.viewer.bind_key(key, None, overwrite=True)

    # ============================================================================ state
    @property
    def slide_layer(self):
        layer = self.source.slide.value
        return layer if layer is not None and layer in self.viewer.layers else None

    def select_slide_layer(self, layer) -> None:
        self.source.slide.reset_choices()
        if layer in [c for c in self.source.slide.choices]:
            self.source.slide.value = layer

    @property
    def slide_path(self) -> str | None:
        return slide_path_of(self.slide_layer)

    @property
    def model_ref(self) -> str:
        return self.source.model_ref

    @property
    def model_name(self) -> str:
        return self.source.model_name

    @property
    def mode(self) -> str:
        return self.run_controls.mode.value

    def set_mode(self, mode: str) -> None:
        self.run_controls.set_mode(mode)

    @property
    def is_running(self) -> bool:
        return self.runner.is_running

    @property
    def current_analysis(self) -> AnalysisView | None:
        """The analysis of the selected slide with the selected model, if any."""
        return self.views.get(self.slide_path, self.model_name)

    @property
    def navigator(self):
        return self.regions_panel.navigator

    @property
    def progress(self):
        return self.status.progress

    @property
    def threshold(self) -> float:
        return self.display.threshold_value

    def _frame(self) -> SlideFrame | None:
        layer = self.slide_layer
        return SlideFrame.from_layer(layer) if layer is not None else None

    @property
    def selected_state(self) -> SlideAnalysis | None:
        """The analysis state of the selected slide (what the views show)."""
        path = self.slide_path
        return self.states.get_or_create(path) if path else None

    def state_of(self, slide_path: str) -> SlideAnalysis:
        """The state of the slide a run or file belongs to, whichever slide is selected."""
        return self.states.get_or_create(slide_path)

    def _threshold_moved(self) -> None:
        """The slider is the selected slide's threshold: the slide keeps it."""
        state = self.selected_state
        if state is not None:
            state.threshold = self.threshold

    def _show_selected_state(self) -> None:
        """Every view follows the selected slide: its status, threshold, regions and verdict."""
        state = self.selected_state
        self.status.show_state(state)
        if state is not None and state.threshold is not None:
            if abs(state.threshold - self.threshold) > 1e-9:
                self.display.threshold.value = state.threshold
        elif state is not None:
            state.threshold = self.threshold
        self._sync_regions_panel()

    # ============================================================================ viewer events
    def _on_layer_inserted(self, event) -> None:
        layer = event.value
        if is_slide_layer(layer):
            self.slides.opened(layer)  # its µm/px and place, before anything reads its frame
        layer.events.name.connect(self._on_layers_changed)
        self._on_layers_changed()
        if is_slide_layer(layer):
            show_scale_bar(self.viewer, layer)
            self.select_slide_layer(layer)
            self._schedule_restore(layer)
        elif map_file_of(layer) is not None:
            self._pending_maps.append(layer)  # File > Open of a map: shown as an analysis
            self._restore_timer.start()

    def _on_layer_removed(self, event) -> None:
        if is_slide_layer(event.value):
            self.files.slide_closed(event.value)
            self.slides.closed(event.value)
        self._on_layers_changed()

    def _on_layers_changed(self, event=None) -> None:
        current = self.slide_layer
        with self.source.slide.changed.blocked():
            self.source.slide.reset_choices()
            if current is not None and current in self.source.slide.choices:
                self.source.slide.value = current
        self.run_controls.shapes_layer.reset_choices()
        self.source.show_mpp(self.slide_layer)
        self._update_run_button()
        self._show_selected_state()

    def _update_run_button(self) -> None:
        self.run_controls.run_button.enabled = self.slide_layer is not None and self.mode != CLICK

    # ============================================================================ controls
    def _on_mode_changed(self, *_) -> None:
        click = self.mode == CLICK
        self._update_run_button()
        self.run_controls.run_button.text = "Run (click the slide)" if click else "Run"
        state = self.selected_state
        if state is not None:
            run_status.mode_changed(state, click)

    def _on_slide_changed(self, *_) -> None:
        self.source.show_mpp(self.slide_layer)
        self._show_selected_state()

    def _on_mpp_changed(self, *_) -> None:
        """The user gave the selected (uncalibrated) slide a µm/px: rescale it to µm."""
        layer, mpp = self.slide_layer, self.source.mpp_value
        if layer is not None and mpp is not None:
            self.set_slide_mpp(layer, mpp)

    def set_slide_mpp(self, layer, mpp: float) -> bool:
        """Give an uncalibrated slide layer a µm/px (its layer and analyses move to µm)."""
        try:
            changed = apply_slide_mpp(layer, mpp)
        except ValueError as exc:
            warn(f"{layer.name}: {exc}.")
            return False
        if changed:
            self.slides.record_calibration(layer)  # kept for the session: a reopen restores it
            show_scale_bar(self.viewer, layer)  # the slide is in µm now
            frame = SlideFrame.from_layer(layer)
            for view in self.views.for_slide(slide_path_of(layer)):  # type: ignore[arg-type]
                view.set_map(view.prob_map, frame)
                view.refresh_overlay()
            if layer is self.slide_layer:
                self.source.show_mpp(layer)
                self.update_contours()
        return changed

    def _on_model_changed(self, *_) -> None:
        self.display.set_model_threshold(resolve_threshold(None, self.model_ref))
        self._sync_regions_panel()

    def _browse_model(self, *_) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if folder:
            self.add_model_folder(folder)

    def add_model_folder(self, folder: str | Path) -> None:
        """Offer ``folder`` in the model list and select it (validated when it is loaded)."""
        folder = Path(folder)
        self.source.add_model(folder.name, str(folder))

    def new_shapes_layer(self, *_) -> Any:
        """A Shapes layer to draw regions to analyse in, in rectangle mode."""
        frame = self._frame()
        units = frame.layer_kwargs() if frame is not None else {}
        layer = self.viewer.add_shapes(
            name="Regions to analyse",
            ndim=2,
            edge_color="cyan",
            face_color="transparent",
            **units,
        )
        layer.current_face_color = "transparent"  # what new rectangles get: not white
        layer.current_edge_color = "cyan"
        layer.mode = "add_rectangle"
        self.run_controls.select_shapes_layer(layer.name)
        return layer

    def _update_legend(self) -> None:
        style = self.display.style()
        self.legend.set_style(style.colormap, style.floor, style.opacity, style.threshold)

    def _on_style_changed(self) -> None:
        style = self.display.style()
        self._update_legend()
        self.views.apply_style(style)
        current = self.current_analysis
        if current is not None and style.show_contours and current.regions_layer.was_removed:
            self.update_contours(recreate=True)

    # ============================================================================ running
    def run(self, *_) -> None:
        """Analyse according to the selected mode (the Run button)."""
        if self.mode == CLICK:
            info("Click mode: click the slide to analyse the field around the point.")
            return
        request = self._request_for_mode()
        if request is not None:
            self.submit(request)

    def analyse_field_at(self, position_yx) -> JobRequest | None:
        """Analyse the field (size from the widget) around a world point, as a click does."""
        frame = self._frame()
        if frame is None:
            warn("Open a slide first.")
            return None
        size = float(self.run_controls.field_size.value)
        rect = selection.field_around(position_yx, size, frame)
        if rect is None:
            self.status.set_text("That click was outside the slide.")
            return None
        request = self._make_request(rect, f"{size:g} µm field")
        return self.submit(request) if request is not None else None

    def _request_for_mode(self) -> JobRequest | None:
        frame = self._frame()
        if frame is None:
            warn("Open a slide first (File > Open, or File > Open Sample).")
            return None
        mode = self.mode
        if mode == VISIBLE:
            rect = selection.visible_region(self.viewer, frame)
            if rect is None:
                warn("The view shows none of the slide: pan or zoom to it first.")
                return None
            return self._make_request(rect, "visible region")
        if mode == SHAPES:
            layer = self.run_controls.shapes_layer.value
            if layer is None or layer not in self.viewer.layers or not len(layer.data):
                warn(
                    "Draw rectangles or polygons in a Shapes layer first (the New button adds one)."
                )
                return None
            selected_only = bool(self.run_controls.selected_only.value)
            geometry = selection.shapes_geometry(layer, frame, selected_only=selected_only)
            if geometry.is_empty:
                warn(f"{layer.name}: no rectangle or polygon lies on the slide.")
                return None
            n = len(layer.selected_data) if selected_only else 0
            n = n or len(layer.data)
            return self._make_request(geometry, f"{n} drawn shape{'s' * (n != 1)}")
        return self._make_request(None, "whole slide")

    def _make_request(
        self, region, description: str, slide_path: str | None = None
    ) -> JobRequest | None:
        if not self.model_ref:
            warn("No model: choose a model folder (config.json + torchscript_model.pt).")
            return None
        trust = self.ensure_model_trusted(self.model_ref)
        if trust is False:
            return None
        # a case-list slide is checked against its own layer (if open), never the selected one;
        # a closed slide's file must state its µm/px (the run says so if it does not)
        layer = self.slide_layer if slide_path is None else layer_for_slide(self.viewer, slide_path)
        if layer is not None and not is_calibrated(layer):
            mpp = self.source.mpp_value if slide_path is None else None
            if mpp is None:
                message = (
                    f"{layer.name} states no usable µm/px: enter it in the µm/px field "
                    "(e.g. 0.25 at 40x, 0.5 at 20x), then run again."
                )
                warn(message)
                self.state_of(slide_path_of(layer) or "").set_status(message)  # its own status
                return None
            self.set_slide_mpp(layer, mpp)
        return JobRequest(
            slide_path=slide_path or self.slide_path,  # type: ignore[arg-type]
            model_ref=self.model_ref,
            model_name=self.model_name,
            description=description,
            region=region,
            device=self.source.device.value,
            batch_size=int(self.source.batch_size.value),
            tissue_min_fraction=float(self.source.tissue_min.value),
            overlap=self.source.overlap_fraction,
            mpp=user_mpp(layer),
            trust=trust if isinstance(trust, TrustCheck) else None,
        )

    def ensure_model_trusted(self, ref: str) -> TrustCheck | bool:
        """A model from outside the package runs only once the user trusts it (asked once per file).

        The same rule as the CLI's ``--trust-model``: a TorchScript model is a program. Returns the
        trust state for the run (its loader checks the file still has the digest the user said yes
        to, and remembers a new answer only once the model has loaded), True where there is
        nothing to check, False when the user said no.
        """
        try:
            state = check_trust(ref)
        except MetastasisError:
            return True  # a missing or broken folder: the loader says what is wrong
        if state.trusted or self.confirm_trust(state):
            return state
        message = f"Not run: model {state.folder.name} is not trusted."
        self.status.set_text(message)
        warn(message)
        return False

    def confirm_trust(self, state: TrustCheck) -> bool:
        """Ask the user whether to trust a model from outside the package (a modal dialog)."""
        answer = QMessageBox.question(
            self,
            "Trust this model?",
            f"The model {state.folder.name} ({state.folder}) does not come with napari-metastasis."
            "\n\nA TorchScript model is a program. Its operators were not inspected yet; they will"
            " be before it runs, and a model that reads or writes files is refused, but that check "
            "is not a sandbox.\n\nRun it only if you know where it comes from. Your answer is "
            f"remembered for this exact file (sha256 {state.sha256[:12]}…).\n\nTrust it?",  # type: ignore[index]
            QMessageBox.Yes | QMessageBox.No,
            QMessageBox.No,
        )
        return answer == QMessageBox.Yes

    def submit(self, request: JobRequest) -> JobRequest:
        """Run ``request`` now, or after the runs already queued (clicks can pile up)."""
        was_running = self.runner.is_running
        self.runner.submit(request)
        state = self.state_of(request.slide_path)
        if was_running:
            run_status.queued(state, request.description, len(self.runner.queue))
        else:
            run_status.starting(state, request.description)
            self.run_controls.cancel_button.enabled = True
        return request

    def cancel(self, *_) -> None:
        """Stop the current run after its current batch (finished patches are kept), drop the queue."""
        waiting = list(self.runner.queue)
        current = self.runner.current
        if self.runner.cancel():
            self.run_controls.cancel_button.enabled = False
            if current is not None:
                run_status.cancelling(self.state_of(current.slide_path))
        for request in waiting:  # dropped from the queue: their slides wait no longer
            state = self.state_of(request.slide_path)
            if state.run_state == run_status.QUEUED:
                state.set_status(
                    "Cancelled before it started.",
                    run_state="cancelled",
                    progress=(0, 1),
                    progress_format="cancelled",
                )

    def _on_planned(self, event: Planned) -> None:
        """The run's map is known: show it. A new analysis's layers are built on a worker
        thread (napari needs a good fraction of a second per layer) and put in the viewer when
        ready, one per turn of the event loop, so the viewer never freezes for them."""
        path = event.request.slide_path
        slide_layer = layer_for_slide(self.viewer, path)
        view, new = self.views.prepare(path, event.prob_map, slide_layer)
        self._run_view = view
        run_status.planned(self.state_of(path), event)
        if not new:
            view.refresh_overlay()
            if self.current_analysis is view:
                self._one_per_turn([lambda: self._show_run_regions(view)])  # type: ignore[arg-type]
            return
        from napari.qt.threading import create_worker

        self._building.add(id(view))
        worker = create_worker(self.views.build_layers, view, _start_thread=False)

        def built(layers):
            overlay, regions = layers
            steps = self.views.attach_steps(view, layer_for_slide(self.viewer, path), overlay)
            steps.append(lambda: self._building.discard(id(view)))
            steps.append(lambda: self._show_run_regions(view, regions))
            self._one_per_turn(steps)

        worker.returned.connect(while_alive(self, built))
        worker.start()

    def _one_per_turn(self, steps: list[Callable[[], None]]) -> None:
        """Run ``steps`` in order, one per turn of the Qt event loop, so the viewer repaints and
        answers the mouse between them (napari's layer work is GUI-thread work). The timer is
        the widget's child: once the widget is gone (the viewer closed) nothing more runs."""
        if not steps:
            return
        timer = QTimer(self)
        timer.setSingleShot(True)

        def run() -> None:
            timer.deleteLater()
            steps[0]()
            self._one_per_turn(steps[1:])

        timer.timeout.connect(run)
        timer.start(0)

    def _show_run_regions(self, view: AnalysisView, regions_layer=None) -> None:
        if regions_layer is not None:  # hidden until the next turn (its first drawing)
            regions_layer.visible = False
            view.regions_layer.adopt(regions_layer, select=False)
            self._one_per_turn([view.reveal])
        if view is self.current_analysis:
            if self.is_running and self._run_view is view:
                self._next_contours_at = 0.0
                self._start_contours(view)
            else:
                self.update_contours(recreate=True)

    def _on_progress(self, p: Progress) -> None:
        """A batch is in the map: show it at the next refresh (a few times a second, not per
        batch: the GUI thread's time is the classifying thread's too)."""
        self._latest_progress = p
        if not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def _refresh_current_run(self) -> None:
        """Follow a run: the status each tick, the overlay and the contours less often.

        The contours are computed on a worker thread (:meth:`_start_contours`); the overlay's
        redraw is timed, and the next one waits ten times as long as it took, so redrawing
        never takes more than a tenth of the GUI thread's time however large the map.
        """
        self._show_latest_progress()
        view = self._run_view
        if view is None or id(view) in self._building:
            return  # its layers are still being made
        now = time.perf_counter()
        if now >= self._next_overlay_at:
            view.refresh_overlay()
            cost = time.perf_counter() - now
            self._next_overlay_at = time.perf_counter() + max(OVERLAY_RUN_S, 10 * cost)
        if view is self.current_analysis and time.perf_counter() >= self._next_contours_at:
            self._start_contours(view)
        self._refresh_timer.start()  # keep ticking while the run lasts

    # --- contours on a worker thread ------------------------------------------------------------
    def _start_contours(self, view: AnalysisView) -> None:
        """Compute the regions of ``view`` off the GUI thread; show them when they arrive."""
        if self._contour_worker is not None:
            self._contours_again = True
            return
        from napari.qt.threading import create_worker

        from ..deposit_decision import decided_contours

        snapshot = view.regions_snapshot()
        threshold, min_area = self.threshold, self.display.min_area_um2
        started = time.perf_counter()
        worker = create_worker(
            decided_contours, snapshot, threshold, min_area_um2=min_area, _start_thread=False
        )

        def done(regions):
            computed = time.perf_counter() - started
            current = (threshold, min_area) == (self.threshold, self.display.min_area_um2)
            shown = time.perf_counter()
            if view is self.current_analysis and not view.regions_layer.was_removed and current:
                self._style_outlines(view)
                view.show_regions(regions)
                # the list, verdict and comparison at the next turn: the viewer draws between
                self._one_per_turn([lambda: self._after_regions_shown(view)])
            # what drawing them at once would cost the GUI thread (decides the end of a run)
            self._contour_cost = computed + time.perf_counter() - shown
            self._next_contours_at = time.perf_counter() + max(CONTOUR_RUN_S, 5 * computed)

        def finished():
            self._contour_worker = None
            if self._contours_again:
                self._contours_again = False
                self._start_contours(view)

        worker.returned.connect(while_alive(self, done))
        worker.finished.connect(while_alive(self, finished))
        self._contour_worker = worker
        worker.start()

    def _show_latest_progress(self) -> None:
        p, self._latest_progress = self._latest_progress, None
        if p is not None:
            run_status.progressed(self.state_of(p.request.slide_path), p)

    def _on_stage(self, message: str) -> None:
        request = self.runner.current
        if request is not None:
            run_status.stage(self.state_of(request.slide_path), message)

    def _on_failed(self, message: str) -> None:
        request = self.runner.current
        if request is not None:
            run_status.failed(self.state_of(request.slide_path), message)
        error(message)

    def _on_run_finished(self, summary: RunSummary) -> None:
        """A run ended: everything it found goes into the state of the slide it ran on, whichever
        slide is selected now (D1): its regions and verdict are measured here, not when (or if)
        the user selects it again."""
        view = self._run_view
        self._run_view = None
        self._refresh_timer.stop()
        self.run_controls.cancel_button.enabled = self.runner.is_running
        self._show_latest_progress()
        state = self.state_of(summary.request.slide_path)
        run_status.finished(state, summary)
        if view is not None:
            view.reveal()  # layers put in hidden for their first drawing show by now
            view.refresh_overlay()  # the chunks the last batches changed
            self._regions_after_run(view, state)
            # writing the map to disk waits a turn of the event loop: the viewer draws first
            self._one_per_turn([lambda: self.files.remember(view)])
        following = self.runner.current  # the next queued request started
        if following is not None:
            run_status.starting(self.state_of(following.slide_path), following.description)
        self._release_dropped_requests(summary)

    def _regions_after_run(self, view: AnalysisView, state: SlideAnalysis) -> None:
        """The regions of a finished run: at once for a small map, off the GUI thread for a
        large one; a slide not selected is measured into its own state."""
        if view is not self.current_analysis:
            self._measure_slide(view, state)
        elif self._contour_cost < SYNC_CONTOURS_S:
            self.update_contours()  # small maps: at once
        else:
            self._next_contours_at = 0.0
            self._start_contours(view)  # large ones: off the GUI thread

    def _release_dropped_requests(self, summary: RunSummary) -> None:
        """Slides whose queued requests the runner dropped (after a failure) say so, instead of
        waiting "queued" for ever (D11)."""
        waiting = {slide_key(r.slide_path) for r in self.runner.queue}
        if self.runner.current is not None:
            waiting.add(slide_key(self.runner.current.slide_path))
        for state in self.states:
            if state.run_state == run_status.QUEUED and state.key not in waiting:
                why = "the run before it failed" if summary.error else "the queue was emptied"
                state.set_status(
                    f"Not run: {why}. Run it again.",
                    run_state="cancelled",
                    progress=(0, 1),
                    progress_format="not run",
                )

    def _measure_slide(self, view: AnalysisView, state: SlideAnalysis) -> None:
        """The regions and verdict of a slide that is not selected, at its own threshold."""
        if not view.slide_is_open():
            state.clear_regions()  # measured again when it is reopened
            return
        threshold = state.threshold if state.threshold is not None else self.threshold
        try:
            view.update_regions(threshold, self.display.min_area_um2)
        except MetastasisError as exc:
            error(str(exc))
            return
        self._record_regions(view, state)

    def _record_regions(self, view: AnalysisView, state: SlideAnalysis | None = None) -> None:
        """The view's regions and the verdict measured from them, in its slide's state."""
        state = state or self.state_of(view.slide_path)
        grid = view.prob_map.grid
        verdict = slide_verdict(measure_regions(view.regions, grid))
        state.model_name, state.prob_map = view.model_name, view.prob_map
        state.set_regions(view.regions, confirmed_regions(view.regions), verdict)

    # ============================================================================ regions
    def update_contours(self, recreate: bool = False) -> None:
        """Recompute the regions of the current analysis at the current threshold and min area.

        A regions layer the user deleted comes back only on an explicit action (``recreate``: a
        new run, ticking Contours, reopening the slide), not on every slider move.
        """
        self._contour_timer.stop()
        view = self.current_analysis
        if view is None or (view.regions_layer.was_removed and not recreate):
            self._sync_regions_panel()
            return
        self._style_outlines(view)
        started = time.perf_counter()
        try:
            view.update_regions(self.threshold, self.display.min_area_um2)
        except MetastasisError as exc:
            error(str(exc))
            return
        self._contour_cost = time.perf_counter() - started
        self._after_regions_shown(view)

    def _style_outlines(self, view: AnalysisView) -> None:
        tumour, highlight = outline_colors(self.display.colormap.value, self.threshold)
        view.regions_layer.tumour_color, view.regions_layer.highlight_color = tumour, highlight

    def _after_regions_shown(self, view: AnalysisView) -> None:
        self._sync_regions_panel()
        self.update_comparison()
        self.annotation_io.select_layer(view.regions_layer.name)

    def _sync_regions_panel(self) -> None:
        """Show the current analysis's regions, their sizes and the slide verdict in the panel
        (never adds layers)."""
        view = self.current_analysis
        if view is None or not view.regions_layer.is_shown():
            self.regions_panel.set_regions([], [], analysed=False)
            self.verdict_panel.set_verdict(None)
            return
        grid = view.prob_map.grid
        deposits = measure_regions(view.regions, grid)
        self.regions_panel.set_regions(
            view.regions, view.labels, edited=bool(view.edits), deposits=deposits
        )
        rule = rule_for_map(view.prob_map, self.threshold)
        verdict = slide_verdict(deposits)
        self.verdict_panel.set_verdict(verdict, grid.step_um, rule.describe())
        state = self.state_of(view.slide_path)
        state.model_name, state.prob_map = view.model_name, view.prob_map
        state.set_regions(view.regions, confirmed_regions(view.regions), verdict)

    def go_to_region(self, index: int) -> None:
        """Centre and zoom the camera on region ``index`` of the current analysis; highlight it."""
        view = self.current_analysis
        if view is not None:
            view.go_to(self.viewer, index)

    def next_region(self) -> int | None:
        return self.regions_panel.step(1)

    def previous_region(self) -> int | None:
        return self.regions_panel.step(-1)

    def toggle_overlay(self) -> None:
        self.display.show_overlay.value = not self.display.show_overlay.value

    def toggle_contours(self) -> None:
        self.display.show_contours.value = not self.display.show_contours.value

    def update_comparison(self) -> None:
        """Colour the regions by the reference (hit / false positive) and show the score."""
        view = self.current_analysis
        if view is None or not view.regions_layer.is_shown():
            self.comparison.show_comparison(None)
            return
        if not self.comparison.active:
            view.regions_layer.set_region_colors({})
            self.comparison.show_comparison(None)
            return
        layer = self.comparison.reference_layer
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

    def go_to_lesion(self, bounds) -> None:
        """Centre the camera on a reference lesion (level-0 bounds)."""
        view = self.current_analysis
        frame = view.frame if view is not None else self._frame()
        if frame is None:
            return
        minx, miny, maxx, maxy = bounds
        (y0, x0), (y1, x1) = frame.to_world([[minx, miny], [maxx, maxy]])  # type: ignore[arg-type]
        centre_camera_on(self.viewer, (y0, x0, y1, x1))

    def delete_regions(self, indices: list[int]) -> None:
        view = self.current_analysis
        if view is not None:
            view.delete(indices)
            self.update_contours()

    def relabel_regions(self, indices: list[int], label: str) -> None:
        view = self.current_analysis
        if view is not None:
            view.relabel(indices, label)
            self.update_contours()

    def restore_regions(self) -> None:
        view = self.current_analysis
        if view is not None:
            view.edits.clear()
            self.update_contours()

    def _on_layer_deleted(self, view: AnalysisView, ids: set[str]) -> None:
        if view is self.current_analysis:
            self._contour_timer.start()  # redraw (drops orphaned holes) once napari is done

    # ============================================================================ files
    def _schedule_restore(self, layer) -> None:
        """Restore after the layer is fully inserted (the timer dies with the widget)."""
        self._pending_restore.append(layer)
        self._restore_timer.start()

    def _restore_pending(self) -> None:
        pending, self._pending_restore = self._pending_restore, []
        for layer in pending:
            self.files.restore(layer)
        maps, self._pending_maps = self._pending_maps, []
        for layer in maps:
            self._adopt_map_layer(layer)

    def _adopt_map_layer(self, layer) -> None:
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

    def _on_views_shown(self, layer, views: list[AnalysisView]) -> None:
        """A load or restore showed these views: select the slide and the (last) model."""
        self.slides.record_calibration(layer)  # e.g. the µm/px a loaded analysis gave it
        self.select_slide_layer(layer)
        for view in views:
            self.source.add_model(view.model_name, view.model_name, select=False)
        self.source.select_model(views[-1].model_name)
        self.source.show_mpp(layer)
        self.update_contours(recreate=True)

    def load_analysis(self, file: str | Path, layer=None, quiet: bool = False) -> AnalysisView:
        """Show a saved probability map over a slide layer (default: the selected one)."""
        return self.files.load(file, layer, quiet=quiet)

    def save_analysis(self, file: str | Path) -> Path:
        return self.files.save(file)

    def _remember(self, view: AnalysisView) -> None:
        self.files.remember(view)

    @property
    def remember(self) -> bool:
        return self.files.remember_enabled

    @remember.setter
    def remember(self, on: bool) -> None:
        self.files.remember_check.setChecked(bool(on))

    # ============================================================================ report, cases
    def write_report(self, folder: str | Path) -> Path:
        """The PDF report of the current slide, or of its patient when it is in the case list
        (every slide of the patient must be analysed); its files go into ``folder``."""
        view = self.current_analysis
        if view is None or not view.prob_map.n_analysed:
            raise MetastasisError("Nothing to report: run an analysis of this slide first.")
        case = self.cases.patient_of(view.slide_path)
        if case is None:
            patient = camelyon_patient(view.slide_path) or slide_stem(view.slide_path)
            items = [(view.slide_path, view.prob_map, view.regions)]
        else:
            patient, slides = case
            missing = [s.name for s in slides if s.prob_map is None or s.verdict is None]
            if missing:
                raise MetastasisError(
                    f"Analyse every slide of {patient} first ({', '.join(missing)} not done): "
                    "a stage from some of the nodes could understate it."
                )
            current = slide_key(view.slide_path)
            items = [
                (view.slide_path, view.prob_map, view.regions)  # with the pathologist's edits
                if slide_key(s.path) == current
                else (s.path, s.prob_map, s.regions)
                for s in slides
            ]
        summaries = [
            write_slide_files(folder, path, prob_map, regions, threshold=self.threshold)
            for path, prob_map, regions in items
        ]
        return write_case_report(folder, patient, summaries)

    def _report_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the report")
        if not folder:
            return
        try:
            path = self.write_report(folder)
        except (MetastasisError, OSError) as exc:
            error(f"Could not write the report: {exc}")
            return
        info(f"Report written to {path}.")

    def _remember_map(self, prob_map) -> None:
        if self.files.remember_enabled:
            try:
                self.store.remember(prob_map)
            except (OSError, MetastasisError) as exc:
                warn(f"Could not remember this analysis for next time: {exc}")

    def _on_case_finished(self, summary: RunSummary) -> None:
        """A slide of the case list finished: redraw it if the viewer shows it."""
        view = self.views.get(summary.request.slide_path, summary.request.model_name)
        if view is not None:
            view.refresh_overlay()
            if view is self.current_analysis:
                self.update_contours()

    def open_case_slide(self, path: str, prob_map=None) -> Any:
        """Open a slide of the case list (if not open yet) and show its analysis."""
        layer = layer_for_slide(self.viewer, path)
        if layer is None:
            try:
                self.viewer.open(path, plugin="napari-metastasis")
            except Exception as exc:  # napari wraps reader errors in its own types
                error(f"Could not open {Path(path).name}: {exc}")
                return None
            layer = layer_for_slide(self.viewer, path)
        if layer is None:
            return None
        if prob_map is None:
            self.select_slide_layer(layer)
            return layer
        view = self.views.show(path, prob_map, layer)
        view.refresh_overlay()
        self._on_views_shown(layer, [view])
        return layer

    # ============================================================================ clicks
    def _on_mouse_drag(self, viewer, event):
        """Click mode: a press and release in (almost) the same place analyses a field there."""
        if self.mode != CLICK or event.button != 1 or event.modifiers:
            return
        active = viewer.layers.selection.active
        if active is not None and getattr(active, "mode", "pan_zoom") not in ("pan_zoom", "pan"):
            return  # the user is drawing or selecting in a layer
        start = tuple(event.pos)
        position = tuple(event.position)
        yield
        while event.type == "mouse_move":
            yield
        dx, dy = (a - b for a, b in zip(event.pos, start, strict=False))
        if (dx * dx + dy * dy) ** 0.5 <= CLICK_TOLERANCE_PX:
            self.analyse_field_at(position)

    def closeEvent(self, event) -> None:
        self.cancel()
        self.cases.cancel()
        super().closeEvent(event)
