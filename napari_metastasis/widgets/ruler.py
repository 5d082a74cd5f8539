"""The Measure tool: draw a line on the slide and read its length in µm and mm while drawing.

A pathologist checks a deposit's size with a ruler; this is the ruler. *Measure* adds (or reuses) a
Shapes layer called "Measure" over the slide in line mode; every line in it is labelled with its
length, and the panel shows the line being drawn, updated on every mouse move. World coordinates of
a calibrated slide layer are µm (the reader's scale is the slide's µm/px), so a length is the
Euclidean length in world units; on an uncalibrated slide it is given in pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from napari_metastasis._napari.helpers import is_calibrated
from napari_metastasis.widgets.frame import SlideFrame

LAYER_NAME = "Measure"
#: Shapes-layer metadata key that marks the Measure layer (it is not a region to analyse).
METADATA_KEY = "metastasis_measure"


def line_length(points_yx: np.ndarray) -> float:
    """Length of a polyline given as (N, 2) world (y, x) points, in world units."""
    points = np.asarray(points_yx, dtype=np.float64).reshape(-1, 2)
    return float(np.sqrt((np.diff(points, axis=0) ** 2).sum(axis=1)).sum())


def format_length(length: float, calibrated: bool = True) -> str:
    """1234.5 µm -> "1.23 mm (1235 µm)"; px when the slide has no µm/px."""
    if not calibrated:
        return f"{length:.0f} px"
    if length >= 1000:
        return f"{length / 1000:.2f} mm ({length:.0f} µm)"
    return f"{length:.1f} µm ({length / 1000:.3f} mm)"


class MeasureTool(QWidget):
    """A checkable *Measure* button and the length of the line being drawn."""

    def __init__(
        self, viewer: Any, slide_layer: Callable[[], Any | None], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.slide_layer = slide_layer
        self._layer = None
        self.button = QPushButton("Measure")
        self.button.setCheckable(True)
        self.button.setToolTip(
            "Draw a line on the slide to measure it (its length in µm and mm shows as you draw)"
        )
        self.button.toggled.connect(self.set_active)
        self.label = QLabel("")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.button)
        layout.addWidget(self.label, 1)

    # --- the layer ---------------------------------------------------------------------------
    @property
    def layer(self) -> Any:
        """The Measure layer, made (over the selected slide) if there is none in the viewer."""
        if self._layer is None or self._layer not in self.viewer.layers:
            slide = self.slide_layer()
            units = SlideFrame.from_layer(slide).layer_kwargs() if slide is not None else {}
            layer = self.viewer.add_shapes(
                name=LAYER_NAME,
                ndim=2,
                edge_color="yellow",
                edge_width=self._edge_width(),
                face_color="transparent",
                features={"length": np.array([], dtype=object)},
                text={"string": "{length}", "color": "yellow", "size": 11, "anchor": "upper_left"},
                metadata={METADATA_KEY: True},
                **units,
            )
            layer.events.data.connect(self._on_data)
            layer.mouse_drag_callbacks.append(self._on_drag)
            self._layer = layer
        return self._layer

    def _edge_width(self) -> float:
        """About 3 screen pixels at the current zoom, in world units."""
        zoom = float(getattr(self.viewer.camera, "zoom", 1.0)) or 1.0
        return 3.0 / zoom

    @property
    def calibrated(self) -> bool:
        slide = self.slide_layer()
        return slide is None or is_calibrated(slide)

    def set_active(self, on: bool) -> None:
        """Measure on: the Measure layer is selected in line mode; off: back to panning."""
        if self.button.isChecked() != bool(on):
            self.button.setChecked(bool(on))  # re-enters through toggled
            return
        if on:
            layer = self.layer
            self.viewer.layers.selection.active = layer
            layer.mode = "add_line"
            self.label.setText("Draw a line on the slide.")
        elif self._layer is not None and self._layer in self.viewer.layers:
            self._layer.mode = "pan_zoom"
            slide = self.slide_layer()
            if slide is not None:
                self.viewer.layers.selection.active = slide

    # --- lengths -----------------------------------------------------------------------------
    def lengths(self) -> list[float]:
        """The length of every line in the Measure layer, in world units (µm when calibrated)."""
        if self._layer is None:
            return []
        return [line_length(points) for points in self._layer.data]

    def _show(self, length: float) -> None:
        self.label.setText(format_length(length, self.calibrated))

    def _on_data(self, event: Any = None) -> None:
        layer = self._layer
        lengths = self.lengths()
        texts = [format_length(v, self.calibrated) for v in lengths]
        if layer is not None and len(layer.features) == len(texts):
            with layer.events.data.blocker():
                layer.features = {"length": np.array(texts, dtype=object)}
        if lengths:
            self._show(lengths[-1])

    def _on_drag(self, layer: Any, event: Any) -> Iterator[None]:
        """While a line is being drawn, show its length on every mouse move."""
        if layer.mode not in ("add_line", "add_path", "direct", "select"):
            return
        yield
        while event.type == "mouse_move":
            if len(layer.data):
                # napari moves the line's end after this callback: measure to the cursor itself
                points = np.array(layer.data[-1], dtype=np.float64)
                points[-1] = layer.world_to_data(event.position)[-2:]
                self._show(line_length(points))
            yield
        if len(layer.data):
            self._show(line_length(layer.data[-1]))
