"""Compare with a reference: the panel that picks a reference annotation layer and shows the score.

The reference is any Shapes layer of annotations (import a QuPath GeoJSON, an ASAP XML or a
Camelyon16 JSON with the Annotations panel's Import…, or File > Open). The numbers come from the
evaluation code (:func:`napari_metastasis.evaluation.compare.compare_with_reference`); this panel
only turns the layer into a reference geometry and shows the result: Dice, lesion sensitivity and
false positives, and the missed lesions, which can be clicked to.
"""

from __future__ import annotations

import math
from typing import Any

import shapely
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)
from shapely.geometry import MultiPolygon, Polygon

from napari_metastasis.annotations import tumour_geometry
from napari_metastasis.annotations.layers import layer_to_annotations
from napari_metastasis.evaluation.compare import FALSE_POSITIVE, HIT, ITC, Comparison
from napari_metastasis.widgets.ruler import METADATA_KEY as MEASURE_METADATA_KEY

#: Outline colours of regions while comparing.
STATUS_COLORS = {HIT: "#00ffff", FALSE_POSITIVE: "#ff00ff", ITC: "#ffffff"}


def reference_geometry(layer: Any, mpp: tuple[float, float]) -> Any:
    """Level-0 reference tumour geometry of a Shapes layer of annotations.

    Tumour classes minus exclusions (Camelyon16's ``_2``), as ``evaluate`` reads files; a layer
    whose outlines carry no tumour class counts every closed outline as reference.
    """
    annotations = layer_to_annotations(layer, layer.metadata.get("mpp", mpp))
    geometry = tumour_geometry(annotations)
    if geometry.is_empty:
        polygons = [
            a.geometry
            for a in annotations
            if isinstance(a.geometry, Polygon | MultiPolygon) and not a.is_exclusion
        ]
        geometry = shapely.union_all(polygons) if polygons else geometry
    return geometry


class ComparisonPanel(QWidget):
    """Reference layer, on/off, the summary line and the missed lesions."""

    #: the reference layer or the on/off switch changed
    changed = Signal()
    #: go to a missed lesion: its level-0 (minx, miny, maxx, maxy)
    lesion_activated = Signal(tuple)

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.enabled_check = QCheckBox("Compare with a reference")
        self.enabled_check.setToolTip(
            "Colour regions by whether they hit a reference lesion; list the lesions missed"
        )
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip(
            "A Shapes layer of reference annotations (Import… a GeoJSON, ASAP XML or Camelyon16 JSON)"
        )
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)  # type: ignore[attr-defined]
        self.missed_list = QListWidget()
        self.missed_list.setMaximumHeight(110)
        self.missed_list.setToolTip("Reference lesions no region hits: click one to go there")
        self.missed_list.itemClicked.connect(self._on_missed_clicked)
        self.missed_list.itemActivated.connect(self._on_missed_clicked)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow(self.enabled_check)
        form.addRow("Reference", self.layer_combo)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.missed_list)
        self.enabled_check.toggled.connect(lambda *_: self._emit())
        self.layer_combo.currentIndexChanged.connect(lambda *_: self._emit())
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh_layers)
        self.refresh_layers()
        self.show_comparison(None)

    # --- state ---------------------------------------------------------------------------------
    @property
    def reference_layer(self) -> Any | None:
        name = self.layer_combo.currentText()
        for layer in self.viewer.layers:
            if layer.name == name and type(layer).__name__ == "Shapes":
                return layer
        return None

    @property
    def active(self) -> bool:
        return self.enabled_check.isChecked() and self.reference_layer is not None

    def set_reference(self, layer: Any) -> None:
        """Compare with ``layer`` (a Shapes layer of annotations)."""
        self.refresh_layers()
        self.layer_combo.setCurrentText(layer.name)
        self.enabled_check.setChecked(True)

    def refresh_layers(self, *_: Any) -> None:
        current = self.layer_combo.currentText()
        names = [
            layer.name
            for layer in self.viewer.layers
            if type(layer).__name__ == "Shapes"
            and not layer.metadata.get("metastasis_regions")
            and not layer.metadata.get(MEASURE_METADATA_KEY)  # rulers are not annotations
        ]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        if current not in names and self.enabled_check.isChecked():
            self._emit()

    def _emit(self) -> None:
        self.changed.emit()

    # --- showing -------------------------------------------------------------------------------
    def show_comparison(self, comparison: Comparison | None, note: str = "") -> None:
        self.missed_list.clear()
        if comparison is None:
            self.summary.setText(note)
            self.missed_list.setVisible(False)
            return
        n = len(comparison.lesions)
        sensitivity = (
            f"{comparison.n_hit} of {n} lesions hit (sensitivity {comparison.sensitivity:.2f})"
            if n
            else "no reference lesion of 275 µm or more"
        )
        dice = (
            "cannot be measured"
            if math.isnan(comparison.dice)
            else f"{comparison.dice:.2f} (Dice: 0 none, 1 the same area)"
        )
        self.summary.setText(
            f"At threshold {comparison.threshold:.2f}: overlap of the regions with the "
            f"reference {dice}; {sensitivity}; "
            f"{comparison.false_positives} false positive region"
            f"{'s' * (comparison.false_positives != 1)}. "
            "Outlines: cyan = hit, magenta = false positive, white = isolated tumour cells."
        )
        for lesion in comparison.missed:
            minx, miny, maxx, maxy = lesion.bounds
            item = QListWidgetItem(
                f"Missed lesion {lesion.label}: x {minx:.0f}–{maxx:.0f}, y {miny:.0f}–{maxy:.0f} px"
            )
            item.setData(Qt.ItemDataRole.UserRole, lesion.bounds)
            self.missed_list.addItem(item)
        self.missed_list.setVisible(bool(comparison.missed))

    def _on_missed_clicked(self, item: QListWidgetItem) -> None:
        self.lesion_activated.emit(tuple(item.data(Qt.ItemDataRole.UserRole)))
