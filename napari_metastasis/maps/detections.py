"""Camelyon16's detections of a probability map: one scored point per region above a threshold,
what its FROC submission files (``Evaluation_FROC.py``'s input) list."""

from __future__ import annotations

import numpy as np

from napari_metastasis.maps.contours import probability_contours
from napari_metastasis.maps.probability import ProbabilityMap


def detections_from_map(pmap: ProbabilityMap, threshold: float = 0.5) -> np.ndarray:
    """(K, 3) level-0 (x, y, probability): one point per region of cells >= threshold, at the
    region's most probable cell.

    The regions are :func:`napari_metastasis.maps.contours.probability_contours`' own, so the
    Camelyon16 file, the GeoJSON and the summary count the same regions: 4-connected, because
    cells that touch only at a corner share no edge and their outlines make two polygons.
    """
    from napari_metastasis.maps.contours import region_detections

    return region_detections(probability_contours(pmap, threshold), pmap)
