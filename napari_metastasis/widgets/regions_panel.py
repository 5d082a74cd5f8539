"""The Regions panel: the region list (:mod:`.navigator`) with previous / next buttons.

It speaks in region indices (positions in the list the dock widget gives it) and never touches
layers: the dock widget turns ``activated(index)`` into a camera move and a highlight. Stepping
follows the table's order as the user sorted it (most probable first by default), wrapping round.
Later panels (a verdict, a reference comparison) are added below the list with :meth:`add_section`.
"""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from napari_metastasis.widgets.navigator import RegionNavigator


class RegionsPanel(QWidget):
    """Region list + Previous / Next."""

    #: go to region ``index`` (clicked in the list, or stepped to)
    activated = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.navigator = RegionNavigator()
        self.navigator.activated.connect(self.activated.emit)
        self.previous_button = QPushButton("◀ Previous")
        self.previous_button.setToolTip("Go to the previous region in the list (Shift-B)")
        self.previous_button.clicked.connect(lambda: self._step(-1))
        self.next_button = QPushButton("Next ▶")
        self.next_button.setToolTip("Go to the next region in the list (Shift-N)")
        self.next_button.clicked.connect(lambda: self._step(1))
        steps = QHBoxLayout()
        steps.addWidget(self.previous_button)
        steps.addWidget(self.next_button)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.addLayout(steps)
        self._layout.addWidget(self.navigator)
        self.set_regions([], [])

    def add_section(self, widget: QWidget) -> None:
        """Another part of the panel, below the list."""
        self._layout.addWidget(widget)

    def set_regions(
        self,
        regions: Sequence,
        labels: Sequence[str],
        edited: bool = False,
        deposits: Sequence | None = None,
        analysed: bool = True,
        running: bool = False,
        caution: str = "",
    ) -> None:
        self.navigator.set_regions(
            regions,
            labels,
            edited=edited,
            deposits=deposits,
            analysed=analysed,
            running=running,
            caution=caution,
        )
        has = len(regions) > 0
        self.previous_button.setEnabled(has)
        self.next_button.setEnabled(has)

    def _step(self, offset: int) -> None:
        self.step(offset)

    def step(self, delta: int) -> int | None:
        """Select the region ``delta`` rows from the current one (wrapping); returns its index."""
        table = self.navigator.table
        rows = table.rowCount()
        if rows == 0:
            return None
        current = table.currentRow()
        row = (
            (delta - 1 if delta > 0 else delta) % rows if current < 0 else (current + delta) % rows
        )
        table.setCurrentCell(row, 0)
        table.selectRow(row)
        index = self.navigator.index_at_row(row)
        self.activated.emit(index)
        return index
