"""The dock widget's controls of what to analyse and how, built with magicgui.

Two containers, each a plain set of values with change signals and no knowledge of layers beyond
the choices it lists: :class:`SourceControls` (slide, µm/px, model, device, batch size, tissue) and
:class:`RunControls` (the mode and its options, Run and Cancel). How analyses are shown is
:mod:`.display_controls`'. The dock widget reads them and listens to them.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    RadioButtons,
    SpinBox,
)
from qtpy.QtWidgets import QRadioButton

from napari_metastasis import pipeline as engine
from napari_metastasis._napari.helpers import slide_layers, suggested_mpp
from napari_metastasis.models import DEFAULT_MODEL, DEVICE_CHOICES, available_models
from napari_metastasis.slides.slide import PLAUSIBLE_MPP_RANGE

MODES = ("Visible region", "Click", "Drawn shapes", "Whole slide")
VISIBLE, CLICK, SHAPES, WHOLE = MODES
DEFAULT_FIELD_UM = 1000.0
MODE_TIPS = {
    VISIBLE: "The part of the slide shown in the canvas now",
    CLICK: "Click the slide: the field around the point is analysed",
    SHAPES: "Rectangles and polygons drawn in a Shapes layer",
    WHOLE: "All the tissue of the slide",
}
#: The Overlap choice: how much neighbouring patches overlap (the grid step is the rest).
OVERLAPS = {"none": 0.0, "half a patch": 0.5}
NO_OVERLAP = "none"
#: What the µm/px field says about its value: (short label, tooltip).
MPP_SOURCES = {
    "metadata": ("file", "The slide file states this resolution"),
    "given": ("given", "Given here for a slide that states none; kept with its analyses"),
    "objective power": ("estimate", "Estimated from the objective power (10 / power): check it"),
    "none": ("enter it", "The slide states no usable µm/px: enter it to analyse the slide"),
}


def row(*widgets: Any, label: str = "") -> Container:
    """Widgets side by side, under one label."""
    return Container(widgets=list(widgets), layout="horizontal", labels=False, label=label)


class SourceControls(Container):
    """Slide, its µm/px, model, device, batch size, minimum tissue fraction."""

    def __init__(self, viewer: Any):
        self._viewer = viewer
        self.slide = ComboBox(
            label="Slide", choices=self._slide_choices, tooltip="Slide layers opened here"
        )
        self.mpp = FloatSpinBox(
            label="µm/px",
            value=0.0,
            min=0.0,
            max=PLAUSIBLE_MPP_RANGE[1],
            step=0.01,
            tooltip="Level-0 µm per pixel of the selected slide. Editable when the file states "
            "none: the layer is rescaled to µm and the value is remembered with the analysis",
        )
        self.mpp.native.setDecimals(4)
        self.mpp.native.setSpecialValueText("unknown")
        self.mpp.native.setKeyboardTracking(False)
        self.mpp_source = Label(value="")
        self.model = ComboBox(label="Model", choices=self._model_choices(), tooltip="")
        default = [c for c in self.model.choices if self.model.get_choice(DEFAULT_MODEL) == c]
        if default:
            self.model.value = default[0]
        self.browse = PushButton(
            text="Folder…", tooltip="Use a model folder (config.json + torchscript_model.pt)"
        )
        self.device = ComboBox(
            label="Device",
            choices=list(DEVICE_CHOICES),
            tooltip="auto: CUDA GPU if present, else Apple MPS, else CPU",
        )
        self.batch_size = SpinBox(
            label="Batch size",
            value=engine.DEFAULT_BATCH_SIZE,
            min=1,
            max=1024,
            tooltip="Patches per forward pass; lower it if the GPU runs out of memory",
        )
        self.tissue_min = FloatSpinBox(
            label="Min tissue",
            value=engine.DEFAULT_TISSUE_MIN_FRACTION,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip="Patches with less tissue than this fraction are background and are not "
            "classified (0 classifies everything)",
        )
        self.overlap = ComboBox(
            label="Overlap",
            choices=list(OVERLAPS),
            value=NO_OVERLAP,
            tooltip="Neighbouring patches side by side, or overlapping by half a patch: four "
            "times the patches, and deposit sizes measured to half a patch instead of a whole one",
        )
        self.exhaustive = CheckBox(
            text="Exhaustive",
            value=False,
            tooltip="Every patch through the full model. Unticked: a cheap first pass settles the "
            "plainly normal patches and the full model classifies the rest and the neighbours of "
            "positive patches (regions and deposits are the full model's; about twice as fast). "
            "Tick it to explore thresholds well below the model's",
        )
        super().__init__(
            widgets=[
                self.slide,
                row(self.mpp, self.mpp_source, label="µm/px"),
                row(self.model, self.browse, label="Model"),
                self.device,
                self.batch_size,
                self.tissue_min,
                self.overlap,
                self.exhaustive,
            ]
        )

    @property
    def overlap_fraction(self) -> float:
        """How much neighbouring patches overlap (0 or 0.5), as :class:`.jobs.JobRequest` wants."""
        return OVERLAPS[self.overlap.value]

    # --- choices ---------------------------------------------------------------------------
    def _slide_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in slide_layers(self._viewer)]

    @staticmethod
    def _model_choices() -> list[tuple[str, str]]:
        return [(name, str(folder)) for name, folder in available_models().items()]

    def add_model(self, name: str, ref: str, select: bool = True) -> None:
        """Offer a model (a folder, or a name only known from a loaded analysis)."""
        if name not in self.model_names:
            self.model.set_choice(name, ref)
        if select:
            self.model.value = self.model.get_choice(name)

    def select_model(self, name: str) -> None:
        if name in self.model_names:
            self.model.value = self.model.get_choice(name)

    @property
    def model_names(self) -> list[str]:
        return [self.model.native.itemText(i) for i in range(self.model.native.count())]

    @property
    def model_ref(self) -> str:
        return self.model.value or self.model_name

    @property
    def model_name(self) -> str:
        return self.model.current_choice or ""

    # --- the µm/px field -------------------------------------------------------------------
    def show_mpp(self, slide_layer: Any) -> None:
        """Fill the µm/px field for ``slide_layer``: editable unless the file states it."""
        value, source = suggested_mpp(slide_layer)
        with self.mpp.changed.blocked():
            self.mpp.value = value or 0.0
        self.mpp.enabled = slide_layer is not None and source != "metadata"
        label, tip = MPP_SOURCES[source] if slide_layer is not None else ("", "")
        self.mpp_source.value = label
        self.mpp_source.tooltip = tip
        self.mpp.tooltip = tip

    @property
    def mpp_value(self) -> float | None:
        value = float(self.mpp.value)
        return value if value > 0 else None


class RunControls(Container):
    """The analysis mode and its options, Run and Cancel."""

    def __init__(self, viewer: Any):
        self._viewer = viewer
        self.mode = RadioButtons(label="Analyse", choices=list(MODES), value=VISIBLE)  # type: ignore[call-arg]
        for button in self.mode.native.findChildren(QRadioButton):
            button.setToolTip(MODE_TIPS.get(button.text(), ""))
        self.field_size = FloatSpinBox(
            label="Field size",
            value=DEFAULT_FIELD_UM,
            min=50.0,
            max=20000.0,
            step=250.0,
            tooltip="Side of the square field analysed around each click (µm)",
        )
        self.field_size.native.setDecimals(0)
        self.field_size.native.setSuffix(" µm")
        self.shapes_layer = ComboBox(
            label="Shapes layer", choices=self._shapes_choices, nullable=False
        )
        self.new_shapes = PushButton(
            text="New", tooltip="Add a Shapes layer and start drawing rectangles"
        )
        self.selected_only = CheckBox(text="Only the selected shapes")
        self.run_button = PushButton(text="Run", tooltip="Analyse (Shift-R)")
        self.cancel_button = PushButton(
            text="Cancel", tooltip="Stop after the current batch (Shift-X)"
        )
        self.cancel_button.enabled = False
        self.shapes_row = row(self.shapes_layer, self.new_shapes, label="Shapes layer")
        self.mode_options = {
            CLICK: [self.field_size],
            SHAPES: [self.shapes_row, self.selected_only],
        }
        super().__init__(
            widgets=[
                self.mode,
                self.field_size,
                self.shapes_row,
                self.selected_only,
                row(self.run_button, self.cancel_button),
            ]
        )
        self.mode.changed.connect(self._show_options)
        self._show_options()

    def _shapes_choices(self, *_: Any) -> list[tuple[str, Any]]:
        from napari.layers import Shapes

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Shapes) and not layer.metadata.get("metastasis_regions")
        ]

    def _show_options(self, *_: Any) -> None:
        for mode, widgets in self.mode_options.items():
            for widget in widgets:  # type: ignore[attr-defined]
                widget.visible = mode == self.mode.value

    def set_mode(self, mode: str) -> None:
        self.mode.value = mode

    def select_shapes_layer(self, name: str) -> None:
        self.shapes_layer.reset_choices()
        choice = self.shapes_layer.get_choice(name) if name in self.shapes_names else None
        if choice is not None:
            self.shapes_layer.value = choice

    @property
    def shapes_names(self) -> list[str]:
        return [n for n, _ in self._shapes_choices()]
