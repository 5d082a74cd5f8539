"""Regions of a probability map above a threshold, as level-0 polygons with their measurements.

Each grid cell stands for the square of one grid step centred on its patch (the patch itself when
patches do not overlap). Cells at or above the threshold are grouped into 4-connected components
(scikit-image), and each component's squares are merged exactly (shapely), so a region's outline
follows the cells the model flagged, holes included, and its area is the flagged area, not an
interpolated guess. Polygons are clipped to the slide and are in level-0 pixels, like every file the
package writes; areas are in µm².
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import shapely
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry
from skimage import measure

from napari_metastasis.maps.probability import ProbabilityMap

#: The measurements of a detected region, with the same names everywhere: QuPath GeoJSON
#: ``measurements`` (``predict`` and the widget's export), CSV summary columns and the napari regions
#: layer's features. ``threshold`` is there when the threshold is known.
REGION_MEASUREMENTS = ("area_um2", "max_prob", "mean_prob", "patches", "threshold")


class RegionDecision(Protocol):
    """What a map's region needs of the deposit decision made on it
    (:class:`napari_metastasis.clinical.decision.Decision`); maps know nothing more of clinics."""

    @property
    def confirmed(self) -> bool: ...

    @property
    def seed_patches(self) -> int: ...


@dataclass
class Region:
    """One connected region above the threshold."""

    id: int  # 1-based, by decreasing max probability
    polygon: BaseGeometry  # level-0 px; a Polygon (holes kept), clipped to the slide
    area_um2: float
    max_prob: float
    mean_prob: float
    n_cells: int
    #: A UUID, as QuPath gives its objects: the feature id in every file and in the napari layer.
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: (n, 2) row, col of the grid cells it was made of (None: a region from elsewhere).
    cells: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: The deposit decision on it (None: not decided, it counts as a deposit, as before).
    decision: RegionDecision | None = None

    @property
    def confirmed(self) -> bool:
        """Whether it counts as a deposit: confirmed by the decision, or never decided."""
        return self.decision is None or self.decision.confirmed

    @property
    def label(self) -> str:
        """Its name in files and lists: "Region 3", "Region 3 (not confirmed)"."""
        return f"Region {self.id}" if self.confirmed else f"Region {self.id} (not confirmed)"

    @property
    def area_mm2(self) -> float:
        return self.area_um2 / 1e6

    @property
    def centroid(self) -> tuple[float, float]:
        """Level-0 (x, y) of the region's centroid."""
        c = self.polygon.centroid
        return float(c.x), float(c.y)


def cell_footprints(prob_map: ProbabilityMap, cells: np.ndarray) -> np.ndarray:
    """(N, 4) level-0 (minx, miny, maxx, maxy) of the step-sized squares centred on the patches.

    Edges come from one formula of the integer edge index, so neighbouring squares share exactly the
    same coordinate and their union has no hairline gaps.
    """
    grid = prob_map.grid
    cells = np.asarray(cells, dtype=np.float64).reshape(-1, 2)
    sx, sy = grid.step_level0
    ox, oy = grid.footprint_origin_level0
    rows, cols = cells[:, 0], cells[:, 1]
    return np.column_stack(
        [cols * sx + ox, rows * sy + oy, (cols + 1) * sx + ox, (rows + 1) * sy + oy]
    )


def probability_contours(
    prob_map: ProbabilityMap, threshold: float, min_area_um2: float = 0.0
) -> list[Region]:
    """Regions whose cells have probability >= ``threshold`` (unanalysed cells never count)."""
    values = prob_map.values
    above = np.zeros(values.shape, bool)
    np.greater_equal(values, threshold, out=above, where=~np.isnan(values))
    if not above.any():
        return []
    labels = measure.label(above, connectivity=1)
    grid = prob_map.grid
    slide_box = box(0, 0, grid.width, grid.height)
    um2_per_px2 = grid.mpp_x * grid.mpp_y
    regions: list[Region] = []
    for props in measure.regionprops(labels):
        cells = props.coords  # (n, 2) row, col
        squares = shapely.box(*cell_footprints(prob_map, cells).T)
        polygon = shapely.union_all(squares).intersection(slide_box).simplify(0)
        if polygon.is_empty:
            continue
        polygon = _largest_polygon(polygon)
        area = polygon.area * um2_per_px2
        if area < min_area_um2:
            continue
        probs = values[cells[:, 0], cells[:, 1]]
        regions.append(
            Region(
                0,
                polygon,
                float(area),
                float(probs.max()),
                float(probs.mean()),
                len(cells),
                cells=np.asarray(cells, np.int64),
            )
        )
    regions.sort(key=lambda r: (-r.max_prob, -r.area_um2))
    for i, region in enumerate(regions, start=1):
        region.id = i
    return regions


def region_detections(regions: list[Region], prob_map: ProbabilityMap) -> np.ndarray:
    """(K, 3) level-0 (x, y, probability): one point per region, at its most probable cell (the
    Camelyon16 detection file's rows; :meth:`PatchGrid.detection_points` puts it on the slide)."""

    values = np.nan_to_num(prob_map.values, nan=0.0)
    out = []
    for region in regions:
        coords = region_cells(region, prob_map)
        best = coords[np.argmax(values[coords[:, 0], coords[:, 1]])]
        x, y = prob_map.grid.detection_points(best[None])[0]
        out.append((x, y, float(values[best[0], best[1]])))
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)


def _largest_polygon(geometry: BaseGeometry) -> BaseGeometry:
    """A 4-connected union is one polygon; clipping or float noise may leave slivers: keep the body."""
    if isinstance(geometry, Polygon):
        return geometry
    polygons = [g for g in getattr(geometry, "geoms", []) if isinstance(g, Polygon)]
    return max(polygons, key=lambda g: g.area) if polygons else geometry


def region_cells(region: Region, prob_map: ProbabilityMap) -> np.ndarray:
    """(N, 2) row, col of a region's cells: those it was made of, else the cells whose patch
    centre lies inside its outline (a region from elsewhere)."""
    cells = getattr(region, "cells", None)
    if cells is not None:
        return np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    return prob_map.grid.cells_in_geometry(region.polygon)
