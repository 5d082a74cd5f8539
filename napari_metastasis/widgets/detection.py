"""The "Metastasis detection" dock widget: analyse, look at the heatmap, review regions, save.

It is the glue between napari and the package: it reads the controls, turns the viewer's state
into a region (:mod:`.selection`), hands requests to the :class:`.runner.AnalysisRunner` (a napari
thread worker that fills the slide's shared :class:`ProbabilityMap`, see :mod:`.session`), redraws
the overlay (:mod:`.overlay`) and the contours (:mod:`.regions_layer`) a few times a second while a
run streams in, and lists the regions (:mod:`.navigator`). It never computes anything the engine or
the contours module knows how to compute, and never blocks the GUI thread on the slide or the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from napari.layers import Image, Shapes
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from .. import engine
from ..contours import probability_contours
from ..errors import MetastasisError
from ..models import DEFAULT_MODEL, DEVICE_CHOICES, available_models
from ..probability import ProbabilityMap
from . import selection
from .annotation_io import AnnotationIOWidget
from .frame import SlideFrame
from .jobs import JobRequest, Planned, Resources, format_duration
from .navigator import RegionEdits, RegionNavigator, centre_camera_on
from .overlay import COLORMAPS, DEFAULT_OPACITY, ProbabilityOverlay
from .regions_layer import RegionsLayer
from .runner import AnalysisRunner, Progress, RunSummary
from .session import (
    AnalysisStore,
    check_matches_slide,
    is_remembered_model,
    remembered_for,
    slide_key,
)

MODES = ("Visible region", "Click", "Drawn shapes", "Whole slide")
VISIBLE, CLICK, SHAPES, WHOLE = MODES
DEFAULT_FIELD_UM = 1000.0
DEFAULT_THRESHOLD = 0.5
#: Redraw the overlay and contours at most this often while batches stream in (ms).
REFRESH_MS = 250
#: Wait this long after the threshold or min-area last moved before recomputing contours (ms).
CONTOUR_DEBOUNCE_MS = 60
#: While a run streams in, contours are redrawn at most this often (s).
CONTOUR_RUN_S = 1.0
#: A press and release closer than this (screen px) is a click, farther is a pan.
CLICK_TOLERANCE_PX = 5


@dataclass
class Analysis:
    """What the viewer shows for one slide and one model."""

    slide_path: str
    slide_name: str
    prob_map: ProbabilityMap
    overlay: ProbabilityOverlay
    regions_layer: RegionsLayer
    edits: RegionEdits = field(default_factory=RegionEdits)
    regions: list = field(default_factory=list)  # after edits, in the layer's order
    labels: list = field(default_factory=list)

    @property
    def model_name(self) -> str:
        return self.prob_map.model_name


def is_slide_layer(layer) -> bool:
    return isinstance(layer, Image) and "slide" in (layer.metadata or {})


class MetastasisWidget(QWidget):
    """Plugins > napari-metastasis > Metastasis detection."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.store = AnalysisStore()
        self.resources = Resources()
        self.analyses: dict[tuple[str, str], Analysis] = {}
        self.remember = True
        self.runner = AnalysisRunner(self.store, self.resources, parent=self)
        self.runner.stage.connect(lambda message: self.status.setText(message))
        self.runner.planned.connect(self._on_planned)
        self.runner.progressed.connect(self._on_progress)
        self.runner.failed.connect(self._on_failed)
        self.runner.finished.connect(self._on_run_finished)
        self._run_analysis: Analysis | None = None
        self._next_contours_at = 0.0
        self._restored: set[str] = set()

        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_MS)
        self._refresh_timer.timeout.connect(self._refresh_current_run)
        self._contour_timer = QTimer(self)
        self._contour_timer.setSingleShot(True)
        self._contour_timer.setInterval(CONTOUR_DEBOUNCE_MS)
        self._contour_timer.timeout.connect(self.update_contours)
        self._pending_restore: list = []
        self._restore_timer = QTimer(self)
        self._restore_timer.setSingleShot(True)
        self._restore_timer.setInterval(0)
        self._restore_timer.timeout.connect(self._restore_pending)

        self._build()
        self._connect_viewer()
        self._refresh_layer_choices()
        self._on_mode_changed()
        for layer in list(self.viewer.layers):  # slides opened before the widget
            if is_slide_layer(layer):
                layer.events.name.connect(self._on_layers_changed)
                self._schedule_restore(layer)

    # ============================================================================ building the UI
    def _build(self) -> None:
        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.addWidget(self._build_source_box())
        layout.addWidget(self._build_run_box())
        layout.addWidget(self._build_overlay_box())
        layout.addWidget(self._build_regions_box())
        layout.addWidget(self._build_annotations_box())
        layout.addWidget(self._build_files_box())
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumWidth(340)
        for combo in self.findChildren(QComboBox):  # long layer names must not widen the dock
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)

    def _build_source_box(self) -> QGroupBox:
        box = QGroupBox("Slide and model")
        form = QFormLayout(box)
        self.slide_combo = QComboBox()
        self.slide_combo.setToolTip("Slide layers opened with napari-metastasis")
        self.slide_combo.currentIndexChanged.connect(self._on_slide_changed)
        form.addRow("Slide", self.slide_combo)

        self.model_combo = QComboBox()
        for name, folder in available_models().items():
            self.model_combo.addItem(name, str(folder))
            self.model_combo.setItemData(self.model_combo.count() - 1, str(folder), Qt.ToolTipRole)
        index = self.model_combo.findText(DEFAULT_MODEL)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.browse_button = QPushButton("Folder…")
        self.browse_button.setToolTip("Use a model folder (config.json + torchscript_model.pt)")
        self.browse_button.clicked.connect(self._browse_model)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.browse_button)
        form.addRow("Model", row)

        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.device_combo.setToolTip("auto: CUDA GPU if present, else Apple MPS, else CPU")
        form.addRow("Device", self.device_combo)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 1024)
        self.batch_spin.setValue(engine.DEFAULT_BATCH_SIZE)
        self.batch_spin.setToolTip(
            "Patches per forward pass; lower it if the GPU runs out of memory"
        )
        form.addRow("Batch size", self.batch_spin)
        self.tissue_spin = QDoubleSpinBox()
        self.tissue_spin.setRange(0.0, 1.0)
        self.tissue_spin.setSingleStep(0.05)
        self.tissue_spin.setDecimals(2)
        self.tissue_spin.setValue(engine.DEFAULT_TISSUE_MIN_FRACTION)
        self.tissue_spin.setToolTip(
            "Patches with less tissue than this fraction are background and are not classified "
            "(0 classifies everything)"
        )
        form.addRow("Min tissue fraction", self.tissue_spin)
        return box

    def _build_run_box(self) -> QGroupBox:
        box = QGroupBox("Analyse")
        layout = QVBoxLayout(box)
        modes = QGridLayout()
        self.mode_group = QButtonGroup(self)
        self.mode_buttons: dict[str, QRadioButton] = {}
        tips = {
            VISIBLE: "The part of the slide shown in the canvas now",
            CLICK: "Click the slide: the field around the point is analysed",
            SHAPES: "Rectangles and polygons drawn in a Shapes layer",
            WHOLE: "All the tissue of the slide",
        }
        for i, mode in enumerate(MODES):
            button = QRadioButton(mode)
            button.setToolTip(tips[mode])
            self.mode_group.addButton(button, i)
            self.mode_buttons[mode] = button
            modes.addWidget(button, i // 2, i % 2)
        self.mode_buttons[VISIBLE].setChecked(True)
        self.mode_group.buttonToggled.connect(lambda *_: self._on_mode_changed())
        layout.addLayout(modes)

        click_page = QWidget()
        click_form = QFormLayout(click_page)
        click_form.setContentsMargins(0, 0, 0, 0)
        self.field_spin = QDoubleSpinBox()
        self.field_spin.setRange(50.0, 20000.0)
        self.field_spin.setSingleStep(250.0)
        self.field_spin.setDecimals(0)
        self.field_spin.setSuffix(" µm")
        self.field_spin.setValue(DEFAULT_FIELD_UM)
        self.field_spin.setToolTip("Side of the square field analysed around each click")
        click_form.addRow("Field size", self.field_spin)
        layout.addWidget(click_page)
        shapes_page = QWidget()
        shapes_form = QFormLayout(shapes_page)
        shapes_form.setContentsMargins(0, 0, 0, 0)
        self.shapes_combo = QComboBox()
        self.new_shapes_button = QPushButton("New")
        self.new_shapes_button.setToolTip("Add a Shapes layer and start drawing rectangles")
        self.new_shapes_button.clicked.connect(self._new_shapes_layer)
        row = QHBoxLayout()
        row.addWidget(self.shapes_combo, 1)
        row.addWidget(self.new_shapes_button)
        shapes_form.addRow("Shapes layer", row)
        self.selected_only_check = QCheckBox("Only the selected shapes")
        shapes_form.addRow(self.selected_only_check)
        layout.addWidget(shapes_page)
        self.mode_options = {CLICK: click_page, SHAPES: shapes_page}

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m patches")
        layout.addWidget(self.progress)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status)
        return box

    def _build_overlay_box(self) -> QGroupBox:
        box = QGroupBox("Overlay and contours")
        form = QFormLayout(box)
        self.show_overlay_check = QCheckBox("Probability map")
        self.show_overlay_check.setChecked(True)
        self.show_overlay_check.toggled.connect(self._on_overlay_style)
        self.show_contours_check = QCheckBox("Contours")
        self.show_contours_check.setChecked(True)
        self.show_contours_check.toggled.connect(self._on_overlay_style)
        row = QHBoxLayout()
        row.addWidget(self.show_overlay_check)
        row.addWidget(self.show_contours_check)
        form.addRow("Show", row)
        self.opacity_slider = QLabeledDoubleSlider(Qt.Horizontal)
        self.opacity_slider.setRange(0.0, 1.0)
        self.opacity_slider.setValue(DEFAULT_OPACITY)
        self.opacity_slider.valueChanged.connect(self._on_overlay_style)
        form.addRow("Opacity", self.opacity_slider)
        self.colormap_combo = QComboBox()
        self.colormap_combo.addItems(list(COLORMAPS))
        self.colormap_combo.currentIndexChanged.connect(self._on_overlay_style)
        form.addRow("Colormap", self.colormap_combo)
        self.threshold_slider = QLabeledDoubleSlider(Qt.Horizontal)
        self.threshold_slider.setRange(0.0, 1.0)
        self.threshold_slider.setSingleStep(0.01)
        self.threshold_slider.setValue(DEFAULT_THRESHOLD)
        self.threshold_slider.setToolTip("Regions are drawn where the probability is at least this")
        self.threshold_slider.valueChanged.connect(lambda *_: self._contour_timer.start())
        form.addRow("Threshold", self.threshold_slider)
        self.min_area_spin = QDoubleSpinBox()
        self.min_area_spin.setRange(0.0, 1e9)
        self.min_area_spin.setDecimals(0)
        self.min_area_spin.setSingleStep(10000.0)
        self.min_area_spin.setSuffix(" µm²")
        self.min_area_spin.setToolTip("Regions smaller than this are not drawn")
        self.min_area_spin.valueChanged.connect(lambda *_: self._contour_timer.start())
        form.addRow("Min area", self.min_area_spin)
        return box

    def _build_regions_box(self) -> QGroupBox:
        box = QGroupBox("Regions")
        layout = QVBoxLayout(box)
        self.navigator = RegionNavigator()
        self.navigator.activated.connect(self.go_to_region)
        self.navigator.delete_requested.connect(self.delete_regions)
        self.navigator.relabel_requested.connect(self.relabel_regions)
        self.navigator.restore_requested.connect(self.restore_regions)
        layout.addWidget(self.navigator)
        return box

    def _build_files_box(self) -> QGroupBox:
        box = QGroupBox("Analysis files")
        layout = QVBoxLayout(box)
        buttons = QHBoxLayout()
        self.save_button = QPushButton("Save analysis…")
        self.save_button.setToolTip("Save the probability map (with its grid) as a TIFF")
        self.save_button.clicked.connect(self._save_dialog)
        self.load_button = QPushButton("Load analysis…")
        self.load_button.clicked.connect(self._load_dialog)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.load_button)
        layout.addLayout(buttons)
        self.remember_check = QCheckBox("Remember analyses")
        self.remember_check.setToolTip(
            "Keep each analysis on disk and show it again when the slide is reopened"
        )
        self.remember_check.setChecked(True)
        self.remember_check.toggled.connect(lambda on: setattr(self, "remember", bool(on)))
        layout.addWidget(self.remember_check)
        return box

    def _build_annotations_box(self) -> QGroupBox:
        """The annotation panel (import, export GeoJSON / ASAP XML / CSV, crops), on our slide."""
        box = QGroupBox("Annotations")
        layout = QVBoxLayout(box)
        self.annotation_io = AnnotationIOWidget(self.viewer)
        self.annotation_io.slide_layer_provider = lambda: self.slide_layer
        layout.addWidget(self.annotation_io)
        return box

    # ====================================================================== viewer connections
    def _connect_viewer(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._on_layer_inserted)
        events.removed.connect(self._on_layer_removed)
        events.reordered.connect(self._on_layers_changed)
        self.viewer.mouse_drag_callbacks.append(self._on_mouse_drag)
        self.destroyed.connect(self._disconnect_viewer)

    def _disconnect_viewer(self, *_) -> None:
        if self._on_mouse_drag in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_mouse_drag)

    def _on_layer_inserted(self, event) -> None:
        layer = event.value
        layer.events.name.connect(self._on_layers_changed)
        self._refresh_layer_choices()
        if is_slide_layer(layer):
            self.select_slide_layer(layer)
            self._schedule_restore(layer)

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        if is_slide_layer(layer):  # reopening it later shows its analyses again
            self._restored.discard(slide_key(layer.metadata.get("slide_path", "")))
        self._refresh_layer_choices()

    def _on_layers_changed(self, event=None) -> None:
        self._refresh_layer_choices()

    def _refresh_layer_choices(self) -> None:
        current = self.slide_layer
        self.slide_combo.blockSignals(True)
        self.slide_combo.clear()
        for layer in self.viewer.layers:
            if is_slide_layer(layer):
                self.slide_combo.addItem(layer.name, layer)
        if current is not None:
            index = self.slide_combo.findText(current.name)
            if index >= 0:
                self.slide_combo.setCurrentIndex(index)
        self.slide_combo.blockSignals(False)

        current_shapes = self.shapes_combo.currentText()
        self.shapes_combo.clear()
        for layer in self.viewer.layers:
            if isinstance(layer, Shapes) and not layer.metadata.get("metastasis_regions"):
                self.shapes_combo.addItem(layer.name, layer)
        index = self.shapes_combo.findText(current_shapes)
        if index >= 0:
            self.shapes_combo.setCurrentIndex(index)
        has_slide = self.slide_combo.count() > 0
        self.run_button.setEnabled(has_slide and self.mode != CLICK)
        if not has_slide and not self.is_running:
            self.status.setText("Open a slide (File > Open) to start.")
        elif self.status.text().startswith("Open a slide"):
            self.status.setText("Ready.")
        self._sync_navigator()

    # ============================================================================ state access
    @property
    def slide_layer(self):
        layer = self.slide_combo.currentData() if self.slide_combo.count() else None
        return layer if layer is not None and layer in self.viewer.layers else None

    def select_slide_layer(self, layer) -> None:
        index = self.slide_combo.findText(layer.name)
        if index >= 0:
            self.slide_combo.setCurrentIndex(index)

    @property
    def slide_path(self) -> str | None:
        layer = self.slide_layer
        return layer.metadata.get("slide_path") if layer is not None else None

    @property
    def model_ref(self) -> str:
        return self.model_combo.currentData() or self.model_combo.currentText()

    @property
    def model_name(self) -> str:
        return self.model_combo.currentText()

    @property
    def mode(self) -> str:
        return MODES[max(0, self.mode_group.checkedId())]

    def set_mode(self, mode: str) -> None:
        self.mode_buttons[mode].setChecked(True)

    @property
    def is_running(self) -> bool:
        return self.runner.is_running

    @property
    def current_analysis(self) -> Analysis | None:
        """The analysis of the selected slide with the selected model, if any."""
        path = self.slide_path
        if path is None:
            return None
        return self.analyses.get((slide_key(path), self.model_name))

    def _frame(self) -> SlideFrame | None:
        layer = self.slide_layer
        return SlideFrame.from_layer(layer) if layer is not None else None

    # ============================================================================== controls
    def _on_mode_changed(self) -> None:
        mode = self.mode
        for name, page in self.mode_options.items():
            page.setVisible(name == mode)
        has_slide = self.slide_layer is not None
        self.run_button.setEnabled(has_slide and mode != CLICK)
        if mode == CLICK:
            self.run_button.setText("Run (click the slide)")
            if not self.is_running:
                self.status.setText(
                    "Click mode: click the slide to analyse the field around the point "
                    "(pan by dragging as usual)."
                )
        else:
            self.run_button.setText("Run")
            if not self.is_running and self.status.text().startswith("Click mode"):
                self.status.setText("Ready.")

    def _on_slide_changed(self, *_) -> None:
        self._sync_navigator()

    def _on_model_changed(self, *_) -> None:
        self._sync_navigator()

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if folder:
            self.add_model_folder(folder)

    def add_model_folder(self, folder: str | Path) -> None:
        """Offer ``folder`` in the model list and select it (validated when it is loaded)."""
        folder = Path(folder)
        index = self.model_combo.findData(str(folder))
        if index < 0:
            self.model_combo.addItem(folder.name, str(folder))
            index = self.model_combo.count() - 1
            self.model_combo.setItemData(index, str(folder), Qt.ToolTipRole)
        self.model_combo.setCurrentIndex(index)

    def _new_shapes_layer(self) -> None:
        frame = self._frame()
        units = frame.layer_kwargs() if frame is not None else {}
        layer = self.viewer.add_shapes(
            name="Regions to analyse", ndim=2, edge_color="cyan", **units
        )
        layer.face_color = "transparent"
        layer.mode = "add_rectangle"
        index = self.shapes_combo.findText(layer.name)
        if index >= 0:
            self.shapes_combo.setCurrentIndex(index)

    def _on_overlay_style(self, *_) -> None:
        for analysis in self.analyses.values():
            analysis.overlay.set_visible(self.show_overlay_check.isChecked())
            analysis.overlay.set_opacity(self.opacity_slider.value())
            analysis.overlay.set_colormap(self.colormap_combo.currentText())
            analysis.regions_layer.set_visible(self.show_contours_check.isChecked())
        current = self.current_analysis
        wanted = self.show_contours_check.isChecked()
        if current is not None and wanted and current.regions_layer.was_removed:
            self.update_contours(recreate=True)

    # ============================================================================ running
    def run(self) -> None:
        """Analyse according to the selected mode (the Run button)."""
        if self.mode == CLICK:
            show_info("Click mode: click the slide to analyse the field around the point.")
            return
        request = self._request_for_mode()
        if request is not None:
            self.submit(request)

    def analyse_field_at(self, position_yx) -> JobRequest | None:
        """Analyse the field (size from the widget) around a world point, as a click does."""
        frame = self._frame()
        if frame is None:
            show_warning("Open a slide first.")
            return None
        size = self.field_spin.value()
        rect = selection.field_around(position_yx, size, frame)
        if rect is None:
            self.status.setText("That click was outside the slide.")
            return None
        request = self._make_request(rect, f"{size:g} µm field")
        return self.submit(request) if request is not None else None

    def _request_for_mode(self) -> JobRequest | None:
        frame = self._frame()
        if frame is None:
            show_warning("Open a slide first (File > Open, or File > Open Sample).")
            return None
        mode = self.mode
        if mode == VISIBLE:
            rect = selection.visible_region(self.viewer, frame)
            if rect is None:
                show_warning("The view shows none of the slide: pan or zoom to it first.")
                return None
            return self._make_request(rect, "visible region")
        if mode == SHAPES:
            layer = self.shapes_combo.currentData()
            if layer is None or layer not in self.viewer.layers or not len(layer.data):
                show_warning(
                    "Draw rectangles or polygons in a Shapes layer first (the New button adds one)."
                )
                return None
            geometry = selection.shapes_geometry(
                layer, frame, selected_only=self.selected_only_check.isChecked()
            )
            if geometry.is_empty:
                show_warning(f"{layer.name}: no rectangle or polygon lies on the slide.")
                return None
            n = len(layer.selected_data) if self.selected_only_check.isChecked() else 0
            n = n or len(layer.data)
            return self._make_request(geometry, f"{n} drawn shape{'s' * (n != 1)}")
        return self._make_request(None, "whole slide")

    def _make_request(self, region, description: str) -> JobRequest | None:
        if not self.model_ref:
            show_warning("No model: choose a model folder (config.json + torchscript_model.pt).")
            return None
        return JobRequest(
            slide_path=self.slide_path,
            model_ref=self.model_ref,
            model_name=self.model_name,
            description=description,
            region=region,
            device=self.device_combo.currentText(),
            batch_size=self.batch_spin.value(),
            tissue_min_fraction=self.tissue_spin.value(),
        )

    def submit(self, request: JobRequest) -> JobRequest:
        """Run ``request`` now, or after the runs already queued (clicks can pile up)."""
        was_running = self.runner.is_running
        self.runner.submit(request)
        if was_running:
            self.status.setText(
                self.status.text().split(" (+")[0] + f" (+{len(self.runner.queue)} queued)"
            )
        else:
            self.progress.setRange(0, 0)  # busy until the plan is known
            self.status.setText(f"Starting: {request.description}…")
            self.cancel_button.setEnabled(True)
        return request

    def cancel(self) -> None:
        """Stop the current run after its current batch (finished patches are kept), drop the queue."""
        if self.runner.cancel():
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling after the current batch…")

    def _on_planned(self, event: Planned) -> None:
        slide_layer = self._layer_for_path(event.request.slide_path)
        analysis = self._ensure_analysis(event.request.slide_path, event.prob_map, slide_layer)
        self._run_analysis = analysis
        self.progress.setRange(0, max(1, event.total))
        self.progress.setValue(0 if event.total else 1)
        parts = [f"{event.request.description}: {event.total} patches to classify"]
        if event.reused:
            parts.append(f"{event.reused} reused from earlier analyses")
        if event.background:
            parts.append(f"{event.background} background skipped")
        self.status.setText(", ".join(parts) + ".")
        analysis.overlay.refresh()
        if self.current_analysis is analysis:
            self.update_contours(recreate=True)

    def _on_progress(self, p: Progress) -> None:
        self.progress.setValue(p.done)
        queued = f" (+{p.queued} queued)" if p.queued else ""
        self.status.setText(
            f"{p.request.description}: {p.done} / {p.total} patches, {p.rate:.1f} patches/s, "
            f"{format_duration(p.remaining_s)} left{queued}"
        )
        if not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def _refresh_current_run(self) -> None:
        """Redraw while a run streams in: the overlay every time, the contours less often.

        Contours of a large map can take a noticeable fraction of a second on the GUI thread, so
        during a run they are redrawn at most every CONTOUR_RUN_S, or 5× their own cost if more
        (the final redraw when the run ends is always made).
        """
        analysis = self._run_analysis
        if analysis is None:
            return
        analysis.overlay.refresh()
        now = time.perf_counter()
        if analysis is self.current_analysis and now >= self._next_contours_at:
            self.update_contours()
            cost = time.perf_counter() - now
            self._next_contours_at = time.perf_counter() + max(CONTOUR_RUN_S, 5 * cost)

    def _on_failed(self, message: str) -> None:
        self.status.setText(message)
        show_error(message)

    def _on_run_finished(self, summary: RunSummary) -> None:
        analysis = self._run_analysis
        self._run_analysis = None
        self._refresh_timer.stop()
        self.cancel_button.setEnabled(self.runner.is_running)
        if self.progress.maximum() == 0:  # stopped before the plan was known
            self.progress.setRange(0, 1)
        if analysis is not None:
            analysis.overlay.refresh()
            if analysis is self.current_analysis:
                self.update_contours()
            self._remember(analysis)
        if summary.error is not None:
            pass  # the error message stays in the status line
        elif summary.cancelled:
            self.status.setText(
                f"Cancelled: {summary.done} of {summary.total} patches classified "
                "(kept in the overlay)."
                if summary.prob_map is not None
                else "Cancelled."
            )
        else:
            self.progress.setValue(self.progress.maximum())
            reused = f", {summary.reused} reused" if summary.reused else ""
            self.status.setText(
                f"Done: {summary.request.description}, {summary.total} patches classified"
                f"{reused} in {format_duration(summary.seconds)}."
            )
        if self.runner.is_running:  # the next queued request started
            self.progress.setRange(0, 0)

    # ============================================================================ analyses
    def _layer_for_path(self, slide_path: str):
        key = slide_key(slide_path)
        for layer in self.viewer.layers:
            if is_slide_layer(layer) and slide_key(layer.metadata.get("slide_path", "")) == key:
                return layer
        return None

    def _ensure_analysis(self, slide_path: str, prob_map: ProbabilityMap, slide_layer) -> Analysis:
        """The Analysis showing ``prob_map``: new layers for a new map, the old ones otherwise."""
        key = (slide_key(slide_path), prob_map.model_name)
        analysis = self.analyses.get(key)
        if analysis is not None and analysis.prob_map is prob_map:
            return analysis
        if analysis is not None:  # the map was replaced (e.g. a model with another grid)
            # reuse the layers: napari (0.9, software GL) can crash drawing after a Shapes layer
            # is removed and another added, so layers are never churned needlessly
            analysis.prob_map = prob_map
            analysis.overlay.set_map(prob_map)
            analysis.edits.clear()
            return analysis
        frame = (
            SlideFrame.from_layer(slide_layer)
            if slide_layer is not None
            else SlideFrame.from_grid(prob_map.grid)
        )
        slide_name = slide_layer.name if slide_layer is not None else Path(slide_path).stem
        overlay = ProbabilityOverlay(
            self.viewer, prob_map, f"{slide_name} · {prob_map.model_name} probability", frame
        )
        overlay.colormap = self.colormap_combo.currentText()
        overlay.opacity = self.opacity_slider.value()
        overlay.visible = self.show_overlay_check.isChecked()
        regions_layer = RegionsLayer(
            self.viewer, frame, f"{slide_name} · {prob_map.model_name} regions"
        )
        regions_layer.visible = self.show_contours_check.isChecked()
        regions_layer.on_user_delete = lambda ids, key=key: self._on_layer_deleted(key, ids)
        analysis = Analysis(slide_path, slide_name, prob_map, overlay, regions_layer)
        self.analyses[key] = analysis
        overlay.refresh()
        _ = regions_layer.layer  # above the overlay
        if slide_layer is not None:
            self.viewer.layers.selection.active = slide_layer
        return analysis

    # ============================================================================ contours
    @property
    def threshold(self) -> float:
        return float(self.threshold_slider.value())

    def update_contours(self, recreate: bool = False) -> None:
        """Recompute the regions of the current analysis at the current threshold and min area.

        A regions layer the user deleted comes back only on an explicit action (``recreate``: a
        new run, ticking Contours, reopening the slide), not on every slider move.
        """
        self._contour_timer.stop()
        analysis = self.current_analysis
        if analysis is None or (analysis.regions_layer.was_removed and not recreate):
            self._sync_navigator()
            return
        try:
            regions = probability_contours(
                analysis.prob_map, self.threshold, min_area_um2=self.min_area_spin.value()
            )
        except MetastasisError as exc:
            show_error(str(exc))
            return
        analysis.regions, analysis.labels = analysis.edits.apply(regions)
        analysis.regions_layer.show(analysis.regions, analysis.labels, self.threshold)
        self._sync_navigator()
        self.annotation_io._refresh_layers()
        self.annotation_io.layer_combo.setCurrentText(analysis.regions_layer.name)

    def _sync_navigator(self) -> None:
        """Show the current analysis's regions in the navigator (never adds layers)."""
        analysis = self.current_analysis
        if analysis is None or not analysis.regions_layer.is_shown():
            self.navigator.set_regions([], [])
            return
        self.navigator.set_regions(analysis.regions, analysis.labels, edited=bool(analysis.edits))

    def go_to_region(self, index: int) -> None:
        """Centre and zoom the camera on region ``index`` of the current analysis; select it."""
        analysis = self.current_analysis
        if analysis is None or not 0 <= index < len(analysis.regions):
            return
        region = analysis.regions[index]
        minx, miny, maxx, maxy = region.polygon.bounds
        (y0, x0), (y1, x1) = analysis.regions_layer.frame.to_world([[minx, miny], [maxx, maxy]])
        centre_camera_on(self.viewer, (y0, x0, y1, x1))
        rows = analysis.regions_layer.rows_of(region.uid)
        if rows:
            analysis.regions_layer.layer.selected_data = set(rows)

    def delete_regions(self, indices: list[int]) -> None:
        analysis = self.current_analysis
        if analysis is None:
            return
        for i in indices:
            if 0 <= i < len(analysis.regions):
                analysis.edits.delete(analysis.regions[i])
        self.update_contours()

    def _on_layer_deleted(self, key, ids: set[str]) -> None:
        """Regions removed with napari's own tools count as deleted in the navigator too."""
        analysis = self.analyses.get(key)
        if analysis is None:
            return
        for region in analysis.regions:
            if str(region.uid) in ids:
                analysis.edits.delete(region)
        if analysis is self.current_analysis:
            self._contour_timer.start()  # redraw (drops orphaned holes) once napari is done

    def relabel_regions(self, indices: list[int], label: str) -> None:
        analysis = self.current_analysis
        if analysis is None:
            return
        for i in indices:
            if 0 <= i < len(analysis.regions):
                analysis.edits.relabel(analysis.regions[i], label)
        self.update_contours()

    def restore_regions(self) -> None:
        analysis = self.current_analysis
        if analysis is not None:
            analysis.edits.clear()
            self.update_contours()

    # ============================================================================ files
    def _remember(self, analysis: Analysis) -> None:
        if not self.remember:
            return
        try:
            self.store.remember(analysis.prob_map)
        except (OSError, MetastasisError) as exc:
            show_warning(f"Could not remember this analysis for next time: {exc}")

    def _schedule_restore(self, layer) -> None:
        """Restore after the layer is fully inserted (the timer dies with the widget)."""
        self._pending_restore.append(layer)
        self._restore_timer.start()

    def _restore_pending(self) -> None:
        pending, self._pending_restore = self._pending_restore, []
        for layer in pending:
            self.restore_remembered(layer)

    def restore_remembered(self, layer) -> int:
        """Show the analyses of a slide layer: those still in memory, then those remembered on
        disk (once per opening of the slide); returns how many were shown."""
        path = layer.metadata.get("slide_path")
        if not path or layer not in self.viewer.layers or slide_key(path) in self._restored:
            return 0
        key = slide_key(path)
        self._restored.add(key)
        restored = 0
        in_memory = {model for (slide, model) in self.analyses if slide == key}
        for model in in_memory:
            analysis = self.analyses[(key, model)]
            analysis.overlay.refresh()  # adds the layer again if it was closed
            restored += 1
        files = remembered_for(path) if self.remember else []
        for file in files:
            if any(is_remembered_model(file, m) for m in in_memory):
                continue
            try:
                self.load_analysis(file, layer, quiet=True)
                restored += 1
            except MetastasisError as exc:
                show_warning(f"Could not restore {file.name}: {exc}")
        if restored:
            self.select_slide_layer(layer)
            self.update_contours(recreate=True)
            show_info(f"{layer.name}: restored {restored} earlier analysis(es) without re-running.")
        return restored

    def load_analysis(self, file: str | Path, layer=None, quiet: bool = False) -> Analysis:
        """Show a saved probability map over a slide layer (default: the selected one)."""
        layer = layer or self.slide_layer
        if layer is None:
            raise MetastasisError("Open the slide this analysis belongs to first.")
        file = Path(file)
        prob_map = ProbabilityMap.load(file)
        frame = SlideFrame.from_layer(layer)
        check_matches_slide(prob_map, frame.width, frame.height, file.name)
        path = layer.metadata["slide_path"]
        prob_map = self.store.put(path, prob_map)
        if self.model_combo.findText(prob_map.model_name) < 0:
            self.model_combo.addItem(prob_map.model_name, prob_map.model_name)
        analysis = self._ensure_analysis(path, prob_map, layer)
        analysis.overlay.refresh()
        self.select_slide_layer(layer)
        self.model_combo.setCurrentIndex(self.model_combo.findText(prob_map.model_name))
        self.update_contours(recreate=True)
        if not quiet:
            show_info(f"Loaded {file.name}: {prob_map.n_analysed} patches.")
        return analysis

    def save_analysis(self, file: str | Path) -> Path:
        analysis = self.current_analysis
        if analysis is None or not analysis.prob_map.n_analysed:
            raise MetastasisError("Nothing to save: run an analysis of this slide first.")
        return analysis.prob_map.save(file)

    def _save_dialog(self) -> None:
        analysis = self.current_analysis
        if analysis is None:
            show_warning("Nothing to save: run an analysis of this slide first.")
            return
        suggested = Path(analysis.slide_path).with_name(
            f"{Path(analysis.slide_path).stem}.{analysis.model_name}.probability.tif"
        )
        file, _ = QFileDialog.getSaveFileName(
            self, "Save analysis", str(suggested), "Probability map (*.tif *.tiff)"
        )
        if file:
            try:
                self.save_analysis(file)
                show_info(f"Saved {Path(file).name}.")
            except (MetastasisError, OSError) as exc:
                show_error(f"Could not save {Path(file).name}: {exc}")

    def _load_dialog(self) -> None:
        file, _ = QFileDialog.getOpenFileName(
            self, "Load analysis", "", "Probability map (*.tif *.tiff)"
        )
        if file:
            try:
                self.load_analysis(file)
            except MetastasisError as exc:
                show_error(str(exc))

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
        super().closeEvent(event)
