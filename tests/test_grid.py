"""PatchGrid: the single place where cells, level-0 pixels and µm meet."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from napari_metastasis.slides.grid import PatchGrid


def make_grid(**kwargs) -> PatchGrid:
    params = {"width": 1000, "height": 600, "mpp_x": 0.25, "mpp_y": 0.25, "patch_px": 50}
    params.update(kwargs)
    params.setdefault("spacing_um", 1.0)
    return PatchGrid(**params)


def test_patch_size_in_level0_follows_resolution_ratio():
    grid = make_grid()  # 50 px at 1 µm/px = 50 µm = 200 level-0 px at 0.25 µm/px
    assert grid.patch_um == 50
    assert grid.patch_level0 == (200, 200)
    # cells centred on multiples of 200 px: x = 0 ... 1000, y = 0 ... 600 (each edge half covered)
    assert grid.shape == (4, 6)
    assert grid.cell_box(2, 4) == (700, 300, 200, 200)
    assert grid.cell_box(0, 0) == (0, 0, 100, 100)  # clipped at the top-left edges
    assert grid.cell_box(3, 5) == (900, 500, 100, 100)  # and at the bottom-right ones
    assert grid.read_boxes(np.array([[0, 0]])).tolist() == [[-100, -100, 200, 200]]
    assert grid.read_downsample == pytest.approx(4.0)


def test_cell_centres_lie_on_multiples_of_the_step():
    """The NGFF / napari pixel convention: map pixel (r, c) at (r, c) x step, no translation."""
    grid = make_grid(mpp_x=0.3, mpp_y=0.3, patch_px=37, spacing_um=0.77)
    cells = grid.all_cells()
    centres = grid.level0_to_um(grid.cell_centres_level0(cells))
    np.testing.assert_allclose(centres[:, ::-1], cells * grid.step_um, atol=1e-9)
    assert grid.layer_translate == (0.0, 0.0)


def test_a_map_stored_before_grids_were_centred_keeps_its_corner_grid():
    stored = {k: v for k, v in make_grid().to_dict().items() if k != "anchor"}
    grid = PatchGrid.from_dict(stored)
    assert grid.anchor == "corner"
    assert grid.shape == (3, 5)
    assert grid.cell_box(2, 4) == (800, 400, 200, 200)
    assert grid.layer_translate == (25, 25)
    assert grid.cells_in_rect(150, 50, 100, 100).tolist() == [[0, 0], [0, 1]]
    assert PatchGrid.from_dict(make_grid().to_dict()) == make_grid()  # new maps say "centre"
    with pytest.raises(ValueError, match="anchor"):
        make_grid(anchor="middle")


def test_cells_tile_the_slide_without_gaps_for_fractional_patch_sizes():
    grid = make_grid(mpp_x=0.3, mpp_y=0.3, patch_px=37, spacing_um=0.77)
    boxes = grid.cell_boxes(np.array([[1, c] for c in range(grid.shape[1])]))
    # each patch starts where the previous one ended: no gap, no overlap, after rounding
    assert np.all(boxes[1:, 0] == boxes[:-1, 0] + boxes[:-1, 2])
    assert boxes[0, 0] == 0  # clipped to the slide's edges
    assert boxes[-1, 0] + boxes[-1, 2] == grid.width
    read = grid.read_boxes(np.array([[1, c] for c in range(grid.shape[1])]))
    assert read[0, 0] < 0 < read[0, 0] + read[0, 2]  # the patches read are whole
    assert read[-1, 0] < grid.width < read[-1, 0] + read[-1, 2]
    np.testing.assert_array_equal(read[1:-1], boxes[1:-1])
    single = [grid.cell_box(1, c) for c in range(grid.shape[1])]
    assert np.array_equal(boxes, np.array(single))


def test_overlapping_stride():
    grid = make_grid(stride_um=25)
    assert grid.step_level0 == (100, 100)
    assert grid.shape == (7, 11)  # step squares centred on 0, 100, ... cover the slide
    assert grid.cell_box(1, 1) == (0, 0, 200, 200)
    assert grid.cell_box(3, 2) == (100, 200, 200, 200)


def test_cells_in_rect_are_exactly_the_overlapping_patches():
    grid = make_grid()
    cells = grid.cells_in_rect(150, 50, 100, 100)  # x 150-250 lies in col 1; y 50-150 rows 0, 1
    assert cells.tolist() == [[0, 1], [1, 1]]
    assert grid.cells_in_rect(-500, -500, 10, 10).shape == (0, 2)
    everything = grid.cells_in_rect(-10, -10, 5000, 5000)
    assert len(everything) == 24
    rng = np.random.default_rng(0)
    for x, y, w, h in rng.uniform(0, 900, (20, 4)):
        boxes = grid.read_boxes(grid.all_cells())
        overlap = (
            (boxes[:, 0] < min(x + w, grid.width))
            & (boxes[:, 0] + boxes[:, 2] > x)
            & (boxes[:, 1] < min(y + h, grid.height))
            & (boxes[:, 1] + boxes[:, 3] > y)
        )
        expected = grid.all_cells()[overlap] if y < grid.height else np.empty((0, 2))
        assert grid.cells_in_rect(x, y, w, h).tolist() == expected.tolist()


def test_cells_in_geometry_uses_patch_centres_and_holes():
    grid = make_grid()  # cell centres at x = 0, 200, ... 1000 and y = 0, 200, 400, 600
    hole_around_cell_1_1 = box(150, 150, 250, 250)
    with_hole = Polygon(
        box(-1, -1, 1001, 601).exterior.coords, [hole_around_cell_1_1.exterior.coords]
    )
    cells = grid.cells_in_geometry(with_hole).tolist()
    assert [1, 1] not in cells
    assert len(cells) == 23
    between_centres = box(220, 20, 380, 180)
    assert grid.cells_in_geometry(between_centres).shape == (0, 2)


def test_um_level0_round_trip_is_exact_with_anisotropic_pixels():
    grid = make_grid(mpp_x=0.25, mpp_y=0.5)
    xy = np.array([[0.0, 0.0], [123.5, 77.25], [999.0, 599.0]])
    assert np.allclose(grid.um_to_level0(grid.level0_to_um(xy)), xy, atol=1e-12)
    assert grid.level0_to_um(xy)[1].tolist() == [123.5 * 0.25, 77.25 * 0.5]


def test_layer_geometry_centres_pixels_on_patches():
    grid = make_grid()
    assert grid.layer_scale == (50, 50)
    assert grid.layer_translate == (0, 0)
    # cell (row 2, col 3) centre in µm = translate + index * scale = level-0 centre * mpp
    centre_um = np.array(grid.layer_translate) + np.array([2, 3]) * grid.layer_scale
    centre_px = grid.cell_centres_level0(np.array([[2, 3]]))[0]
    assert np.allclose(centre_um[::-1], grid.level0_to_um(centre_px))


@pytest.mark.parametrize("bad", [{"patch_px": 0}, {"spacing_um": -1}, {"stride_um": 0}])
def test_invalid_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        make_grid(**bad)


def test_display_raster_ends_at_the_slide_edge():
    """The overlay image starts within half a pixel of the slide's edges and stops within one (a
    last cell with less than half a pixel on the slide keeps one pixel), not half a patch before
    them or a patch past them, and each pixel shows the cell whose square holds it."""
    for anchor in ("centre", "corner"):
        grid = make_grid(mpp_x=0.3, mpp_y=0.3, patch_px=37, spacing_um=0.77, anchor=anchor)
        raster = grid.display_raster()
        assert raster.factor > 1
        for axis, extent in ((0, grid.height), (1, grid.width)):
            size = raster.pixel_level0[axis]
            start = raster.origin_level0[axis]
            assert abs(start) <= size / 2 + 1e-9
            assert abs(start + raster.shape[axis] * size - extent) <= size + 1e-9
            assert size * 0.3 <= 2.0 + 1e-9  # about 2 µm pixels
        values = np.arange(grid.shape[0] * grid.shape[1], dtype=np.float32).reshape(grid.shape)
        image = raster.render(values)
        assert image.shape == raster.shape
        (py, px), (oy, ox) = raster.pixel_level0, raster.origin_level0
        fx, fy = grid.footprint_origin_level0
        sx, sy = grid.step_level0
        rows = np.floor((oy + (np.arange(image.shape[0]) + 0.5) * py - fy) / sy).astype(int)
        cols = np.floor((ox + (np.arange(image.shape[1]) + 0.5) * px - fx) / sx).astype(int)
        np.testing.assert_array_equal(image, values[np.ix_(rows, cols)])
        assert rows[0] == 0 and cols[0] == 0
        assert rows[-1] == grid.shape[0] - 1 and cols[-1] == grid.shape[1] - 1
    small = grid.display_raster(max_pixels=grid.shape[0] * grid.shape[1])
    assert small.factor == 1 and small.shape == grid.shape  # the budget wins
