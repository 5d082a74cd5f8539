"""The probability overlay and the regions layer: placement, NaN transparency, outline width."""

from __future__ import annotations

import numpy as np
import pytest
from widget_helpers import add_sample_slide

from napari_metastasis.contours import probability_contours
from napari_metastasis.grid import PatchGrid
from napari_metastasis.probability import ProbabilityMap
from napari_metastasis.widgets.frame import SlideFrame
from napari_metastasis.widgets.overlay import ProbabilityOverlay
from napari_metastasis.widgets.regions_layer import EDGE_SCREEN_PX, RegionsLayer

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
    np.testing.assert_allclose(layer.data[0].min(axis=0), [100.0, 100.0])  # 200 px * 0.5 µm/px
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
    f = overlay.raster.factor  # each cell drawn as f × f pixels
    np.testing.assert_allclose(np.array(layer.scale) * f, fine.layer_scale)
    np.testing.assert_allclose(
        np.array(layer.translate) + (f - 1) * np.array(layer.scale) / 2, fine.layer_translate
    )
