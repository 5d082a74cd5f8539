"""probability_contours as the threshold slider uses it: ordering, splitting, odd cell sizes."""

from __future__ import annotations

import pytest

from napari_metastasis.maps.contours import probability_contours
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.slides.grid import PatchGrid

#: 100 level-0 px per cell at 0.5 µm/px: a cell is 50 × 50 µm = 2500 µm².
GRID = PatchGrid(2000, 1500, 0.5, 0.5, patch_px=100, spacing_um=0.5)
CELL_UM2 = 2500.0


def make_map(grid: PatchGrid = GRID, fill: float = 0.0) -> ProbabilityMap:
    prob = ProbabilityMap.empty(grid)
    prob.values[:] = fill
    return prob


def test_threshold_splits_and_shrinks_regions():
    prob = make_map()
    prob.values[1:4, 1:4] = 0.6
    prob.values[2, 2] = 0.95
    prob.values[8:10, 8:12] = 0.8
    low = probability_contours(prob, 0.5)
    high = probability_contours(prob, 0.7)
    top = probability_contours(prob, 0.9)
    assert [r.n_cells for r in low] == [9, 8]  # highest max_prob first
    assert [r.n_cells for r in high] == [1, 8]
    assert [r.n_cells for r in top] == [1]
    assert [r.id for r in low] == [1, 2]
    assert low[0].mean_prob == pytest.approx((8 * 0.6 + 0.95) / 9, rel=1e-6)


def test_non_integer_steps_still_merge_into_one_polygon():
    grid = PatchGrid(3000, 3000, 0.499, 0.499, patch_px=64, spacing_um=2.0)  # 256.5 px cells
    prob = make_map(grid)
    prob.values[2:6, 3:8] = 0.9
    (region,) = probability_contours(prob, 0.5)
    assert region.polygon.geom_type == "Polygon" and len(region.polygon.exterior.coords) == 5
    assert region.area_um2 == pytest.approx(20 * grid.step_um**2)
