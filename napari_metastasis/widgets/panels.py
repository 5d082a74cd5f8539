"""The dock's views of the selected slide's state: the status line, the region list, the verdict.

:class:`SelectedSlideViews` shows one :class:`.state.SlideAnalysis` (the selected slide's) in the
:class:`.run_status.RunStatus`, the :class:`.regions_panel.RegionsPanel` and the
:class:`.verdict.VerdictPanel`, and follows its changes: selecting another slide shows that
slide's own status, regions and verdict, never another's (issue 21, D1 and D4). Nothing here holds
analysis data; :func:`record_regions` is the one place where what an analysis view draws is
measured into its slide's state.
"""

from __future__ import annotations

from typing import Any

from napari_metastasis.clinical.decision import DecisionRule, rule_for_map
from napari_metastasis.clinical.staging import measure_regions, slide_verdict
from napari_metastasis.pipeline.first_pass import first_pass_caution
from napari_metastasis.widgets.analysis_view import AnalysisView
from napari_metastasis.widgets.regions_panel import RegionsPanel
from napari_metastasis.widgets.run_status import RunStatus
from napari_metastasis.widgets.state import SlideAnalysis, confirmed_regions
from napari_metastasis.widgets.verdict import VerdictPanel


def record_regions(state: SlideAnalysis, view: AnalysisView, threshold: float) -> None:
    """The regions ``view`` draws (after the pathologist's edits), their sizes and the slide
    verdict, in the state of the view's slide."""
    grid = view.prob_map.grid
    answer = view.answer  # its regions measured already (on the contour worker, if it ran)
    deposits = (
        answer.measure(view.regions) if answer is not None else measure_regions(view.regions, grid)
    )
    rule = rule_of(view, threshold)
    state.model_name, state.prob_map = view.model_name, view.prob_map
    state.set_regions(
        view.regions,
        confirmed_regions(view.regions),
        slide_verdict(deposits),
        labels=view.labels,
        deposits=deposits,
        edited=bool(view.edits),
        stride_um=float(grid.step_um),
        rule_text=rule.describe(),
        limitation=rule.itc_note(grid.step_um),
        shown=view.regions_layer.is_shown(),
        caution=first_pass_caution(view.prob_map, threshold),
    )


def rule_of(view: AnalysisView, threshold: float) -> DecisionRule:
    """The rule that decided the regions shown: their answer's, else the map's at ``threshold``."""
    answer = view.answer
    return answer.rule if answer is not None else rule_for_map(view.prob_map, threshold)


class SelectedSlideViews:
    """Binds the status line, the region list and the verdict to the selected slide's state."""

    def __init__(self, status: RunStatus, regions: RegionsPanel, verdict: VerdictPanel) -> None:
        self.status = status
        self.regions = regions
        self.verdict = verdict
        self.state: SlideAnalysis | None = None
        self._render()

    def show(self, state: SlideAnalysis | None) -> None:
        """Show ``state`` (None: no slide) and follow its changes."""
        self.status.show_state(state)
        if state is not self.state:
            if self.state is not None:
                self.state.events.revision.disconnect(self._on_revision)
                self.state.events.run_state.disconnect(self._on_revision)
            self.state = state
            if state is not None:
                state.events.revision.connect(self._on_revision)
                state.events.run_state.connect(self._on_revision)
        self._render()

    def _on_revision(self, *_: Any) -> None:
        self._render()

    def _render(self) -> None:
        state = self.state
        if state is None or not state.shown:
            running = state is not None and state.is_running
            self.regions.set_regions([], [], analysed=False, running=running)
            self.verdict.set_verdict(None, running=running)
            return
        self.regions.set_regions(
            state.candidates,
            state.labels,
            edited=state.edited,
            deposits=state.deposits,
            caution=state.caution,
        )
        self.verdict.set_verdict(
            state.verdict, state.stride_um, state.rule_text, limitation=state.limitation
        )
