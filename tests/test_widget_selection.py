"""What the modes select: drawn shapes (any layer transform), a click's field, the view."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import box

from napari_metastasis.widgets import selection
from napari_metastasis.widgets.frame import SlideFrame

pytestmark = pytest.mark.gui
FRAME = SlideFrame(4000, 3000, (0.5, 0.5))  # 2000 × 1500 µm


def test_shapes_become_level0_geometry_and_lines_are_ignored(make_napari_viewer):
    viewer = make_napari_viewer()
    rect = np.array([[100.0, 100.0], [100.0, 300.0], [200.0, 300.0], [200.0, 100.0]])  # µm (y, x)
    ellipse = np.array([[500.0, 500.0], [500.0, 700.0], [600.0, 700.0], [600.0, 500.0]])
    line = np.array([[0.0, 0.0], [1000.0, 1000.0]])
    layer = viewer.add_shapes(
        [rect, ellipse, line], shape_type=["rectangle", "ellipse", "line"], name="drawn"
    )
    geometry = selection.shapes_geometry(layer, FRAME)
    rect_px = box(200, 200, 600, 400)
    assert geometry.intersection(rect_px).area == pytest.approx(rect_px.area)
    ellipse_area = math.pi * 200 * 100  # semi-axes 100 µm × 50 µm = 200 × 100 px
    assert geometry.area - rect_px.area == pytest.approx(ellipse_area, rel=0.01)
    layer.selected_data = {0}
    only = selection.shapes_geometry(layer, FRAME, selected_only=True)
    assert only.equals(rect_px)


def test_a_shapes_layer_with_its_own_transform_selects_what_it_shows(make_napari_viewer):
    viewer = make_napari_viewer()
    square = np.array([[0.0, 0.0], [0.0, 10.0], [10.0, 10.0], [10.0, 0.0]])
    layer = viewer.add_shapes([square], shape_type="rectangle", scale=(10, 10), translate=(50, 80))
    geometry = selection.shapes_geometry(layer, FRAME)
    # world y 50..150, x 80..180 µm -> level-0 x 160..360, y 100..300 px
    assert geometry.equals(box(160, 100, 360, 300))


def test_shapes_are_clipped_to_the_slide(make_napari_viewer):
    viewer = make_napari_viewer()
    beyond = np.array([[-100.0, -100.0], [-100.0, 100.0], [100.0, 100.0], [100.0, -100.0]])
    layer = viewer.add_shapes([beyond], shape_type="polygon")
    assert selection.shapes_geometry(layer, FRAME).equals(box(0, 0, 200, 200))


def test_field_around_a_point_is_clipped_and_refused_outside():
    rect = selection.field_around((100.0, 1900.0), 1000.0, FRAME)  # near the right edge
    assert rect.as_tuple() == pytest.approx((2800.0, 0.0, 1200.0, 1200.0))
    assert selection.field_around((-1.0, 500.0), 1000.0, FRAME) is None
    assert selection.field_around((500.0, 2000.0), 1000.0, FRAME) is None  # on the far edge


def test_visible_region_follows_the_camera_and_canvas(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.scene.camera.center = (750.0, 1000.0)
    viewer.scene.camera.zoom = 1.0
    _height, width = selection.canvas_size(viewer)
    rect = selection.visible_region(viewer, FRAME)
    assert rect.width == pytest.approx(min(width, 2000) * 2, abs=1e-6)  # px = µm / 0.5
    assert rect.x == pytest.approx(max(0.0, (1000 - width / 2) * 2))
    viewer.scene.camera.center = (-5000.0, -5000.0)
    assert selection.visible_region(viewer, FRAME) is None
