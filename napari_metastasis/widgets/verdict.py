"""The slide verdict in one line, and the Report… button, under the region list.

"Macrometastasis — largest deposit 3.1 mm": the category of the slide's largest *confirmed* deposit
at the current threshold (after the pathologist's deletions; candidates the deposit decision did not
confirm are only counted), from :mod:`napari_metastasis.clinical.staging`,
coloured like the categories in the region list and the report. The tooltip states how fine the
measure is (about one grid stride). The panel only shows what it is given; the dock widget
measures the regions and writes the report.
"""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_metastasis.clinical.decision import ITC_NOT_ASSESSED
from napari_metastasis.clinical.staging import CATEGORY_COLOURS, SlideVerdict

NO_ANALYSIS = "No analysis of this slide yet."
RUNNING = "No verdict yet: the analysis is running."


class VerdictPanel(QWidget):
    """One line with the slide's verdict; *Report…*; room for tools (the Measure tool) beside it."""

    #: the user asked for a PDF report of the current slide (or its case)
    report_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel(NO_ANALYSIS)
        self.label.setWordWrap(True)
        self.report_button = QPushButton("Report…")
        self.report_button.setToolTip(
            "Write a PDF report: the pN stage, the slide verdicts, heatmaps and region tables "
            "(of the slide's case, if it is in the case list)"
        )
        self.report_button.clicked.connect(self.report_requested.emit)
        self.tools = QHBoxLayout()
        self.tools.addWidget(self.report_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addLayout(self.tools)
        self.set_verdict(None)

    def add_tool(self, widget: QWidget) -> None:
        self.tools.addWidget(widget)

    def set_verdict(
        self,
        verdict: SlideVerdict | None,
        stride_um: float | None = None,
        rule: str = "",
        running: bool = False,
        limitation: str = "",
    ) -> None:
        """Show ``verdict`` (None: nothing analysed; ``running``: a run is under way);
        ``stride_um`` is the grid step it was measured on, ``rule`` the deposit decision's rule
        in words, ``limitation`` what the rule cannot see (shown under a negative verdict)."""
        self.verdict = verdict
        self.report_button.setEnabled(verdict is not None)
        if verdict is None:
            self.label.setText(RUNNING if running else NO_ANALYSIS)
            self.label.setStyleSheet("")
            self.label.setToolTip("")
            return
        negative = verdict.category == "negative"
        self.label.setText(  # the reason is in the tooltip
            f"{verdict.sentence()}\n{ITC_NOT_ASSESSED}."
            if negative and limitation
            else verdict.sentence()
        )
        self.label.setStyleSheet(
            f"font-weight: bold; color: {CATEGORY_COLOURS[verdict.category]};"
            if verdict.category != "negative"
            else "font-weight: bold;"
        )
        tip = "Greatest dimension of the largest confirmed deposit (maximum Feret diameter)"
        if stride_um:
            tip += f", measured to about ± {stride_um:g} µm (one grid stride)"
        if verdict.unconfirmed:
            n = verdict.unconfirmed
            tip += f". {n} candidate region{'s' * (n != 1)} not confirmed (not counted)"
        if rule:
            tip += f". Deposit rule: {rule}"
        if limitation:
            tip += f". {limitation.rstrip('.')}"
        self.label.setToolTip(tip + ". Research use, not a diagnosis.")

    @property
    def text(self) -> str:
        return self.label.text()
