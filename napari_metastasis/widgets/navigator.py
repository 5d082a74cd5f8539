"""The region navigator: detected regions in a sortable table; a click takes the camera there.

Deleting or relabelling a region is an edit the pathologist makes before export, so it must outlive
the next threshold change: the navigator only asks for it; :class:`.region_edits.RegionEdits`
remembers it and re-applies it to whatever regions the new threshold produces. The cells of a row
are :mod:`.region_cells`'.

Candidate regions the deposit decision did not confirm (:mod:`napari_metastasis.clinical.decision`)
are listed too, in grey, labelled as candidates, with the decision's reason in each cell's tooltip;
they make no verdict. (No column of its own: the label says it, and the size and category columns
must stay in view in a narrow dock.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QBrush, QColor, QKeyEvent
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_metastasis.clinical.staging import Deposit
from napari_metastasis.widgets.region_cells import (
    CANDIDATE_TEXT_COLOR,
    region_cells,
    region_tip,
    rows_signature,
)

#: The region list before anything was analysed (not "no region": nothing was looked at).
NOT_ANALYSED = "No analysis of this slide yet: choose what to analyse and press Run."
#: ... and while its first run has not drawn any region yet.
RUNNING = "The analysis is running: its regions are listed as they are found."
#: Labels offered for relabelling (the combo box is editable for anything else).
LABELS = ("Tumor", "Suspicious", "Other")


T = TypeVar("T")


def _present(value: T | None) -> T:
    """A Qt getter's result that cannot be None here (the stubs allow None)."""
    assert value is not None
    return value


