"""The "Metastasis detection" dock widget: it makes the parts, lays them out and wires them.

Each part is a small view or controller; the analysis data lives in the per-slide states
(:mod:`.state`, what the dock shows) and the shared probability maps (:mod:`.session`):

* :mod:`.controls` (magicgui): slide and model, the analysis mode, the display settings;
* :mod:`.selected`: the selected slide and model, their analysis view and state;
* :mod:`.requests`: the controls turned into run requests; :mod:`.runner` runs them in thread
  workers; :mod:`.run_follow` writes what they report into their slides' states and draws them;
* :mod:`.regions_control`: the regions at the threshold, drawn, listed, edited and compared;
* :mod:`.panels`: the status line, region list and verdict as views of the selected state;
* :mod:`.slide_events`: slides and maps opened and closed; :mod:`.analysis_files`: save, load,
  remember, restore; :mod:`.reporting`: the PDF report; :mod:`.cases`: the case list;
* :mod:`.dock`: the layout for a laptop and the keyboard shortcuts.

Nothing here computes what the engine or the contours module computes, and nothing blocks the GUI
thread on the slide or the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtGui import QCloseEvent
from qtpy.QtWidgets import QLabel, QProgressBar, QWidget

from napari_metastasis._napari.helpers import info, show_repeated_notices_once
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.models.trust import TrustCheck
from napari_metastasis.widgets.analysis_files import AnalysisFiles
from napari_metastasis.widgets.analysis_view import AnalysisView, AnalysisViews
from napari_metastasis.widgets.annotation_buttons import AnnotationIOWidget
from napari_metastasis.widgets.cases import CaseList
from napari_metastasis.widgets.comparison import ComparisonPanel
from napari_metastasis.widgets.control_events import ControlEvents
from napari_metastasis.widgets.controls import (
    CLICK,
    MODES,
    SHAPES,
    VISIBLE,
    WHOLE,
    RunControls,
    SourceControls,
)
from napari_metastasis.widgets.display_controls import DisplayControls
from napari_metastasis.widgets.dock import SHORTCUTS, lay_out_dock, shortcuts_help
from napari_metastasis.widgets.jobs import JobRequest, Resources
from napari_metastasis.widgets.legend import ProbabilityLegend
from napari_metastasis.widgets.lifetime import single_shot_timer
from napari_metastasis.widgets.navigator import RegionNavigator
from napari_metastasis.widgets.panels import SelectedSlideViews
from napari_metastasis.widgets.regions_control import RegionsControl
from napari_metastasis.widgets.regions_panel import RegionsPanel
from napari_metastasis.widgets.reporting import Reporting
from napari_metastasis.widgets.requests import ClickAnalyser, RequestMaker, ask_trust
from napari_metastasis.widgets.ruler import MeasureTool
from napari_metastasis.widgets.run_follow import RunFollower
from napari_metastasis.widgets.run_status import RunStatus
from napari_metastasis.widgets.runner import AnalysisRunner
from napari_metastasis.widgets.selected import SelectedSlide
from napari_metastasis.widgets.session import AnalysisStore
from napari_metastasis.widgets.slide_events import SlideEvents
from napari_metastasis.widgets.slides import SlideKeeper
from napari_metastasis.widgets.state import SlideAnalysis, SlideStates
from napari_metastasis.widgets.verdict import VerdictPanel
from napari_metastasis.widgets.wiring import connect_parts

__all__ = ["CLICK", "MODES", "SHAPES", "SHORTCUTS", "VISIBLE", "WHOLE", "MetastasisWidget"]

#: Wait this long after the threshold last moved before re-measuring the case list (ms).
CASES_DEBOUNCE_MS = 300


class MetastasisWidget(QWidget):
    """Plugins > napari-metastasis > Metastasis detection."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        viewer = self.viewer = napari_viewer
        self.store = AnalysisStore()
        self.states = SlideStates()  # one analysis state per slide opened this session
        self.resources = Resources()
        self.runner = AnalysisRunner(self.store, self.resources, parent=self)
        # the controls and the views
        self.source = SourceControls(viewer)
        self.run_controls = RunControls(viewer)
        self.display = DisplayControls()
        self.status = RunStatus()
        self.regions_panel = RegionsPanel()
        self.verdict_panel = VerdictPanel()
        self.annotation_io = AnnotationIOWidget(viewer)
        self.comparison = ComparisonPanel(viewer)
        self.regions_panel.add_section(self.comparison)
        self.legend = ProbabilityLegend()
        self.help = QLabel(shortcuts_help())
        self.help.setWordWrap(True)
        # what they show and what drives them
        self.views = AnalysisViews(viewer, self.display.style)
        self.selected = SelectedSlide(viewer, self.source, self.views, self.states)
        self.slides = SlideKeeper(viewer, self.states, self.views)
        self.files = AnalysisFiles(viewer, self.store, self.views)
        self.measure = MeasureTool(viewer, lambda: self.slide_layer)
        self.cases = CaseList(self.store, self.resources)
        self.panels = SelectedSlideViews(self.status, self.regions_panel, self.verdict_panel)
        self.regions = RegionsControl(
            self, viewer, self.selected, self.display, self.panels, self.comparison,
            self.annotation_io,
        )  # fmt: skip
        self.follower = RunFollower(
            self, viewer, self.runner, self.selected, self.states, self.views, self.regions,
            self.files, self.run_controls,
        )  # fmt: skip
        self.slide_events = SlideEvents(
            self, viewer, self.selected, self.slides, self.views, self.files, self.source,
            self.regions, lambda *_: self.controls.layers_changed(),
        )  # fmt: skip
        self.controls = ControlEvents(
            self, viewer, self.selected, self.source, self.run_controls, self.display,
            self.legend, self.views, self.regions, self.slide_events,
        )  # fmt: skip
        self.requests = RequestMaker(
            viewer, self.selected, self.source, self.run_controls, self.status.set_text,
            self.set_slide_mpp, lambda state: self.confirm_trust(state),
        )  # fmt: skip
        self.reporting = Reporting(self, self.selected, self.cases, self.display)
        self.cases_timer = single_shot_timer(self, CASES_DEBOUNCE_MS, self.cases.remeasure)
        self.clicks = ClickAnalyser(lambda: self.mode, self.analyse_field_at)

        show_repeated_notices_once()  # napari's "Inconsistent units" notice, once
        layout = lay_out_dock(self)
        self.top_box, self.scroll_area, self.sections = (
            layout.top_box,
            layout.scroll_area,
            layout.sections,
        )
        connect_parts(self)
        self.controls.layers_changed()
        self.controls.model_changed()
        self.controls.mode_changed()
        self.slide_events.connect()

    # ============================================================================ what is selected
    @property
    def slide_layer(self) -> Any | None:
        return self.selected.slide_layer

    def select_slide_layer(self, layer: Any) -> None:
        self.selected.select_slide_layer(layer)

    @property
    def slide_path(self) -> str | None:
        return self.selected.slide_path

    @property
    def model_ref(self) -> str:
        return self.selected.model_ref

    @property
    def model_name(self) -> str:
        return self.selected.model_name

    @property
    def current_analysis(self) -> AnalysisView | None:
        """The analysis of the selected slide with the selected model, if any."""
        return self.selected.analysis

    @property
    def selected_state(self) -> SlideAnalysis | None:
        return self.selected.state

    def state_of(self, slide_path: str) -> SlideAnalysis:
        return self.selected.state_of(slide_path)

    @property
    def mode(self) -> str:
        return str(self.run_controls.mode.value)

    def set_mode(self, mode: str) -> None:
        self.run_controls.set_mode(mode)

    @property
    def is_running(self) -> bool:
        return self.runner.is_running

    @property
    def threshold(self) -> float:
        return self.display.threshold_value

    @property
    def navigator(self) -> RegionNavigator:
        return self.regions_panel.navigator

    @property
    def progress(self) -> QProgressBar:
        return self.status.progress

    @property
    def last_comparison(self) -> Any:
        return self.regions.last_comparison

    def set_slide_mpp(self, layer: Any, mpp: float) -> bool:
        """Give an uncalibrated slide layer a µm/px (its layer and analyses move to µm)."""
        return self.slide_events.set_slide_mpp(layer, mpp)

    def add_model_folder(self, folder: str | Path) -> None:
        self.controls.add_model_folder(folder)

    def new_shapes_layer(self, *_: Any) -> Any:
        return self.controls.new_shapes_layer()

    # ============================================================================ running
    def run(self, *_: Any) -> None:
        """Analyse according to the selected mode (the Run button)."""
        if self.mode == CLICK:
            info("Click mode: click the slide to analyse the field around the point.")
            return
        request = self.requests.for_mode(self.mode)
        if request is not None:
            self.submit(request)

    def analyse_field_at(self, position_yx: tuple[float, ...]) -> JobRequest | None:
        """Analyse the field (size from the dock) around a world point, as a click does."""
        request = self.requests.field_at(position_yx)
        return self.submit(request) if request is not None else None

    def submit(self, request: JobRequest) -> JobRequest:
        return self.follower.submit(request)

    def cancel(self, *_: Any) -> None:
        self.follower.cancel()

    def ensure_model_trusted(self, ref: str) -> TrustCheck | bool:
        return self.requests.ensure_trusted(ref)

    def confirm_trust(self, state: TrustCheck) -> bool:
        """Ask the user whether to trust a model from outside the package (a modal dialog)."""
        return ask_trust(self, state)

    # ============================================================================ regions
    def update_contours(self, recreate: bool = False) -> None:
        self.regions.update(recreate)

    def go_to_region(self, index: int) -> None:
        self.regions.go_to_region(index)

    def next_region(self) -> int | None:
        return self.regions_panel.step(1)

    def previous_region(self) -> int | None:
        return self.regions_panel.step(-1)

    def toggle_overlay(self) -> None:
        self.display.show_overlay.value = not self.display.show_overlay.value

    def toggle_contours(self) -> None:
        self.display.show_contours.value = not self.display.show_contours.value

    def delete_regions(self, indices: list[int]) -> None:
        self.regions.delete(indices)

    def relabel_regions(self, indices: list[int], label: str) -> None:
        self.regions.relabel(indices, label)

    def restore_regions(self) -> None:
        self.regions.restore()

    # ============================================================================ files, report
    def load_analysis(
        self, file: str | Path, layer: Any = None, quiet: bool = False
    ) -> AnalysisView:
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

    def write_report(self, folder: str | Path) -> Path:
        """The PDF report of the selected slide, or of its patient (see :mod:`.reporting`)."""
        return self.reporting.write(folder)

    def open_case_slide(self, path: str, prob_map: ProbabilityMap | None = None) -> Any:
        return self.slide_events.open_case_slide(path, prob_map)

    # ============================================================================ clicks, closing
    def closeEvent(self, event: QCloseEvent | None) -> None:
        self.cancel()
        self.cases.cancel()
        super().closeEvent(event)
