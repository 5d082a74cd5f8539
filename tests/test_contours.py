"""probability_contours on maps whose regions are known cell by cell."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

from napari_metastasis.contours import probability_contours
from napari_metastasis.grid import PatchGrid
from napari_metastasis.probability import ProbabilityMap

#: 100 level-0 px per cell at 0.5 µm/px: a cell is 50 × 50 µm = 2500 µm².
GRID = PatchGrid(2000, 1500, 0.5, 0.5, patch_px=100, spacing_um=0.5)
CELL_UM2 = 2500.0


def make_map(grid: PatchGrid = GRID, fill: float = 0.0) -> ProbabilityMap:
    prob = ProbabilityMap.empty(grid)
    prob.values[:] = fill
    return prob


def test_ring_of_cells_gives_one_polygon_with_a_hole():
    prob = make_map()
    prob.values[2:7, 2:7] = 0.9
    prob.values[4, 4] = 0.1
    (region,) = probability_contours(prob, 0.5)
    assert region.polygon.equals(box(200, 200, 700, 700).difference(box(400, 400, 500, 500)))
    assert len(region.polygon.interiors) == 1
    assert region.area_um2 == pytest.approx(24 * CELL_UM2)
    assert region.n_cells == 24 and region.max_prob == pytest.approx(0.9)


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


def test_cells_touching_only_at_a_corner_are_separate_regions():
    prob = make_map()
    prob.values[3, 3] = prob.values[4, 4] = 0.9
    regions = probability_contours(prob, 0.5)
    assert len(regions) == 2
    assert all(r.polygon.geom_type == "Polygon" and r.polygon.is_valid for r in regions)


def test_unanalysed_cells_are_never_part_of_a_region():
    prob = make_map(fill=np.nan)
    assert probability_contours(prob, 0.0) == []
    prob.values[5, 5:8] = 0.3
    (region,) = probability_contours(prob, 0.0)
    assert region.n_cells == 3


def test_min_area_filters_small_regions():
    prob = make_map()
    prob.values[1, 1] = 0.9
    prob.values[5:8, 5:8] = 0.8
    assert len(probability_contours(prob, 0.5)) == 2
    (big,) = probability_contours(prob, 0.5, min_area_um2=2 * CELL_UM2)
    assert big.n_cells == 9 and big.id == 1
    assert probability_contours(prob, 0.5, min_area_um2=10 * CELL_UM2) == []


def test_regions_are_clipped_to_the_slide():
    grid = PatchGrid(1050, 1000, 0.5, 0.5, patch_px=100, spacing_um=0.5)  # last column sticks out
    prob = make_map(grid)
    prob.values[:, -1] = 0.9
    (region,) = probability_contours(prob, 0.5)
    assert region.polygon.bounds == pytest.approx((1000, 0, 1050, 1000))
    assert region.area_um2 == pytest.approx(50 * 1000 * 0.25)


def test_non_integer_steps_still_merge_into_one_polygon():
    grid = PatchGrid(3000, 3000, 0.499, 0.499, patch_px=64, spacing_um=2.0)  # 256.5 px cells
    prob = make_map(grid)
    prob.values[2:6, 3:8] = 0.9
    (region,) = probability_contours(prob, 0.5)
    assert region.polygon.geom_type == "Polygon" and len(region.polygon.exterior.coords) == 5
    assert region.area_um2 == pytest.approx(20 * grid.step_um**2)


def test_overlapping_patches_use_the_step_square_around_each_centre():
    grid = PatchGrid(2000, 2000, 0.5, 0.5, patch_px=100, spacing_um=0.5, stride_um=25.0)
    prob = make_map(grid)
    prob.values[4, 4] = 0.9
    (region,) = probability_contours(prob, 0.5)
    (cx, cy) = grid.cell_centres_level0([[4, 4]])[0]
    assert region.polygon.equals(box(cx - 25, cy - 25, cx + 25, cy + 25))
