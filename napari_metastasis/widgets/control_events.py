"""What the dock's controls do when they change: slide, µm/px, model, mode, display settings.

:class:`ControlEvents` keeps the controls in step with the viewer (the slide and shapes lists, the
Run button) and the views in step with the controls: selecting a slide shows that slide's own
state (its threshold, status, regions and verdict, issue 21, D4); the threshold slider is the
selected slide's threshold; a µm/px entered for an uncalibrated slide rescales it to µm; the
display settings restyle every analysis and the legend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QWidget

from napari_metastasis._napari.helpers import slide_path_of
from napari_metastasis.models import resolve_threshold
from napari_metastasis.widgets import run_status
from napari_metastasis.widgets.analysis_view import AnalysisViews
from napari_metastasis.widgets.controls import CLICK, RunControls, SourceControls
from napari_metastasis.widgets.display_controls import DisplayControls
from napari_metastasis.widgets.legend import ProbabilityLegend
from napari_metastasis.widgets.regions_control import RegionsControl
from napari_metastasis.widgets.selected import SelectedSlide
from napari_metastasis.widgets.slide_events import SlideEvents


class ControlEvents:
    """The handlers of the dock's controls."""

    def __init__(
        self,
        parent: QWidget,
        viewer: Any,
        selected: SelectedSlide,
        source: SourceControls,
        run_controls: RunControls,
        display: DisplayControls,
        legend: ProbabilityLegend,
        views: AnalysisViews,
        regions: RegionsControl,
        slide_events: SlideEvents,
    ) -> None:
        self.parent = parent  # the dialogs' parent
        self.viewer = viewer
        self.selected = selected
        self.source = source
        self.run_controls = run_controls
        self.display = display
        self.legend = legend
        self.views = views
        self.regions = regions
        self.slide_events = slide_events

    @property
    def mode(self) -> str:
        return str(self.run_controls.mode.value)

    # --- the viewer's layers and the selected slide ------------------------------------------
    def layers_changed(self, *_: Any) -> None:
        """Slides or shapes came, went or were renamed: the lists, the button and the views."""
        current = self.selected.slide_layer
        with self.source.slide.changed.blocked():
            self.source.slide.reset_choices()
            if current is not None and current in self.source.slide.choices:
                self.source.slide.value = current
        self.run_controls.shapes_layer.reset_choices()
        self.source.show_mpp(self.selected.slide_layer)
        self.update_run_button()
        self.show_selected_state()

    def slide_changed(self, *_: Any) -> None:
        """Another slide chosen in the dock: its µm/px and state, and the layer list selects
        it (unless one of its own layers is selected there)."""
        layer = self.selected.slide_layer
        self.source.show_mpp(layer)
        active = self.viewer.layers.selection.active
        if layer is not None and active is not layer and not self._belongs(active, layer):
            self.viewer.layers.selection.active = layer
        self.show_selected_state()

    def _belongs(self, layer: Any, slide_layer: Any) -> bool:
        """Whether ``layer`` is an overlay or regions layer of the slide ``slide_layer``."""
        path = slide_path_of(slide_layer)
        return path is not None and any(
            layer in view.layers() for view in self.views.for_slide(path)
        )

    def show_selected_state(self) -> None:
        """Every view follows the selected slide: its status, threshold, regions and verdict."""
        state = self.selected.state
        threshold = self.display.threshold_value
        if state is not None and state.threshold is not None:
            if abs(state.threshold - threshold) > 1e-9:
                self.display.threshold.value = state.threshold
        elif state is not None:
            state.threshold = threshold
        self.regions.sync()

    def threshold_moved(self) -> None:
        """The slider is the selected slide's threshold: the slide keeps it."""
        state = self.selected.state
        if state is not None:
            state.threshold = self.display.threshold_value

    def mpp_changed(self, *_: Any) -> None:
        """The user gave the selected (uncalibrated) slide a µm/px: rescale it to µm."""
        layer, mpp = self.selected.slide_layer, self.source.mpp_value
        if layer is not None and mpp is not None:
            self.slide_events.set_slide_mpp(layer, mpp)

    # --- model and mode ----------------------------------------------------------------------
    def model_changed(self, *_: Any) -> None:
        self.display.set_model_threshold(resolve_threshold(None, self.selected.model_ref))
        self.regions.sync()

    def browse_model(self, *_: Any) -> None:
        folder = QFileDialog.getExistingDirectory(self.parent, "Choose a model folder")
        if folder:
            self.add_model_folder(folder)

    def add_model_folder(self, folder: str | Path) -> None:
        """Offer ``folder`` in the model list and select it (validated when it is loaded)."""
        folder = Path(folder)
        self.source.add_model(folder.name, str(folder))

    def mode_changed(self, *_: Any) -> None:
        click = self.mode == CLICK
        self.update_run_button()
        self.run_controls.run_button.text = "Run (click the slide)" if click else "Run"
        state = self.selected.state
        if state is not None:
            run_status.mode_changed(state, click)

    def update_run_button(self) -> None:
        has_slide = self.selected.slide_layer is not None
        self.run_controls.run_button.enabled = has_slide and self.mode != CLICK

    def new_shapes_layer(self, *_: Any) -> Any:
        """A Shapes layer to draw regions to analyse in, in rectangle mode."""
        frame = self.selected.frame()
        layer = self.viewer.add_shapes(
            name="Regions to analyse",
            ndim=2,
            edge_color="cyan",
            face_color="transparent",
            **(frame.layer_kwargs() if frame is not None else {}),
        )
        layer.current_face_color = "transparent"  # what new rectangles get: not white
        layer.current_edge_color = "cyan"
        layer.mode = "add_rectangle"
        self.run_controls.select_shapes_layer(layer.name)
        return layer

    # --- display -----------------------------------------------------------------------------
    def style_changed(self) -> None:
        style = self.display.style()
        self.update_legend()
        self.views.apply_style(style)
        current = self.selected.analysis
        if current is not None and style.show_contours and current.regions_layer.was_removed:
            self.regions.update(recreate=True)

    def update_legend(self) -> None:
        style = self.display.style()
        self.legend.set_style(style.colormap, style.floor, style.opacity, style.threshold)
