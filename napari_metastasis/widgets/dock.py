"""The dock's layout for a 1280 × 800 laptop, and its keyboard shortcuts.

:data:`DOCK_WIDTH` px wide (the canvas keeps the rest), with what a pathologist reads and does
first at the top without scrolling (the verdict with Report… and Measure, what to analyse with the
one Run button, the progress) and everything else in collapsible sections below (issue 21, D13).
Fields shrink, long texts wrap, and the one panel wider than the dock, the region table, scrolls
sideways on its own (:class:`SidewaysScroll`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import (
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QFrame,
    QLabel,
    QLineEdit,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

if TYPE_CHECKING:
    from napari_metastasis.widgets.detection import MetastasisWidget

#: The dock's width on a 1280 × 800 laptop: the canvas keeps at least 900 px (D13).
DOCK_WIDTH = 360
#: Input fields may shrink to this (px) so that every section fits the dock without clipping.
FIELD_MIN_WIDTH = 48
#: Keyboard shortcuts, bound to the viewer (napari's key bindings): key -> (method of the dock
#: widget, what it does). Shift keeps them clear of napari's single-letter layer keys.
SHORTCUTS = {
    "Shift-R": ("run", "run the analysis (the selected mode)"),
    "Shift-X": ("cancel", "cancel the run"),
    "Shift-N": ("next_region", "next region in the list"),
    "Shift-B": ("previous_region", "previous region in the list (back)"),
    "Shift-O": ("toggle_overlay", "show / hide the probability map"),
    "Shift-C": ("toggle_contours", "show / hide the contours"),
}


def shortcuts_help() -> str:
    rows = "".join(
        f"<tr><td><b>{key}</b></td><td>{what}</td></tr>" for key, (_, what) in SHORTCUTS.items()
    )
    return f"<b>Keyboard shortcuts</b> (in the viewer)<table>{rows}</table>"


class SidewaysScroll(QScrollArea):
    """Scrolls a widget sideways only, as tall as the widget wants: the region table needs about
    520 px for its seven columns side by side, more than a laptop's dock; it scrolls on its own
    instead of widening (and clipping) every other section."""

    def __init__(self) -> None:
        super().__init__()
        self.setWidgetResizable(True)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # type: ignore[attr-defined]
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)  # type: ignore[attr-defined]
        self.setFrameShape(QFrame.Shape.NoFrame)

    def _height(self, hint: QSize) -> int:
        return hint.height() + self.horizontalScrollBar().sizeHint().height()  # type: ignore[union-attr]

    def minimumSizeHint(self) -> QSize:
        widget = self.widget()
        if widget is None:
            return super().minimumSizeHint()
        return QSize(0, self._height(widget.minimumSizeHint()))

    def sizeHint(self) -> QSize:
        widget = self.widget()
        if widget is None:
            return super().sizeHint()
        return QSize(0, self._height(widget.sizeHint()))


class Section(QCollapsible):
    """A collapsible section that opens to the height its content needs at the dock's width.
    superqt's QCollapsible opens to its content's size hint, which a label that wraps in a narrow
    dock exceeds: the Help section's last line was cut off at 1280 × 800."""

    def eventFilter(self, a0: QObject | None, a1: QEvent | None) -> bool:
        handled = bool(super().eventFilter(a0, a1))  # type: ignore[arg-type]
        if a1 is not None and a1.type() == QEvent.Type.Resize and self.isExpanded():
            self.fit()
        return handled

    def expand(self, animate: bool = True) -> None:
        super().expand(animate)
        if not animate:
            self.fit()

    def collapse(self, animate: bool = True) -> None:
        self.content().setMinimumHeight(0)
        super().collapse(animate)

    def fit(self) -> None:
        """Room for every line of the content at its width (never less than superqt gives)."""
        content = self.content()
        layout = content.layout()
        if layout is None or not layout.hasHeightForWidth() or content.width() <= 0:
            return
        needed = layout.totalHeightForWidth(content.width())
        content.setMinimumHeight(needed)
        if content.maximumHeight() < needed + 10:  # superqt's margin
            content.setMaximumHeight(needed + 10)


@dataclass
class DockLayout:
    """The parts of the laid-out dock that others look at."""

    top_box: QWidget
    scroll_area: QScrollArea
    sections: dict[str, QCollapsible] = field(default_factory=dict)


def scroll_sideways(table: QWidget) -> None:
    """Put ``table`` in a :class:`SidewaysScroll` where it lies in its parent's layout."""
    layout = table.parentWidget().layout()  # type: ignore[union-attr]
    sideways = SidewaysScroll()
    layout.replaceWidget(table, sideways)  # type: ignore[union-attr]
    sideways.setWidget(table)


def lay_out(
    dock: QWidget, top: Sequence[QWidget], sections: Sequence[tuple[str, QWidget, bool]]
) -> DockLayout:
    """``top`` always in view, then ``sections`` (title, content, expanded) in a scroll area,
    in a dock :data:`DOCK_WIDTH` px wide."""
    top_box = QWidget()
    top_layout = QVBoxLayout(top_box)
    top_layout.setContentsMargins(4, 4, 4, 4)
    for widget in top:
        top_layout.addWidget(widget)
    inner = QWidget()
    layout = QVBoxLayout(inner)
    layout.setContentsMargins(0, 0, 0, 0)
    made = DockLayout(top_box, QScrollArea())
    for title, content, expanded in sections:
        section = Section(title)
        section.addWidget(content)
        if expanded:
            section.expand(animate=False)
        else:
            section.collapse(animate=False)
        made.sections[title] = section
        layout.addWidget(section)
    layout.addStretch(1)
    scroll = made.scroll_area
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # type: ignore[attr-defined]
    scroll.setWidget(inner)
    outer = QVBoxLayout(dock)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(top_box)
    outer.addWidget(scroll, 1)
    for combo in dock.findChildren(QComboBox):  # long layer names must not widen the dock
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
    for edit in inner.findChildren((QComboBox, QAbstractSpinBox, QLineEdit, QAbstractSlider)):
        edit.setMinimumWidth(FIELD_MIN_WIDTH)  # a field shrinks; the dock never clips it
    for label in inner.findChildren(QLabel):
        label.setWordWrap(True)  # long explanations wrap instead of widening the dock
    dock.setFixedWidth(DOCK_WIDTH)
    return made


def lay_out_dock(dock: MetastasisWidget) -> DockLayout:
    """The Metastasis detection dock: the verdict (with Report… and Measure), the run controls
    and the status on top; the slide and model and the regions open below; the rest closed."""
    scroll_sideways(dock.navigator.table)
    dock.verdict_panel.add_tool(dock.measure)
    display_box = QWidget()
    display_layout = QVBoxLayout(display_box)
    display_layout.setContentsMargins(0, 0, 0, 0)
    display_layout.addWidget(dock.display.native)
    display_layout.addWidget(dock.legend)
    return lay_out(
        dock,
        [dock.verdict_panel, dock.run_controls.native, dock.status],
        [
            ("Slide and model", dock.source.native, True),
            ("Regions", dock.regions_panel, True),
            ("Overlay and contours", display_box, False),
            ("Case (pN stage of a patient)", dock.cases, False),
            ("Annotations", dock.annotation_io, False),
            ("Analysis files", dock.files, False),
            ("Help", dock.help, False),
        ],
    )
