"""The PDF report of the selected slide, or of its patient when the slide is in the case list.

:class:`Reporting` writes, into a folder the user picks, the slide's heatmap and summary (as
``predict`` does) and the patient's report (:mod:`napari_metastasis.clinical.report`): the selected slide
with the pathologist's edits, the other slides of its case as the case list analysed them. A
patient is reported only when every one of its slides is analysed (a stage from some of the
nodes could understate it). *Report…* writes on a worker thread: each slide's heatmap is read
from the slide and every page drawn, about a second a slide, which held the viewer still.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog

from napari_metastasis._napari.helpers import error, info
from napari_metastasis.clinical.report import write_case_report, write_slide_files
from napari_metastasis.clinical.staging import camelyon_patient, slide_stem
from napari_metastasis.errors import MetastasisError
from napari_metastasis.widgets.cases import CaseList
from napari_metastasis.widgets.display_controls import DisplayControls
from napari_metastasis.widgets.lifetime import while_alive
from napari_metastasis.widgets.selected import SelectedSlide
from napari_metastasis.widgets.session import slide_key


class Reporting:
    """Report… of the verdict panel."""

    def __init__(
        self, parent: Any, selected: SelectedSlide, cases: CaseList, display: DisplayControls
    ) -> None:
        self.parent = parent  # the dialog's parent widget
        self.selected = selected
        self.cases = cases
        self.display = display

    def write(self, folder: str | Path) -> Path:
        """The PDF report of the selected slide, or of its patient when it is in the case list
        (every slide of the patient must be analysed); its files go into ``folder``."""
        return self.prepare(folder)()

    def prepare(self, folder: str | Path) -> Callable[[], Path]:
        """What :meth:`write` writes, checked now (a :class:`MetastasisError` says why not) and
        written by the returned call, which may run on another thread: it works on copies of the
        maps, which a run may go on filling meanwhile."""
        view = self.selected.analysis
        if view is None or not view.prob_map.n_analysed:
            raise MetastasisError("Nothing to report: run an analysis of this slide first.")
        case = self.cases.patient_of(view.slide_path)
        items: list[tuple[str, Any, list]]
        if case is None:
            patient = camelyon_patient(view.slide_path) or slide_stem(view.slide_path)
            items = [(view.slide_path, view.prob_map, view.regions)]
        else:
            patient, slides = case
            missing = [s.name for s in slides if s.prob_map is None or s.verdict is None]
            if missing:
                raise MetastasisError(
                    f"Analyse every slide of {patient} first ({', '.join(missing)} not done): "
                    "a stage from some of the nodes could understate it."
                )
            current = slide_key(view.slide_path)
            items = [
                (view.slide_path, view.prob_map, view.regions)  # with the pathologist's edits
                if slide_key(s.path) == current
                else (s.path, s.prob_map, s.regions)
                for s in slides
            ]
        threshold = self.display.threshold_value
        copies = [
            (path, copy.deepcopy(prob_map), list(regions)) for path, prob_map, regions in items
        ]

        def write() -> Path:
            summaries = [
                write_slide_files(folder, path, prob_map, regions, threshold=threshold)
                for path, prob_map, regions in copies
            ]
            return write_case_report(folder, patient, summaries)

        return write

    def ask_and_write(self) -> None:
        """Ask for a folder, write the report there on a worker thread, say where (or why not)."""
        folder = QFileDialog.getExistingDirectory(self.parent, "Folder for the report")
        if not folder:
            return
        try:
            write = self.prepare(folder)
        except MetastasisError as exc:
            error(f"Could not write the report: {exc}")
            return
        from napari.qt.threading import create_worker

        worker = create_worker(write, _start_thread=False)

        def written(path: Path) -> None:
            info(f"Report written to {path}.")

        def failed(exc: Exception) -> None:
            error(f"Could not write the report: {exc}")

        worker.returned.connect(while_alive(self.parent, written))
        worker.errored.connect(while_alive(self.parent, failed))
        info(f"Writing the report into {folder}…")  # a patient's takes seconds: say it started
        worker.start()
