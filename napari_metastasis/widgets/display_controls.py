"""The dock widget's display controls, built with magicgui: how every analysis is shown.

:class:`DisplayControls` holds the overlay's visibility, opacity, colormap and floor, the contours'
visibility, the threshold (with where the model's comes from) and the minimum region area (µm²);
:class:`DisplayStyle` is their values at one moment, which each slide's view draws itself in.
Probabilities are 0–1; the container knows no layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
)
from qtpy.QtWidgets import QDoubleSpinBox

from napari_metastasis._napari.colormaps import COLORMAPS, DEFAULT_FLOOR, DEFAULT_OPACITY
from napari_metastasis.models import Threshold
from napari_metastasis.widgets.controls import row


@dataclass(frozen=True)
class DisplayStyle:
    """How every analysis is drawn (the display controls' values)."""

    show_overlay: bool = True
    show_contours: bool = True
    opacity: float = DEFAULT_OPACITY
    colormap: str = COLORMAPS[0]
    floor: float = DEFAULT_FLOOR
    threshold: float = 0.5


class DisplayControls(Container):
    """Overlay and contours: visibility, opacity, colormap, floor, threshold, minimum area."""

    def __init__(self) -> None:
        self.show_overlay = CheckBox(
            text="Overlay", value=True, tooltip="Show or hide the probability map (Shift-O)"
        )
        self.show_contours = CheckBox(
            text="Contours", value=True, tooltip="Show or hide the contours (Shift-C)"
        )
        self.opacity = FloatSlider(label="Opacity", value=DEFAULT_OPACITY, min=0.0, max=1.0)
        self.colormap = ComboBox(label="Colormap", choices=list(COLORMAPS))
        self.floor = FloatSlider(
            label="Hide below",
            value=DEFAULT_FLOOR,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="Probabilities below this are not drawn, so the H&E stays readable "
            "(0 tints every analysed patch)",
        )
        self.threshold = FloatSlider(
            label="Threshold",
            value=0.5,
            min=0.0,
            max=1.0,
            step=0.005,
            tooltip="Regions are drawn where the probability is at least this",
        )
        for readout in self.threshold.native.findChildren(QDoubleSpinBox):
            readout.setDecimals(3)  # 0.735, not 0.73
        self.threshold_source = Label(value="")
        self.reset_threshold = PushButton(
            text="Reset", tooltip="Back to the model's threshold (its card's, else 0.5)"
        )
        self.min_area = FloatSpinBox(
            label="Min area",
            value=0.0,
            min=0.0,
            max=1e9,
            step=10000.0,
            tooltip="Regions smaller than this are not drawn (µm²)",
        )
        self.min_area.native.setDecimals(0)
        self.min_area.native.setSuffix(" µm²")
        self._model_threshold: Threshold | None = None
        super().__init__(
            widgets=[
                row(self.show_overlay, self.show_contours, label="Show"),
                self.opacity,
                self.colormap,
                self.floor,
                self.threshold,
                row(self.threshold_source, self.reset_threshold, label=""),
                self.min_area,
            ]
        )
        self.threshold.changed.connect(self._describe_threshold)
        self.reset_threshold.changed.connect(self._reset_threshold)

    def style(self) -> DisplayStyle:
        return DisplayStyle(
            bool(self.show_overlay.value),
            bool(self.show_contours.value),
            float(self.opacity.value),
            str(self.colormap.value),
            float(self.floor.value),
            float(self.threshold.value),
        )

    def on_style_changed(self, callback: Callable[[], None]) -> None:
        for widget in (self.show_overlay, self.show_contours, self.opacity, self.colormap):
            widget.changed.connect(lambda *_: callback())
        self.floor.changed.connect(lambda *_: callback())

    def on_regions_changed(self, callback: Callable[[], None]) -> None:
        for widget in (self.threshold, self.min_area):
            widget.changed.connect(lambda *_: callback())

    # --- the threshold ---------------------------------------------------------------------
    def set_model_threshold(self, threshold: Threshold) -> None:
        """The selected model's threshold: the slider moves there and says where it comes from."""
        self._model_threshold = threshold
        self.threshold.value = threshold.value
        self._describe_threshold()

    def _reset_threshold(self, *_: Any) -> None:
        if self._model_threshold is not None:
            self.threshold.value = self._model_threshold.value

    def _describe_threshold(self, *_: Any) -> None:
        model = self._model_threshold
        if model is None:
            self.threshold_source.value = ""
            return
        text = f"model's: {model.value:.3g} ({model.source})"
        if abs(self.threshold.value - model.value) > 5e-4:
            text += f"; now {self.threshold.value:.3g}"
        self.threshold_source.value = text

    @property
    def threshold_value(self) -> float:
        return float(self.threshold.value)

    @property
    def min_area_um2(self) -> float:
        return float(self.min_area.value)
