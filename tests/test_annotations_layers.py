"""Level-0 px annotations <-> napari Shapes/Points layer data in µm: exact, holes kept."""

from __future__ import annotations

import uuid
import warnings

import numpy as np
import pandas as pd
import pytest
import shapely
from napari.layers import Points, Shapes
from shapely.geometry import LineString, MultiLineString, MultiPoint, MultiPolygon, Point, Polygon

from napari_metastasis.annotations import Annotation, read_annotations, tumour_geometry
from napari_metastasis.annotations.layers import (
    annotations_to_layer_data,
    layer_to_annotations,
    points_to_annotations,
    px_to_um,
    shapes_layer_data,
    shapes_to_annotations,
    um_to_px,
)

MPP = (0.2431, 0.2427)  # (mpp_y, mpp_x), deliberately anisotropic


@pytest.fixture
def tumor_064(ncrf_dir):
    """Camelyon16's Tumor_064 outline: 11 lesions, 24 cut-outs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_annotations(ncrf_dir / "Tumor_064.json")


def make_layer(layer_data):
    data, kwargs, kind = layer_data
    return (Shapes if kind == "shapes" else Points)(data, **kwargs)


def test_px_um_conversion_axes_and_values():
    xy = np.array([[1000.0, 20.0], [3.5, 7.25]])
    yx = px_to_um(xy, MPP)
    assert yx[0].tolist() == [20.0 * MPP[0], 1000.0 * MPP[1]]  # rows are y, columns x
    back = um_to_px(yx, MPP)
    np.testing.assert_allclose(back, xy, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(px_to_um(xy, 0.5), [[10.0, 500.0], [3.625, 1.75]])


def test_float64_round_trip_error_is_below_1e_minus_9_px():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 200_000, size=(10_000, 2))
    err = np.abs(um_to_px(px_to_um(xy, MPP), MPP) - xy).max()
    assert err < 1e-9


def test_tumour_064_through_a_real_shapes_layer_is_exact(tumor_064):
    """float32 napari vertices still give back the exact level-0 px (via the exact-px record)."""
    anns = tumor_064
    layer = make_layer(annotations_to_layer_data(anns, MPP)[0])
    assert layer.data[0].dtype == np.float32  # what napari does, and why the record exists
    back = layer_to_annotations(layer)
    assert len(back) == len(anns)
    for a, b in zip(anns, back, strict=True):
        assert shapely.equals_exact(a.geometry, b.geometry, tolerance=0)
        assert (a.classification, a.name) == (b.classification, b.name)
    # the layer really is in µm: bounding boxes match the px ones times mpp
    y_um, x_um = layer.data[0][:, 0], layer.data[0][:, 1]
    x0, _, _, y1 = anns[0].geometry.exterior.bounds
    assert x_um.min() == pytest.approx(x0 * MPP[1], rel=1e-6)
    assert y_um.max() == pytest.approx(y1 * MPP[0], rel=1e-6)


def test_without_the_record_float32_error_is_tiny_and_edits_are_used(tumor_064):
    anns = [Annotation(tumour_geometry(tumor_064), "Tumor", id="1")]
    data, kwargs, _ = shapes_layer_data(anns, MPP)
    layer = Shapes(data, **kwargs)
    layer.metadata = {"mpp": kwargs["metadata"]["mpp"]}  # lose the exact record
    (back,) = layer_to_annotations(layer)
    assert back.geometry.symmetric_difference(anns[0].geometry).area < 1e-3 * anns[0].geometry.area
    assert shapely.hausdorff_distance(back.geometry.geoms[0], anns[0].geometry.geoms[0]) < 0.02

    # edit one vertex: the edit is exported (not the remembered original)
    layer = Shapes(data, **kwargs)
    moved = layer.data[0].copy()
    moved[0] += 100.0
    layer.data = [moved, *layer.data[1:]]
    layer.features = kwargs["features"]
    (edited,) = layer_to_annotations(layer)
    first = np.asarray(edited.geometry.geoms[0].exterior.coords[0])
    shift = np.array([100 / MPP[1], 100 / MPP[0]])
    expected = np.asarray(anns[0].geometry.geoms[0].exterior.coords[0]) + shift
    np.testing.assert_allclose(first, expected, atol=0.02)


def test_holes_are_rows_with_role_hole_and_come_back():
    donut = Polygon(
        [(0, 0), (1000, 0), (1000, 1000), (0, 1000)],
        [[(100, 100), (200, 100), (200, 200)], [(500, 500), (600, 500), (600, 600), (500, 600)]],
    )
    island = Polygon([(2000, 0), (2100, 0), (2100, 50)], [[(2050, 10), (2060, 10), (2060, 20)]])
    ann = Annotation(MultiPolygon([donut, island]), "Tumor", "L1", measurements={"max_prob": 0.9})
    data, kwargs, kind = shapes_layer_data([ann], 0.5)
    features = kwargs["features"]
    assert kind == "shapes" and len(data) == 5
    assert features["role"].tolist() == ["exterior", "hole", "hole", "exterior", "hole"]
    assert features["part"].tolist() == [0, 0, 0, 1, 1]
    ident = features["id"][0]
    assert features["id"].tolist() == [ident] * 5 and str(uuid.UUID(ident)) == ident
    assert features["max_prob"].tolist() == [0.9] * 5
    assert kwargs["shape_type"] == ["path"] * 5  # closed paths: edges only, fast in napari
    assert all(np.array_equal(ring[0], ring[-1]) for ring in data)
    (back,) = layer_to_annotations(Shapes(data, **kwargs))
    assert shapely.equals_exact(back.geometry, ann.geometry, 0)
    assert back.measurements == {"max_prob": 0.9} and back.id == ident
    # rings as napari polygons work the same way
    data, kwargs, _ = shapes_layer_data([ann], 0.5, ring_shape="polygon")
    assert kwargs["shape_type"] == ["polygon"] * 5 and len(data[0]) == 4
    (back,) = layer_to_annotations(Shapes(data, **kwargs))
    assert shapely.equals_exact(back.geometry, ann.geometry, 0)


def test_contour_style_features_without_part(tmp_path):
    """What the contour code writes: id, role, and measurements; holes found by containment."""
    outer_a = np.array([[0, 0], [0, 100], [100, 100], [100, 0]], float)  # (y, x) µm
    hole_a = np.array([[40, 40], [40, 60], [60, 60], [60, 40]], float)
    outer_b = np.array([[200, 200], [200, 260], [260, 260]], float)
    features = pd.DataFrame(
        {
            "id": [1, 1, 2],
            "role": ["exterior", "hole", "exterior"],
            "classification": ["Tumor"] * 3,
            "area_um2": [9600.0, 9600.0, 1800.0],
            "max_prob": [0.99, 0.99, 0.7],
            "mean_prob": [0.8, 0.8, 0.6],
        }
    )
    anns = shapes_to_annotations([outer_a, hole_a, outer_b], ["polygon"] * 3, features, 0.25)
    assert [a.id for a in anns] == ["1", "2"]
    assert anns[0].geometry.area == pytest.approx((100 * 100 - 20 * 20) / 0.25**2)
    assert len(anns[0].geometry.interiors) == 1
    assert anns[0].measurements == {"area_um2": 9600.0, "max_prob": 0.99, "mean_prob": 0.8}
    assert anns[1].is_tumour


def test_user_drawn_shapes_are_their_own_annotations():
    anns = [Annotation(Polygon([(0, 0), (10, 0), (10, 10)]), "Tumor", id="a")]
    data, kwargs, _ = shapes_layer_data(anns, 1.0)
    layer = Shapes(data, **kwargs)
    layer.add_rectangles(np.array([[0, 0], [4, 8]]))
    layer.add_ellipses(np.array([[50, 50], [10, 20]]))  # centre (y, x), radii
    layer.add_paths(np.array([[0, 0], [5, 5], [0, 10]]))
    assert layer.features["id"].tolist() == ["a", "", "", ""]  # napari used our defaults
    assert layer.features["role"].tolist() == ["exterior", "", "", ""]
    rect, ellipse, path = layer_to_annotations(layer)[1:]
    assert rect.geometry.area == 32 and rect.classification is None
    assert str(uuid.UUID(rect.id)) == rect.id  # a new object gets a UUID, as in QuPath
    assert len({rect.id, ellipse.id, path.id}) == 3
    assert len(ellipse.geometry.exterior.coords) == 65
    assert ellipse.geometry.area == pytest.approx(np.pi * 10 * 20, rel=0.01)
    assert ellipse.geometry.centroid.coords[0] == pytest.approx((50, 50))
    assert isinstance(path.geometry, LineString) and path.geometry.coords[1] == (5, 5)


def test_lines_and_points():
    anns = [
        Annotation(LineString([(0, 0), (10, 5)]), name="ruler"),
        Annotation(MultiLineString([[(0, 0), (1, 1)], [(5, 5), (6, 7), (8, 8)]]), "Other"),
        Annotation(Point(3, 4), "Mitosis", color=(1, 2, 3)),
        Annotation(MultiPoint([(1, 1), (2, 2), (3, 5)]), "Cells", id="c"),
    ]
    shapes, points = annotations_to_layer_data(anns, MPP, name="A")
    assert shapes[1]["shape_type"] == ["path"] * 3
    assert points[1]["name"] == "A points" and len(points[0]) == 4
    assert points[1]["features"]["role"].tolist() == [
        "point",
        "multipoint",
        "multipoint",
        "multipoint",
    ]
    back = layer_to_annotations(make_layer(shapes)) + layer_to_annotations(make_layer(points))
    assert len(back) == 4
    for a, b in zip(anns, back, strict=True):
        assert shapely.equals_exact(a.geometry, b.geometry, 0)
        assert a.classification == b.classification
    assert back[2].color == (1, 2, 3) and back[3].id == "c"


def test_points_without_features():
    yx = np.array([[10.0, 20.0], [30.0, 40.0]])
    anns = points_to_annotations(yx, None, 2.0)
    assert [a.geometry.coords[0] for a in anns] == [(10.0, 5.0), (20.0, 15.0)]


def test_ids_never_collide():
    anns = [
        Annotation(Point(0, 0), id="2"),
        Annotation(Point(1, 1)),
        Annotation(Point(2, 2)),
        Annotation(Point(3, 3), id="2"),  # a duplicate id is renumbered, not merged
    ]
    (points,) = annotations_to_layer_data(anns, 1.0)
    ids = points[1]["features"]["id"].tolist()
    assert len(set(ids)) == 4 and ids[0] == "2"
    assert len(layer_to_annotations(make_layer(points))) == 4


def test_every_shared_file_survives_the_layers(annotations_dir):
    for path in sorted(annotations_dir.rglob("*.*")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            anns = read_annotations(path)
        back = []
        for layer_data in annotations_to_layer_data(anns, MPP):
            back += layer_to_annotations(make_layer(layer_data))
        key = lambda a: (a.kind, a.name or "", a.geometry.wkb)  # noqa: E731
        assert len(back) == len(anns), path.name
        for a, b in zip(sorted(anns, key=key), sorted(back, key=key), strict=True):
            assert shapely.equals_exact(a.geometry, b.geometry, 0), path.name
