"""Slide-level evaluation of probability grids against reference annotations.

* pixel Dice / IoU at a threshold, on the analysed cells of the grid (a cell is reference tumour when
  its centre lies in the tumour region, the same rule the grid uses everywhere);
* slide-level ROC AUC from a slide score (the maximum probability, Camelyon16's usual choice);
* lesion-level FROC (:mod:`.froc`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from shapely.geometry.base import BaseGeometry

from napari_metastasis.evaluation.froc import SlideHits, lesion_mask, score_detections
from napari_metastasis.maps.detections import detections_from_map
from napari_metastasis.maps.probability import ProbabilityMap


def reference_on_grid(pmap: ProbabilityMap, geometry: BaseGeometry | None) -> np.ndarray:
    """(rows, cols) bool: cells whose centre lies in the reference tumour region."""
    ref = np.zeros(pmap.grid.shape, dtype=bool)
    if geometry is None or geometry.is_empty:
        return ref
    cells = pmap.grid.cells_in_geometry(geometry)
    ref[cells[:, 0], cells[:, 1]] = True
    return ref


@dataclass
class Overlap:
    dice: float
    iou: float
    true_positive_cells: int
    predicted_cells: int
    reference_cells: int
    analysed_cells: int

    def to_dict(self) -> dict:
        return asdict(self)


def overlap(pmap: ProbabilityMap, geometry: BaseGeometry | None, threshold: float = 0.5) -> Overlap:
    """Dice and IoU of (probability >= threshold) against the reference, on analysed cells.

    Both empty (a normal slide called normal) counts as perfect agreement (1.0).
    """
    analysed = pmap.analysed
    pred = (np.nan_to_num(pmap.values, nan=0.0) >= threshold) & analysed
    ref = reference_on_grid(pmap, geometry) & analysed
    inter = int((pred & ref).sum())
    p, r = int(pred.sum()), int(ref.sum())
    union = p + r - inter
    dice = 1.0 if p + r == 0 else 2 * inter / (p + r)
    iou = 1.0 if union == 0 else inter / union
    return Overlap(dice, iou, inter, p, r, int(analysed.sum()))


def slide_hits(
    pmap: ProbabilityMap, geometry: BaseGeometry | None, detection_threshold: float = 0.5
) -> SlideHits:
    """FROC inputs of one slide from its probability map and reference geometry."""
    grid = pmap.grid
    mpp = (grid.mpp_x + grid.mpp_y) / 2
    lesions = lesion_mask(geometry, (grid.width, grid.height), mpp)
    return score_detections(detections_from_map(pmap, detection_threshold), lesions)
