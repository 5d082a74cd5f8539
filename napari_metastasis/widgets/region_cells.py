"""The cells of one row of the region navigator: what a region shows, and how it sorts.

Sizes are the greatest dimension in mm and the area in mm² (regions carry µm²); probabilities are
0–1 with three decimals. A candidate the deposit decision did not confirm
(:mod:`napari_metastasis.clinical.decision`) is written in grey, with the decision's reason in each
cell's tooltip. Only a confirmed deposit's size and category are tinted by the category: a
candidate's category is what its size would make it, in brackets and untinted, so that no
"Micro" in the list looks like a deposit the verdict does not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QTableWidgetItem

from napari_metastasis.clinical.staging import CATEGORIES, CATEGORY_LABELS, CATEGORY_TINTS, Deposit

#: Text colour of candidates the deposit decision did not confirm (readable on light and dark
#: themes).
CANDIDATE_TEXT_COLOR = "#909090"
#: Category names short enough for a narrow column (the tooltip has the full name).
SHORT_CATEGORY = {"negative": "—", "itc": "ITC", "micro": "Micro", "macro": "Macro"}


def _mm(deposit: Deposit) -> str:
    return f"{deposit.greatest_dimension_mm:.3f}"


class NumericItem(QTableWidgetItem):
    """A table cell that shows formatted text and sorts by its number."""

    def __init__(self, value: float, text: str):
        super().__init__(text)
        self.value = float(value)

    def __lt__(self, other: QTableWidgetItem) -> bool:  # Qt calls this when sorting
        if isinstance(other, NumericItem):
            return self.value < other.value
        return super().__lt__(other)


def region_cells(
    region: Any, label: str, deposit: Deposit | None, confirmed: bool = True
) -> list[QTableWidgetItem]:
    """The row's cells, in the navigator's column order: id, label, size, category (tinted by
    the category when ``confirmed``; empty without ``deposit``), max and mean probability, area."""
    items: list[QTableWidgetItem] = [
        NumericItem(region.id, str(region.id)),
        QTableWidgetItem(label),
    ]
    if deposit is not None:
        severity = CATEGORIES.index(deposit.category)
        size = NumericItem(deposit.greatest_dimension_mm, _mm(deposit))
        if confirmed:
            category = NumericItem(severity, SHORT_CATEGORY[deposit.category])
            category.setToolTip(CATEGORY_LABELS[deposit.category])
            for tinted in (size, category):
                tinted.setBackground(QBrush(QColor(CATEGORY_TINTS[deposit.category])))
                tinted.setForeground(QBrush(QColor("black")))
        else:  # sorts below every confirmed deposit of its category; the row is greyed
            category = NumericItem(severity - 0.5, f"({SHORT_CATEGORY[deposit.category]})")
            category.setToolTip(
                f"Not a confirmed deposit; by its size it would be "
                f"{CATEGORY_LABELS[deposit.category].lower()}"
            )
        items += [size, category]
    else:
        items += [NumericItem(0, ""), NumericItem(0, "")]
    items += [
        NumericItem(region.max_prob, f"{region.max_prob:.3f}"),
        NumericItem(region.mean_prob, f"{region.mean_prob:.3f}"),
        NumericItem(region.area_um2, f"{region.area_um2 / 1e6:.4f}"),
    ]
    return items


def region_tip(region: Any) -> str:
    """Whether the deposit decision confirmed the region, and why."""
    confirmed = getattr(region, "confirmed", True)
    decision = getattr(region, "decision", None)
    reason = decision.reason if decision is not None else "not decided: counts as a deposit"
    return f"Confirmed deposit: {reason}" if confirmed else f"Not confirmed: {reason}"


def rows_signature(
    regions: Sequence,
    labels: Sequence[str],
    edited: bool,
    deposits: Sequence[Deposit] | None,
    analysed: bool,
) -> tuple:
    """Everything the table and the summary line show of these regions (the same signature:
    nothing to redraw)."""
    rows = tuple(
        (
            r.id,
            label,
            r.max_prob,
            r.mean_prob,
            r.area_um2,
            bool(getattr(r, "confirmed", True)),
            getattr(getattr(r, "decision", None), "reason", None),
        )
        for r, label in zip(regions, labels, strict=True)
    )
    sizes = (
        None if deposits is None else tuple((d.category, d.greatest_dimension_mm) for d in deposits)
    )
    return rows, sizes, edited, analysed
