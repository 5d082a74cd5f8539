"""What the regions layer holds, without napari: rings, features, outline colours and widths.

Regions become annotations (level-0 px) with the measurements ``predict`` writes; each ring is told
from another by its shape type and vertices; the features table starts empty with the annotation
convention's columns (:mod:`napari_metastasis.annotations.layers`). Outline colours follow the
classification (tumour in a colour chosen against the overlay's colormap), a comparison's colours,
the highlight, and the deposit decision (unconfirmed candidates pale grey and thinner); widths are
in world units (µm on a calibrated slide), for a constant width on screen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from napari_metastasis.annotations.layers import SHAPES_COLUMNS
from napari_metastasis.annotations.model import TUMOUR_CLASS, Annotation, class_color
from napari_metastasis.clinical.region_annotations import region_annotation
from napari_metastasis.maps.contours import REGION_MEASUREMENTS

#: Measurement columns of each region, after the convention's own columns.
MEASUREMENTS = REGION_MEASUREMENTS
DEFAULT_CLASSIFICATION = TUMOUR_CLASS
#: Outline width in screen pixels, whatever the zoom.
EDGE_SCREEN_PX = 3.0  # 2 px outlines were lost over the tissue at whole-slide zoom
#: Tumour outlines on screen by default (the widget picks the colour that stands out against the
#: overlay's colormap, see :func:`napari_metastasis._napari.colormaps.contour_color`); other
#: classes use their export colour.
TUMOUR_DISPLAY_COLOR = "#00ff66"
#: The region selected in the list: drawn this much wider, in a colour unlike the other outlines.
HIGHLIGHT_WIDTH = 3.0
HIGHLIGHT_COLOR = "#ffff00"
#: Outline of candidates the deposit decision did not confirm: a pale grey, unlike any colormap's
#: outline colour, visible over the overlay's colours.
CANDIDATE_DISPLAY_COLOR = "#d8d8d8"
#: Their outline width, relative to a deposit's.
CANDIDATE_WIDTH = 0.75


def display_color(classification: str, tumour_color: str = TUMOUR_DISPLAY_COLOR) -> str:
    key = (classification or "").strip().lower()
    if key == TUMOUR_CLASS.lower():
        return tumour_color
    return "#{:02x}{:02x}{:02x}".format(*class_color(classification or None))


def region_annotations(
    regions: Sequence, labels: Sequence[str], threshold: float | None = None
) -> list[Annotation]:
    """Annotations (level-0 px) for regions from
    :func:`napari_metastasis.maps.contours.probability_contours`."""
    return [
        region_annotation(region, label, threshold)
        for region, label in zip(regions, labels, strict=True)
    ]


def ring_key(vertices: np.ndarray, shape_type: str) -> bytes:
    """What tells one ring from another: its shape type and its vertices as napari holds them."""
    return shape_type.encode() + np.ascontiguousarray(vertices, dtype=np.float32).tobytes()


def empty_features() -> pd.DataFrame:
    table = pd.DataFrame({c: pd.Series(dtype=object) for c in SHAPES_COLUMNS})
    table["part"] = table["part"].astype(int)
    for column in MEASUREMENTS:
        table[column] = pd.Series(dtype=float)
    return table


def outline_colors(
    ids: Iterable[str],
    classifications: Iterable[str],
    *,
    highlighted: str | None,
    region_colors: dict[str, str],
    unconfirmed: set[str],
    tumour_color: str,
    highlight_color: str,
) -> list[str]:
    """Each ring's outline colour: the highlight, else a colour given to its region (a reference
    comparison), else grey for an unconfirmed candidate, else its classification's."""
    colors = []
    for region_id, classification in zip(ids, classifications, strict=True):
        if region_id == highlighted:
            colors.append(highlight_color)
        elif region_id in region_colors:
            colors.append(region_colors[region_id])
        elif region_id in unconfirmed:
            colors.append(CANDIDATE_DISPLAY_COLOR)
        else:
            colors.append(display_color(classification, tumour_color))
    return colors


def outline_widths(
    ids: Iterable[str], width: float, highlighted: str | None, unconfirmed: set[str]
) -> list[float]:
    """Each ring's outline width (world units), from a deposit's ``width``."""
    return [
        width * HIGHLIGHT_WIDTH
        if i == highlighted
        else width * CANDIDATE_WIDTH
        if i in unconfirmed
        else width
        for i in ids
    ]
