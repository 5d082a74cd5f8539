"""Threshold a probability map into regions: one polygon (holes kept) per connected region.

Each analysed grid cell stands for the square of one grid step around its patch centre: exactly the
pixel the overlay draws for it. A region is the union of the squares of 4-connected cells at or above
the threshold, so its outline follows what the pathologist sees in the heatmap, its area is the area
those cells cover, and a ring of positive cells around a negative one gives a polygon with a hole.
Cells never analysed (NaN) are never part of a region. Polygons are in level-0 pixels, clipped to the
slide, ready for the annotation writers; areas are in µm².
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon, box

from .probability import ProbabilityMap


@dataclass(frozen=True)
class Region:
    """One connected region above the threshold."""

    id: int  # 1 = highest max_prob (ties: larger area first)
    polygon: Polygon  # level-0 px, holes as interiors
    area_um2: float
    max_prob: float
    mean_prob: float  # over the region's cells
    n_cells: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Level-0 (minx, miny, maxx, maxy)."""
        return self.polygon.bounds


def cell_squares(prob_map: ProbabilityMap, cells: np.ndarray) -> np.ndarray:
    """Shapely boxes (level-0 px) of one grid step centred on each cell's patch centre.

    Neighbouring squares share their edge exactly (the same float from the same index), which is
    what lets :func:`shapely.coverage_union_all` merge them without slivers.
    """
    grid = prob_map.grid
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    step_x, step_y = grid.step_level0
    patch_x, patch_y = grid.patch_level0

    def edge_x(col):
        return (col - 0.5) * step_x + patch_x / 2

    def edge_y(row):
        return (row - 0.5) * step_y + patch_y / 2

    rows, cols = cells[:, 0], cells[:, 1]
    return shapely.box(edge_x(cols), edge_y(rows), edge_x(cols + 1), edge_y(rows + 1))


def probability_contours(
    prob_map: ProbabilityMap, threshold: float, min_area_um2: float = 0.0
) -> list[Region]:
    """Regions where the probability is >= ``threshold``, at least ``min_area_um2`` large.

    Sorted by maximum probability, then area (largest first); ids follow that order.
    """
    values = prob_map.values
    with np.errstate(invalid="ignore"):
        mask = np.nan_to_num(values, nan=-np.inf) >= threshold
    labels, n = ndimage.label(mask)  # 4-connectivity: squares touching at a corner stay apart
    if n == 0:
        return []
    grid = prob_map.grid
    um2_per_px = grid.mpp_x * grid.mpp_y
    slide_box = box(0, 0, grid.width, grid.height)
    index = np.arange(1, n + 1)
    maxima = ndimage.maximum(values, labels, index)
    means = ndimage.mean(values, labels, index)
    found: list[tuple[Polygon, float, float, int]] = []
    for k, window in enumerate(ndimage.find_objects(labels)):
        rows, cols = np.nonzero(labels[window] == k + 1)
        cells = np.stack([rows + window[0].start, cols + window[1].start], axis=1)
        shape = shapely.coverage_union_all(cell_squares(prob_map, cells))
        shape = shapely.simplify(shape.intersection(slide_box), 0)  # drop collinear vertices
        parts = shape.geoms if isinstance(shape, MultiPolygon) else [shape]
        for part in parts:
            if isinstance(part, Polygon) and not part.is_empty:
                found.append((part, float(maxima[k]), float(means[k]), len(cells)))
    found.sort(key=lambda f: (-f[1], -f[0].area))
    regions = []
    for polygon, max_prob, mean_prob, n_cells in found:
        area = polygon.area * um2_per_px
        if area >= min_area_um2:
            regions.append(Region(len(regions) + 1, polygon, area, max_prob, mean_prob, n_cells))
    return regions
