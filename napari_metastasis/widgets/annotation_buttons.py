"""A small panel of annotation buttons: Import…, Export GeoJSON / ASAP XML / CSV, Region crops.

The main dock widget embeds it and tells it which slide layer is in use (``slide_layer_provider``);
on its own it uses the selected or top-most slide layer. Every button slot only asks for a path
and calls a plain handler (:meth:`import_file`, :meth:`export`, :meth:`export_crops`), so tests and
other code call the handlers directly, without modal dialogs. Failures become napari notifications.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_metastasis._napari.annotation_files import read_annotation_layers
from napari_metastasis._napari.helpers import error, find_slide_layer, info, slide_calibration
from napari_metastasis.annotations import write_annotations
from napari_metastasis.annotations.crops import export_region_crops
from napari_metastasis.annotations.layers import layer_to_annotations
from napari_metastasis.errors import MetastasisError

EXPORT_FILTERS = {
    "geojson": "QuPath GeoJSON (*.geojson *.json)",
    "asap": "ASAP XML (*.xml)",
    "csv": "CSV summary (*.csv)",
}
EXPORT_SUFFIX = {"geojson": ".geojson", "asap": ".xml", "csv": ".csv"}


class AnnotationIOWidget(QWidget):
    """Import and export annotations for the slide in the viewer."""

    def __init__(self, viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        #: Returns the slide layer to use; the dock widget replaces it with its own choice.
        self.slide_layer_provider: Callable[[], Any | None] = lambda: find_slide_layer(viewer)

        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The Shapes or Points layer to export")
        self.crop_level = QSpinBox()
        self.crop_level.setRange(-1, 32)
        self.crop_level.setValue(-1)
        self.crop_level.setSpecialValueText("auto")
        self.crop_level.setToolTip("Slide level for region crops; auto fits each crop in 2048 px")

        self.import_button = QPushButton("Import…")
        self.geojson_button = QPushButton("Export GeoJSON…")
        self.asap_button = QPushButton("Export ASAP XML…")
        self.csv_button = QPushButton("Export CSV…")
        self.crops_button = QPushButton("Region crops…")
        self.import_button.setToolTip("Open QuPath GeoJSON, ASAP XML or NCRF JSON annotations")

        form = QFormLayout()
        form.addRow("Annotations", self.layer_combo)
        form.addRow("Crop level", self.crop_level)
        grid = QGridLayout()
        grid.addWidget(self.import_button, 0, 0)
        grid.addWidget(self.crops_button, 0, 1)
        grid.addWidget(self.geojson_button, 1, 0)
        grid.addWidget(self.asap_button, 1, 1)
        grid.addWidget(self.csv_button, 2, 0)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addLayout(grid)

        self.import_button.clicked.connect(self._on_import)
        self.geojson_button.clicked.connect(lambda: self._on_export("geojson"))
        self.asap_button.clicked.connect(lambda: self._on_export("asap"))
        self.csv_button.clicked.connect(lambda: self._on_export("csv"))
        self.crops_button.clicked.connect(self._on_crops)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh_layers)
        self.refresh_layers()

    # --- handlers (no dialogs) -----------------------------------------------------------------
    def import_file(self, path: str | Path) -> list[Any]:
        """Read ``path`` onto the slide in use; returns the layers added (none on failure)."""
        try:
            layer_data = read_annotation_layers(str(path), self.slide_layer_provider())
        except MetastasisError as exc:
            error(str(exc))
            return []
        added = []
        for data, kwargs, layer_type in layer_data:
            added.append(getattr(self.viewer, f"add_{layer_type}")(data, **kwargs))
        self.refresh_layers()
        if added:
            self.layer_combo.setCurrentText(added[0].name)
        return added

    def export(self, path: str | Path, fmt: str | None = None) -> Path | None:
        """Write the chosen layer to ``path`` (format by ``fmt`` or extension); None on failure."""
        layer = self.current_layer()
        if layer is None:
            error("No Shapes or Points layer to export.")
            return None
        try:
            annotations = layer_to_annotations(layer, self._layer_mpp(layer))
            written = write_annotations(path, annotations, fmt, mpp=self._measure_mpp(layer))
        except MetastasisError as exc:
            error(str(exc))
            return None
        info(f"{len(annotations)} annotations written to {Path(written).name}")
        return written

    def export_crops(self, out_dir: str | Path, fmt: str = "png") -> list[Path]:
        """One image per region of the chosen layer, from the slide in use, into ``out_dir``."""
        layer = self.current_layer()
        slide_layer = self.slide_layer_provider()
        if layer is None or slide_layer is None:
            error("Region crops need a slide layer and a Shapes layer of regions.")
            return []
        from napari_metastasis.slides.slide import Slide

        level = self.crop_level.value()
        try:
            annotations = layer_to_annotations(layer, self._layer_mpp(layer))
            with Slide(slide_layer.metadata["slide_path"]) as slide:
                paths = export_region_crops(
                    slide, annotations, out_dir, level=None if level < 0 else level, fmt=fmt
                )
        except MetastasisError as exc:
            error(str(exc))
            return []
        info(f"{len(paths)} region crops written to {out_dir}")
        return paths

    def current_layer(self) -> Any | None:
        name = self.layer_combo.currentText()
        matches = [layer for layer in self.viewer.layers if layer.name == name]
        return matches[0] if matches else None

    # --- helpers -------------------------------------------------------------------------------
    def _layer_mpp(self, layer: Any) -> Any:
        if "mpp" in layer.metadata:
            return layer.metadata["mpp"]
        return slide_calibration(self.slide_layer_provider())[0]

    def _measure_mpp(self, layer: Any) -> Any:
        """µm/px for measurements: only when it is real (a calibrated slide)."""
        if "mpp" in layer.metadata:
            return layer.metadata["mpp"] if layer.metadata.get("calibrated", True) else None
        mpp, calibrated = slide_calibration(self.slide_layer_provider())
        return mpp if calibrated else None

    def select_layer(self, name: str) -> None:
        """Offer ``name`` (e.g. fresh regions) as the layer to export."""
        self.refresh_layers()
        self.layer_combo.setCurrentText(name)

    def refresh_layers(self, *_: Any) -> None:
        current = self.layer_combo.currentText()
        names = [
            layer.name
            for layer in self.viewer.layers
            if type(layer).__name__ in ("Shapes", "Points")
        ]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)

    # --- button slots (dialogs) ----------------------------------------------------------------
    def _on_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import annotations", "", "Annotations (*.geojson *.json *.xml)"
        )
        if path:
            self.import_file(path)

    def _on_export(self, fmt: str) -> None:
        layer = self.current_layer()
        suggestion = (layer.name if layer else "annotations") + EXPORT_SUFFIX[fmt]
        path, _ = QFileDialog.getSaveFileName(
            self, "Export annotations", suggestion, EXPORT_FILTERS[fmt]
        )
        if path:
            if not Path(path).suffix:
                path += EXPORT_SUFFIX[fmt]
            self.export(path, fmt)

    def _on_crops(self) -> None:
        out_dir = QFileDialog.getExistingDirectory(self, "Folder for region crops")
        if out_dir:
            self.export_crops(out_dir)