class RegionNavigator(QWidget):
    """Table of regions (max probability first). Emits region indices, never touches layers."""

    #: a region (index into the list given to :meth:`set_regions`) was clicked
    activated = Signal(int)
    #: delete these regions
    delete_requested = Signal(list)
    #: give these regions this label
    relabel_requested = Signal(list, str)
    #: forget every deletion and relabel
    restore_requested = Signal()

    #: What a pathologist reads first (the size and its category) comes first: a laptop's dock
    #: shows four columns, the rest scroll sideways.
    COLUMNS = ("#", "Label", "Size mm", "Category", "Max", "Mean", "mm²")
    TIPS = (
        "Region id",
        "Label used on export; a candidate the deposit decision did not confirm is grey and "
        "labelled as one (its tooltip says why); only confirmed deposits make the verdict",
        "Greatest dimension in mm (maximum Feret diameter of the outline; about ± one grid stride)",
        "AJCC size category: ITC ≤ 0.2 mm, micrometastasis ≤ 2 mm, macrometastasis > 2 mm",
        "Highest probability in the region",
        "Mean probability over its patches",
        "Area in mm²",
    )
    SIZE_COLUMN, CATEGORY_COLUMN, MAX_COLUMN = 2, 3, 4

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        for col, tip in enumerate(self.TIPS):
            _present(self.table.horizontalHeaderItem(col)).setToolTip(tip)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        _present(self.table.verticalHeader()).setVisible(False)
        # every column takes its contents' width (figures are never cut to "0.0…" in a narrow
        # dock), the last one whatever is left; the table scrolls sideways if the dock is narrower
        header = _present(self.table.horizontalHeader())
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        header.setMinimumSectionSize(24)
        self.table.setMinimumWidth(self._width_for_typical_rows())
        self.table.setSortingEnabled(True)
        # most probable first, until the user sorts
        self._sort = (self.MAX_COLUMN, Qt.SortOrder.DescendingOrder)
        header.sortIndicatorChanged.connect(self._on_sorted)
        self.table.setMinimumHeight(160)
        self.table.itemClicked.connect(self._on_clicked)
        self.table.itemActivated.connect(self._on_clicked)
        self.table.setToolTip("Click a region to centre the view on it")

        self.summary = QLabel("No regions yet: run an analysis.")
        self.summary.setWordWrap(True)

        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Remove the selected regions before export")
        self.delete_button.clicked.connect(self._on_delete)
        self.label_combo = QComboBox()
        self.label_combo.setEditable(True)
        self.label_combo.addItems(LABELS)
        self.label_combo.setToolTip("Label to give the selected regions")
        self.relabel_button = QPushButton("Relabel")
        self.relabel_button.clicked.connect(self._on_relabel)
        self.restore_button = QPushButton("Restore all")
        self.restore_button.setToolTip("Undo every deletion and relabel")
        self.restore_button.clicked.connect(self.restore_requested.emit)

        buttons = QHBoxLayout()
        buttons.addWidget(self.delete_button)
        buttons.addWidget(self.label_combo, 1)
        buttons.addWidget(self.relabel_button)
        buttons.addWidget(self.restore_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        self._shown: tuple | None = None  # what the table shows (see _rows_signature)
        self.set_regions([], [])

    #: the widest text each column usually holds (the dock is made wide enough for these)
    TYPICAL = ("99", "Candidate", "00.000", "Macro", "0.000", "0.000", "00.0000")

    def _width_for_typical_rows(self) -> int:
        """Wide enough to show every column of typical rows side by side (the size and category
        columns, what a pathologist reads first, must not hide behind a sideways scroll)."""
        metrics = self.table.fontMetrics()
        bold = _present(self.table.horizontalHeader()).fontMetrics()
        pad = 30  # cell margins and a sort arrow
        columns = sum(
            max(bold.horizontalAdvance(name), metrics.horizontalAdvance(text)) + pad
            for name, text in zip(self.COLUMNS, self.TYPICAL, strict=True)
        )
        scrollbar = _present(self.table.verticalScrollBar()).sizeHint().width()
        return columns + 2 * self.table.frameWidth() + scrollbar

    # --- content ----------------------------------------------------------------------------
    def set_regions(
        self,
        regions: Sequence,
        labels: Sequence[str],
        edited: bool = False,
        deposits: Sequence[Deposit] | None = None,
        analysed: bool = True,
        running: bool = False,
        caution: str = "",
    ) -> None:
        """Show ``regions`` with their labels; ``caution`` is a sentence after the summary line.
        ``deposits`` (one per region, from :func:`napari_metastasis.clinical.staging.measure_regions`)
        fill the size and category columns; a candidate's whole row is grey.
        ``analysed=False``: nothing was analysed yet, so "no region" would claim too much
        (``running``: a run is under way).
        The same rows as shown already are not built again (contours are recomputed often
        while a run lasts, and mostly come back unchanged)."""
        shown = (rows_signature(regions, labels, edited, deposits, analysed), running, caution)
        if shown == self._shown:
            return
        self._shown = shown
        self.table.setSortingEnabled(False)
        # Emptied first: an item set over another costs time in proportion to the table's size
        # (Qt finds the old one by a linear search), so refilling 800 rows in place took 100 s.
        self.table.setRowCount(0)
        self.table.setRowCount(len(regions))
        for row, (region, label) in enumerate(zip(regions, labels, strict=True)):
            confirmed = getattr(region, "confirmed", True)
            items = region_cells(
                region, label, None if deposits is None else deposits[row], confirmed
            )
            tip = region_tip(region)
            for col, item in enumerate(items):
                item.setData(Qt.ItemDataRole.UserRole, row)
                if col != self.CATEGORY_COLUMN:
                    item.setToolTip(tip)
                if not confirmed:
                    item.setForeground(QBrush(QColor(CANDIDATE_TEXT_COLOR)))
                self.table.setItem(row, col, item)
        # The user's sort survives new regions. Sorting is switched on with the user's column as
        # the header's indicator, so the rows are sorted once (sortItems after it sorted twice: a
        # Python comparison per pair, ~11,000 of them for 800 regions, on the GUI thread).
        header = _present(self.table.horizontalHeader())
        header.blockSignals(True)  # not a click of the user's
        header.setSortIndicator(*self._sort)
        header.blockSignals(False)
        self.table.setSortingEnabled(True)
        has = bool(len(regions))
        self.delete_button.setEnabled(has)
        self.relabel_button.setEnabled(has)
        self.restore_button.setEnabled(edited)
        if has:
            total = sum(r.area_um2 for r in regions) / 1e6
            top = max(r.max_prob for r in regions)
            confirmed = sum(bool(getattr(r, "confirmed", True)) for r in regions)
            self.summary.setText(
                f"{len(regions)} region{'s' * (len(regions) != 1)}, {total:.3f} mm² in all, "
                f"highest probability {top:.3f}; {confirmed} confirmed as "
                f"deposit{'s' * (confirmed != 1)}." + (f" {caution}" if caution else "")
            )
        elif analysed:
            self.summary.setText(
                "No region above the threshold." + (f" {caution}" if caution else "")
            )
        else:
            self.summary.setText(RUNNING if running else NOT_ANALYSED)

    def index_at_row(self, row: int) -> int:
        return int(_present(self.table.item(row, 0)).data(Qt.ItemDataRole.UserRole))

    def selected_indices(self) -> list[int]:
        rows = {i.row() for i in self.table.selectedIndexes()}
        return sorted(self.index_at_row(r) for r in rows)

    # --- user actions -----------------------------------------------------------------------
    def _on_sorted(self, column: int, order: Any) -> None:
        self._sort = (column, order)

    def _on_clicked(self, item: QTableWidgetItem) -> None:
        self.activated.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    def _on_delete(self) -> None:
        indices = self.selected_indices()
        if indices:
            self.delete_requested.emit(indices)

    def _on_relabel(self) -> None:
        indices = self.selected_indices()
        label = self.label_combo.currentText().strip()
        if indices and label:
            self.relabel_requested.emit(indices, label)

    def keyPressEvent(self, event: QKeyEvent | None) -> None:
        if event is not None and event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self._on_delete()
            return
        super().keyPressEvent(event)
