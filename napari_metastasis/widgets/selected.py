"""What the dock works on: the selected slide layer and model, their analysis and their state.

Every part of the dock asks :class:`SelectedSlide` which slide, model, analysis view and
:class:`.state.SlideAnalysis` are selected *now*, and asks :meth:`SelectedSlide.state_of` for the state
of the slide a run or a file belongs to, which need not be the selected one (issue 21, D1–D4: the
analysis used to follow "the selected layer at the time of the event"). Units: the frame maps
level-0 pixels of the selected slide to world units (µm for a calibrated slide).
"""

from __future__ import annotations

from typing import Any

from napari_metastasis._napari.helpers import slide_path_of
from napari_metastasis.widgets.analysis_view import AnalysisView, AnalysisViews
from napari_metastasis.widgets.controls import SourceControls
from napari_metastasis.widgets.frame import SlideFrame
from napari_metastasis.widgets.state import SlideAnalysis, SlideStates


class SelectedSlide:
    """The selected slide and model (the Slide and Model controls), and what belongs to them."""

    def __init__(
        self, viewer: Any, source: SourceControls, views: AnalysisViews, states: SlideStates
    ) -> None:
        self.viewer = viewer
        self.source = source
        self.views = views
        self.states = states

    @property
    def slide_layer(self) -> Any | None:
        """The selected slide layer, if it is still in the viewer."""
        layer = self.source.slide.value
        return layer if layer is not None and layer in self.viewer.layers else None

    def select_slide_layer(self, layer: Any) -> None:
        self.source.slide.reset_choices()
        if layer in list(self.source.slide.choices):
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
    def analysis(self) -> AnalysisView | None:
        """The analysis of the selected slide with the selected model, if any."""
        return self.views.get(self.slide_path, self.model_name)

    @property
    def state(self) -> SlideAnalysis | None:
        """The analysis state of the selected slide (what the dock's views show)."""
        path = self.slide_path
        return self.states.get_or_create(path) if path else None

    def state_of(self, slide_path: str) -> SlideAnalysis:
        """The state of the slide a run or file belongs to, whichever slide is selected."""
        return self.states.get_or_create(slide_path)

    def frame(self) -> SlideFrame | None:
        """Level-0 px <-> world units of the selected slide layer."""
        layer = self.slide_layer
        return SlideFrame.from_layer(layer) if layer is not None else None
