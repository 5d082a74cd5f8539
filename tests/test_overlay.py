"""The probability overlay and the regions layer: placement, NaN transparency, outline width."""

from __future__ import annotations

import numpy as np
import pytest
from widget_helpers import add_sample_slide

from napari_metastasis.maps.contours import probability_contours
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.widgets.frame import SlideFrame
from napari_metastasis.widgets.overlay import ProbabilityOverlay
from napari_metastasis.widgets.region_shapes import EDGE_SCREEN_PX
from napari_metastasis.widgets.regions_layer import RegionsLayer

pytestmark = pytest.mark.gui


def test_frame_of_the_sample_layer_reproduces_the_grid_transform(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = add_sample_slide(viewer)
    frame = SlideFrame.from_layer(layer)
    assert (frame.width, frame.height) == (2220, 2967)
    grid = PatchGrid(2220, 2967, 0.499, 0.499, patch_px=224, spacing_um=0.5)
    kwargs = frame.overlay_kwargs(grid)
    np.testing.assert_allclose(kwargs["scale"], grid.layer_scale)
    np.testing.assert_allclose(kwargs["translate"], grid.layer_translate)
    xy = np.array([[0.0, 0.0], [1000.0, 2000.0]])
    np.testing.assert_allclose(frame.to_world(xy), grid.level0_to_um(xy)[:, ::-1])
    np.testing.assert_allclose(frame.to_level0(frame.to_world(xy)), xy)


def test_uncalibrated_layer_puts_cells_on_their_pixels():
    """World = pixels (scale 1) while the engine's grid may use a fallback µm/px."""
    frame = SlideFrame(4000, 3000, (1.0, 1.0))
    grid = PatchGrid(4000, 3000, 0.5, 0.5, patch_px=100, spacing_um=1.0)  # 200 px cells
    kwargs = frame.overlay_kwargs(grid)
    assert kwargs["scale"] == (200.0, 200.0)
    # pixel (r, c) of the overlay is drawn at translate + (r, c) * scale: the cell centre in px
    centre_yx = np.array(kwargs["translate"]) + np.array([3, 5]) * np.array(kwargs["scale"])
    np.testing.assert_allclose(centre_yx[::-1], grid.cell_centres_level0([[3, 5]])[0])


def test_a_moved_slide_layer_moves_the_overlay_with_it():
    frame = SlideFrame(2000, 2000, (0.5, 0.5), (100.0, -50.0))
    grid = PatchGrid(2000, 2000, 0.5, 0.5, patch_px=100, spacing_um=0.5)
    kwargs = frame.overlay_kwargs(grid)
    np.testing.assert_allclose(
        kwargs["translate"], np.array(grid.layer_translate) + np.array([100.0, -50.0])
    )


def test_overlay_draws_nan_transparent_and_zero_tinted(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.full((400, 400, 3), 255, np.uint8), rgb=True, scale=(0.5, 0.5))
    grid = PatchGrid(400, 400, 0.5, 0.5, patch_px=100, spacing_um=0.5)  # 4 × 4 cells
    prob = ProbabilityMap.empty(grid)
    overlay = ProbabilityOverlay(viewer, prob, "probability")
    overlay.refresh()  # all NaN: no error, limits stay 0-1
    assert tuple(overlay.layer.contrast_limits) == (0.0, 1.0)
    prob.values[:2, :] = 0.0
    overlay.refresh()
    assert tuple(overlay.layer.contrast_limits) == (0.0, 1.0)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    height, width = shot.shape[:2]
    top = shot[int(height * 0.35), width // 2, :3]  # a 0.0 cell: tinted blue
    bottom = shot[int(height * 0.65), width // 2, :3]  # a NaN cell: the white image shows through
    assert tuple(bottom) == (255, 255, 255)
    assert top[2] > top[0] and tuple(top) != (255, 255, 255)
    overlay.set_visible(False)
    overlay.set_opacity(0.3)
    overlay.set_colormap("viridis")
    assert not overlay.layer.visible and overlay.layer.opacity == pytest.approx(0.3)
    assert overlay.layer.colormap.name.startswith("viridis")  # viridis, fading in


def test_overlay_comes_back_if_the_user_deleted_it(make_napari_viewer):
    viewer = make_napari_viewer()
    grid = PatchGrid(400, 400, 0.5, 0.5, patch_px=100, spacing_um=0.5)
    overlay = ProbabilityOverlay(viewer, ProbabilityMap.empty(grid), "probability")
    layer = overlay.layer
    viewer.layers.remove(layer)
    assert not overlay.is_shown()
    overlay.refresh()
    assert overlay.is_shown() and overlay.layer is not layer


def test_region_outlines_keep_their_screen_width_when_zooming(make_napari_viewer):
    viewer = make_napari_viewer()
    grid = PatchGrid(2000, 2000, 0.5, 0.5, patch_px=100, spacing_um=0.5)
    prob = ProbabilityMap.empty(grid)
    prob.values[:] = 0.0
    prob.values[2:5, 2:5] = 0.9
    regions_layer = RegionsLayer(viewer, SlideFrame.from_grid(grid), "regions")
    regions = probability_contours(prob, 0.5)
    regions_layer.show(regions, ["Tumor"] * len(regions))
    layer = regions_layer.layer
    camera = viewer.scene.camera
    camera.zoom = 4.0
    assert layer.edge_width[0] == pytest.approx(EDGE_SCREEN_PX / 4.0)
    camera.zoom = 0.01
    assert layer.edge_width[0] == pytest.approx(EDGE_SCREEN_PX / 0.01)
    # data in µm (world), features per ring
    # cell 2's square starts 150 px from the corner (cells are centred on multiples of 100 px)
    np.testing.assert_allclose(layer.data[0].min(axis=0), [75.0, 75.0])  # 150 px * 0.5 µm/px
    assert list(layer.features["role"]) == ["exterior"]
    assert layer.features["area_um2"][0] == pytest.approx(9 * 2500.0)
    regions_layer.show([], [])
    assert layer.nshapes == 0 and len(layer.features) == 0


def test_a_map_on_a_new_grid_reuses_the_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    coarse = PatchGrid(400, 400, 0.5, 0.5, patch_px=100, spacing_um=0.5)
    fine = PatchGrid(400, 400, 0.5, 0.5, patch_px=50, spacing_um=0.5)
    overlay = ProbabilityOverlay(viewer, ProbabilityMap.empty(coarse), "probability")
    layer = overlay.layer
    overlay.set_map(ProbabilityMap.empty(fine))
    assert overlay.layer is layer and overlay.cell_values().shape == fine.shape
    raster = overlay.raster
    f = raster.factor  # each cell drawn as f × f pixels
    np.testing.assert_allclose(np.array(layer.scale) * f, fine.layer_scale)
    # the middle of cell (1, 1)'s pixels is the cell's centre
    middle = np.array([sum(raster.pixel_range(axis, 1, 2)[:2]) / 2 - 0.5 for axis in (0, 1)])
    np.testing.assert_allclose(
        np.array(layer.translate) + middle * np.array(layer.scale),
        np.array(fine.layer_translate) + np.array(fine.layer_scale),
    )


# --- D7: drawing that never blocks ---------------------------------------------------------------
def _whole_slide_grid() -> PatchGrid:
    """A lymph node's map: 40,000 × 32,000 px at 0.5 µm/px in 80 µm patches (200 × 250 cells)."""
    return PatchGrid(40000, 32000, 0.5, 0.5, patch_px=80, spacing_um=1.0)


def test_d7_a_refresh_renders_only_the_chunks_a_batch_changed(make_napari_viewer):
    """D7: while a run streams in, each refresh used to render all ~50,000 cells of the map again
    and make napari redraw the layer, even when no batch had arrived since the last one."""
    viewer = make_napari_viewer()
    prob = ProbabilityMap.empty(_whole_slide_grid())
    overlay = ProbabilityOverlay(viewer, prob, "probability")
    prob.values[:] = 0.2
    overlay.refresh()
    data = overlay.layer.data
    raster = overlay.raster
    far = (150, 200)  # a cell in another chunk than the batch below

    def pixel(cell: tuple[int, int]) -> tuple[int, int]:
        return tuple(int(raster.cell_pixels(axis, cell[axis] + 1)[-1]) for axis in (0, 1))

    data[pixel(far)] = 0.77  # a mark that a render of the whole map overwrites
    redraws = []
    overlay.layer.events.set_data.connect(redraws.append)

    overlay.refresh()  # no batch since the last refresh: napari draws nothing
    assert redraws == []

    prob.values[3, 4] = 0.9  # a batch's cell
    overlay.refresh()
    assert len(redraws) == 1
    assert overlay.layer.data is data  # drawn into the same array, not a new one
    assert data[pixel((3, 4))] == pytest.approx(0.9)
    assert data[pixel(far)] == pytest.approx(0.77)  # its chunk was not rendered

    prob.values[far] = 0.5  # a batch in that chunk redraws it
    overlay.refresh()
    assert data[pixel(far)] == pytest.approx(0.5)
    np.testing.assert_array_equal(overlay.cell_values(), prob.values)
    # chunk by chunk, cut at the slide's edges, it is what a render of the whole map draws
    prob.values[0, :5] = prob.values[-1, -5:] = 0.6  # chunks on the first and last cells
    overlay.refresh()
    np.testing.assert_array_equal(data, raster.render(prob.values))


def test_d7_regions_computed_again_change_only_the_rings_that_changed(make_napari_viewer):
    """D7: the contours are recomputed every few seconds during a run; the regions layer used to
    be emptied and filled again each time (napari rebuilt every mesh and its thumbnail), even
    when every region came back as it was."""
    viewer = make_napari_viewer()
    grid = _whole_slide_grid()
    prob = ProbabilityMap.empty(grid)
    prob.values[:] = 0.0
    for row, col in ((10, 10), (60, 120), (150, 30)):
        prob.values[row : row + 4, col : col + 5] = 0.9
    prob.values[61, 121] = 0.1  # a hole in the second region
    regions_layer = RegionsLayer(viewer, SlideFrame.from_grid(grid), "regions")
    first = probability_contours(prob, 0.5)
    regions_layer.show(first, ["Tumor"] * len(first))
    layer = regions_layer.layer
    assert layer.nshapes == 4  # three exteriors and a hole
    changes = []
    layer.events.data.connect(lambda event: changes.append(str(event.action)))

    again = probability_contours(prob, 0.5)  # the same regions, new uids
    regions_layer.show(again, ["Tumor"] * len(again))
    assert changes == []
    assert set(layer.features["id"]) == {r.uid for r in again}

    prob.values[150:156, 30:35] = 0.9  # a batch grows the third region
    grown = probability_contours(prob, 0.5)
    regions_layer.show(grown, ["Tumor"] * len(grown))
    assert sum("removed" in a for a in changes) == 1  # its old ring
    assert sum("added" in a for a in changes) == 1  # its new ring
    # the layer holds what a layer made from scratch holds (rows in another order)
    fresh = RegionsLayer(viewer, SlideFrame.from_grid(grid), "fresh")
    fresh.show(grown, ["Tumor"] * len(grown))

    def rings(lyr):
        table = lyr.layer.features
        return sorted(
            (str(i), str(role), float(area), tuple(np.round(d, 3).ravel()))
            for i, role, area, d in zip(
                table["id"], table["role"], table["area_um2"], lyr.layer.data, strict=True
            )
        )

    assert rings(regions_layer) == rings(fresh)
    assert list(layer.edge_width) == pytest.approx(list(fresh.layer.edge_width))


def test_a_regions_update_draws_the_layer_thumbnail_once(make_napari_viewer):
    """napari drew a Shapes layer's thumbnail after every change of one update (rings removed,
    rings added, colours): 20-30 ms each with hundreds of outlines, on the GUI thread when a run
    ends (bench_gui's end-of-run stall). Now once per update, and it shows the new outlines."""
    viewer = make_napari_viewer()
    grid = _whole_slide_grid()
    prob = ProbabilityMap.empty(grid)
    prob.values[:] = 0.0
    prob.values[10:14, 10:15] = 0.9
    prob.values[60:64, 100:110] = 0.9
    regions_layer = RegionsLayer(viewer, SlideFrame.from_grid(grid), "regions")
    first = probability_contours(prob, 0.5)
    regions_layer.show(first, ["Tumor"] * len(first))
    layer = regions_layer.layer
    before = layer.thumbnail.copy()
    drawn = []
    layer.events.thumbnail.connect(lambda event: drawn.append(layer.thumbnail.copy()))
    prob.values[10:14, 10:15] = 0.0  # one region goes, one stays, one comes
    prob.values[150:156, 30:35] = 0.9
    again = probability_contours(prob, 0.5)
    regions_layer.show(again, ["Tumor"] * len(again))
    assert layer.nshapes == 2
    assert len(drawn) == 1
    assert not np.array_equal(drawn[0], before)  # the new outlines are in it
