"""The case list: a patient's node slides, analysed one after another in the background.

Add slide files or a folder; *Analyse all slides of the list* runs each slide (open in the viewer
or not) through its own :class:`.runner.AnalysisRunner`, whole slide, with the dock widget's model
and settings, while the viewer stays free for looking at slides. As each slide finishes the table
shows its verdict and largest deposit, and the line above it the pN stage of each patient whose
slides are all done (:mod:`napari_metastasis.clinical.staging`; slides group by
``patient_<id>_node_<n>`` names, or all under the name typed in *Patient*). Clicking a slide opens
it with its analysis. This is the Qt panel; the list's slides, their verdicts and the patients'
stages are :mod:`.case_slides`'.

The probability maps go into the dock widget's shared store, so an analysis made here is the one
the viewer shows, and a later run over part of the slide reuses it. Verdicts follow the dock
widget's threshold: moving the slider re-measures every finished slide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_metastasis.clinical.staging import CATEGORY_TINTS
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.slides.slide import looks_like_slide
from napari_metastasis.widgets.case_slides import (
    DONE,
    QUEUED,
    RUNNING,
    STOPPED,
    CaseSlide,
    measure_slide,
    patient_of,
    patient_stages,
    record_run,
    row_texts,
    slide_for,
    slides_in_folder,
    stage_lines,
)
from napari_metastasis.widgets.jobs import JobRequest, Planned, Resources
from napari_metastasis.widgets.runner import AnalysisRunner, Progress, RunSummary
from napari_metastasis.widgets.session import AnalysisStore, slide_key


class CaseList(QWidget):
    """Slides of a case, their verdicts, the patient's pN stage; analysis in the background."""

    #: open this slide with its analysis (path, probability map or None)
    open_requested = Signal(str, object)

    COLUMNS = ("Slide", "Status", "Verdict", "Largest")

    def __init__(
        self, store: AnalysisStore, resources: Resources, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.store = store
        self.slides: list[CaseSlide] = []
        self.runner = AnalysisRunner(store, resources, parent=self)
        self.runner.planned.connect(self._on_planned)
        self.runner.progressed.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished)
        #: the request for a whole-slide analysis of a path (the dock widget's settings)
        self.request_for: Callable[[str], JobRequest | None] = lambda path: None
        #: the name of the model selected in the dock widget
        self.model_name: Callable[[], str] = lambda: ""
        #: the threshold and minimum area regions are measured at (the dock widget's)
        self.threshold: Callable[[], float] = lambda: 0.5
        self.min_area_um2: Callable[[], float] = lambda: 0.0
        #: called with each finished map (the dock widget remembers it on disk)
        self.on_analysed: Callable[[ProbabilityMap], None] = lambda prob_map: None

        self.add_files_button = QPushButton("Add slides…")
        self.add_files_button.clicked.connect(self._add_files_dialog)
        self.add_folder_button = QPushButton("Add folder…")
        self.add_folder_button.clicked.connect(self._add_folder_dialog)
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Empty the list (analyses already made are kept)")
        self.clear_button.clicked.connect(self.clear)
        self.patient_edit = QLineEdit()
        self.patient_edit.setPlaceholderText("from file names (patient_<id>_node_<n>)")
        self.patient_edit.setToolTip(
            "All slides of the list are this patient's nodes; empty: group by Camelyon17 names "
            "(other slides are a patient each)"
        )
        self.patient_edit.editingFinished.connect(self._refresh_stage)
        self.analyse_button = QPushButton("Analyse all slides of the list")
        self.analyse_button.setToolTip(
            "Analyse every slide not done yet, whole slide, one after another in the background"
        )
        self.analyse_button.clicked.connect(self.analyse)  # type: ignore[arg-type]
        self.cancel_button = QPushButton("Stop the list")
        self.cancel_button.setToolTip(
            "Stop the list's analysis after the current batch; slides not started are not analysed"
        )
        self.cancel_button.clicked.connect(self.cancel)
        self.stage_label = QLabel("")
        self.stage_label.setWordWrap(True)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)  # type: ignore[union-attr]
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)  # type: ignore[union-attr]
        self.table.setMinimumHeight(120)
        self.table.setToolTip("Click a slide to open it with its analysis")
        self.table.itemClicked.connect(self._on_clicked)
        self.table.itemActivated.connect(self._on_clicked)

        files = QHBoxLayout()
        files.addWidget(self.add_files_button)
        files.addWidget(self.add_folder_button)
        files.addWidget(self.clear_button)
        patient = QHBoxLayout()
        patient.addWidget(QLabel("Patient"))
        patient.addWidget(self.patient_edit, 1)
        run = QHBoxLayout()
        run.addWidget(self.analyse_button)
        run.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(files)
        layout.addLayout(patient)
        layout.addLayout(run)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.table)
        self._refresh()

    # --- the list ----------------------------------------------------------------------------
    def add_slides(self, paths: Iterable[str | Path]) -> int:
        """Add slides (files or DICOM folders) not in the list yet; returns how many."""
        known = {slide_key(s.path) for s in self.slides}
        added = 0
        for path in paths:
            path = str(Path(path))
            if slide_key(path) in known:
                continue
            known.add(slide_key(path))
            slide = CaseSlide(path)
            slide.prob_map = self._existing_map(path)
            if slide.prob_map is not None:
                slide.status = DONE
                self._measure(slide)
            self.slides.append(slide)
            added += 1
        self._refresh()
        return added

    def add_folder(self, folder: str | Path) -> int:
        return self.add_slides(slides_in_folder(folder))

    def clear(self) -> None:
        self.cancel()
        self.slides = []
        self._refresh()

    def slide_for(self, path: str | Path) -> CaseSlide | None:
        return slide_for(self.slides, path)

    def _existing_map(self, path: str) -> ProbabilityMap | None:
        """A whole-slide analysis of the case list already in the store."""
        prob_map = self.store.get(path, self.model_name())
        return prob_map if prob_map is not None and prob_map.extra.get("whole_slide") else None

    # --- running -----------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self.runner.is_running

    def analyse(self) -> int:
        """Queue every slide that is not done; returns how many were queued."""
        queued = 0
        for slide in self.slides:
            if slide.status == DONE or slide.status == RUNNING:
                continue
            request = self.request_for(slide.path)
            if request is None:
                break
            slide.status, slide.message, slide.progress = QUEUED, "", 0.0
            self.runner.submit(request)
            queued += 1
        self._refresh()
        return queued

    def cancel(self) -> None:
        if self.runner.cancel():
            for slide in self.slides:
                slide.status = STOPPED if slide.status == QUEUED else slide.status
        self._refresh()

    def _on_planned(self, event: Planned) -> None:
        slide = self.slide_for(event.request.slide_path)
        if slide is not None:
            slide.status = RUNNING
            slide.prob_map = event.prob_map
            self._refresh()

    def _on_progress(self, p: Progress) -> None:
        slide = self.slide_for(p.request.slide_path)
        if slide is not None:
            slide.progress = p.fraction
            self._refresh_row(self.slides.index(slide))

    def _on_finished(self, summary: RunSummary) -> None:
        slide = self.slide_for(summary.request.slide_path)
        if slide is None:
            return
        if record_run(slide, summary.error, summary.cancelled, summary.prob_map):
            if slide.prob_map is not None:
                self.on_analysed(slide.prob_map)
            self._measure(slide)
        self._refresh()

    # --- verdicts ----------------------------------------------------------------------------
    def _measure(self, slide: CaseSlide) -> None:
        measure_slide(slide, self.threshold(), self.min_area_um2())

    def remeasure(self) -> None:
        """Measure every finished slide again (the threshold or minimum area moved)."""
        for slide in self.slides:
            if slide.status == DONE:
                self._measure(slide)
        self._refresh()

    @property
    def case_name(self) -> str | None:
        """The patient typed in the dock (all slides are this patient's), else None."""
        return self.patient_edit.text().strip() or None

    def stages(self) -> dict[str, str | None]:
        """Each patient's pN stage, or None (:func:`.case_slides.patient_stages`)."""
        return patient_stages(self.slides, self.case_name)

    def patient_of(self, path: str | Path) -> tuple[str, list[CaseSlide]] | None:
        """The patient of the list the slide at ``path`` belongs to, and its slides."""
        return patient_of(self.slides, self.case_name, path)

    # --- drawing -----------------------------------------------------------------------------
    def _refresh(self) -> None:
        # emptied first: Qt replaces an item set over another by a linear search of the table,
        # so refilling every row in place costs the square of the rows (see the region list)
        self.table.setRowCount(0)
        self.table.setRowCount(len(self.slides))
        for row in range(len(self.slides)):
            self._refresh_row(row)
        self._refresh_stage()
        running = self.runner.is_running
        self.analyse_button.setEnabled(bool(self.slides) and not running)
        self.cancel_button.setEnabled(running)
        self.clear_button.setEnabled(bool(self.slides))

    def _refresh_row(self, row: int) -> None:
        slide = self.slides[row]
        verdict = slide.verdict
        for col, text in enumerate(row_texts(slide)):
            item = QTableWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, slide.path)
            if col == 1 and slide.message:
                item.setToolTip(slide.message)
            if col >= 2 and verdict is not None:
                item.setBackground(QBrush(QColor(CATEGORY_TINTS[verdict.category])))
                item.setForeground(QBrush(QColor("black")))
            self.table.setItem(row, col, item)

    def _refresh_stage(self) -> None:
        if not self.slides:
            self.stage_label.setText("Add a patient's node slides (files or a folder).")
            return
        self.stage_label.setText("<br>".join(stage_lines(self.slides, self.case_name)))

    # --- user actions ------------------------------------------------------------------------
    def _on_clicked(self, item: QTableWidgetItem) -> None:
        slide = self.slide_for(item.data(Qt.ItemDataRole.UserRole))
        if slide is not None:
            self.open_requested.emit(slide.path, slide.prob_map)

    def _add_files_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add slides", "", "Slides (*)")
        self.add_slides([f for f in files if looks_like_slide(f)] if files else [])

    def _add_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of slides")
        if folder:
            self.add_folder(folder)
