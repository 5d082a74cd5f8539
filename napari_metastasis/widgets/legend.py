"""The probability legend: a colour bar from 0 to 1, drawn as it looks on tissue, threshold marked.

The bar shows the overlay's colormap composited over an H&E-like pink at the overlay's opacity,
so the fade-in of low probabilities reads as it does on the slide; values under the floor (not
drawn) are hatched; a triangle and a line mark the threshold, with its value above.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QBrush, QColor, QImage, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_metastasis._napari.colormaps import (
    DEFAULT_FLOOR,
    DEFAULT_OPACITY,
    base_colors,
    fade_alpha,
)

#: What the bar is composited over: the pink of eosin-stained tissue.
TISSUE_RGB = np.array([0.93, 0.78, 0.86])
BAR_HEIGHT = 14
MARGIN = 10


class ProbabilityLegend(QWidget):
    """Colour bar of the probability overlay with the threshold marked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.colormap = "metastasis"
        self.floor = DEFAULT_FLOOR
        self.opacity = DEFAULT_OPACITY
        self.threshold = 0.5
        self.setMinimumHeight(48)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(
            "Probability of tumour, as the overlay draws it on tissue; the line marks the "
            "threshold (regions are outlined at and above it)"
        )

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        hint.setHeight(48)
        return hint

    def set_style(self, colormap: str, floor: float, opacity: float, threshold: float) -> None:
        new = (colormap, float(floor), float(opacity), float(threshold))
        if new != (self.colormap, self.floor, self.opacity, self.threshold):
            self.colormap, self.floor, self.opacity, self.threshold = new
            self.update()

    def bar_rect(self) -> QRectF:
        return QRectF(MARGIN, 18, max(10, self.width() - 2 * MARGIN), BAR_HEIGHT)

    def x_of(self, value: float) -> float:
        rect = self.bar_rect()
        return rect.left() + float(value) * rect.width()

    def bar_colors(self, n: int) -> np.ndarray:
        """(n, 3) uint8: the colormap at n values from 0 to 1, over tissue, at the opacity."""
        values = np.linspace(0.0, 1.0, n)
        rgb = base_colors(self.colormap, values)[:, :3]
        alpha = (fade_alpha(values, self.floor) * self.opacity)[:, None]
        return np.round((rgb * alpha + TISSUE_RGB * (1 - alpha)) * 255).astype(np.uint8)

    def paintEvent(self, event: Any) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = self.bar_rect()
        n = max(2, int(rect.width()))
        colors = np.ascontiguousarray(np.repeat(self.bar_colors(n)[None], 1, axis=0))
        image = QImage(colors.data, n, 1, 3 * n, QImage.Format.Format_RGB888)  # type: ignore[call-overload]
        painter.drawImage(rect, image)
        if self.floor > 0:  # not drawn below the floor
            hidden = QRectF(
                rect.left(), rect.top(), self.x_of(self.floor) - rect.left(), rect.height()
            )
            painter.fillRect(hidden, QBrush(QColor(120, 120, 120), Qt.BrushStyle.BDiagPattern))
        painter.setPen(QPen(self.palette().windowText().color(), 1))
        painter.drawRect(rect)
        font = painter.font()
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        painter.setFont(font)
        for value in (0.0, 0.5, 1.0):
            x = self.x_of(value)
            painter.drawLine(QPointF(x, rect.bottom()), QPointF(x, rect.bottom() + 3))
            painter.drawText(
                QRectF(x - 15, rect.bottom() + 3, 30, 12),
                Qt.AlignHCenter,  # type: ignore[attr-defined]
                f"{value:g}",
            )
        # the threshold: a line across the bar, a triangle above it, the value beside
        x = self.x_of(self.threshold)
        painter.setPen(QPen(QColor(0, 0, 0), 3))
        painter.drawLine(QPointF(x, rect.top() - 2), QPointF(x, rect.bottom() + 2))
        painter.setPen(QPen(QColor(255, 255, 255), 1))
        painter.drawLine(QPointF(x, rect.top() - 2), QPointF(x, rect.bottom() + 2))
        painter.setPen(Qt.NoPen)  # type: ignore[attr-defined]
        painter.setBrush(self.palette().windowText().color())
        painter.drawPolygon(
            QPolygonF(
                [
                    QPointF(x - 5, rect.top() - 8),
                    QPointF(x + 5, rect.top() - 8),
                    QPointF(x, rect.top() - 2),
                ]
            )
        )
        painter.setPen(QPen(self.palette().windowText().color(), 1))
        label = f"threshold {self.threshold:.3g}"
        width = painter.fontMetrics().horizontalAdvance(label) + 4
        left = min(max(x + 7 if x < self.width() / 2 else x - 7 - width, 0), self.width() - width)
        painter.drawText(QRectF(left, 0, width, 12), Qt.AlignLeft, label)  # type: ignore[attr-defined]
        painter.end()
