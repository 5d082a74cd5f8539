"""Our ASAP XML gives Camelyon16's recipe (ASAP's AnnotationToMask, _0/_1 tumour, _2 cut out) the
tumour we meant; older group names still read as tumour; QuPath's Ignore* reads as exclusion."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import shapely
from asap_mask_recipe import annotation_to_mask
from shapely.geometry import Polygon

from napari_metastasis.annotations import (
    Annotation,
    AnnotationRepairWarning,
    read_annotations,
    tumour_geometry,
    write_annotations,
)
from napari_metastasis.annotations.asap import to_asap_xml


def sample_points(geometry, step: float | None = None, n: int = 40) -> np.ndarray:
    """Integer level-0 pixels on a grid over the geometry's bounding box (plus a margin)."""
    x0, y0, x1, y1 = geometry.bounds
    step = step or max(x1 - x0, y1 - y0, 1) / n
    xs = np.arange(np.floor(x0) - 3 * step, x1 + 3 * step, step).round()
    ys = np.arange(np.floor(y0) - 3 * step, y1 + 3 * step, step).round()
    gx, gy = np.meshgrid(xs, ys)
    return np.column_stack([gx.ravel(), gy.ravel()])


def expected_tumour(geometry, points: np.ndarray, margin: float = 1.0):
    """(inside, decided): inside the region, and far enough from its edges to be unambiguous."""
    pts = shapely.points(points)
    inner, outer = geometry.buffer(-margin), geometry.buffer(margin)
    for g in (geometry, inner, outer):
        shapely.prepare(g)
    inside = shapely.contains(geometry, pts)
    decided = shapely.contains(inner, pts) | ~shapely.intersects(outer, pts)
    return inside, decided


@pytest.mark.slow
def test_camelyon16_recipe_finds_the_tumour_in_our_xml(ncrf_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationRepairWarning)
        annotations = read_annotations(
            ncrf_dir / "Tumor_064.json"
        )  # a real Camelyon16 slide: 11 lesions, 24 cut-outs
    region = tumour_geometry(annotations)
    path = write_annotations(tmp_path / "Tumor_064.xml", annotations)
    # a 25 x 25 grid over each annotation's box: every lesion and cut-out gets looked at
    points = np.unique(np.vstack([sample_points(a.geometry, n=25) for a in annotations]), axis=0)
    mask = annotation_to_mask(path.read_bytes(), points)
    inside, decided = expected_tumour(region, points)
    assert inside.sum() > 1000 and (~inside).sum() > 1000
    assert np.array_equal(mask[decided] == 1, inside[decided])
    assert set(np.unique(mask)) == {0, 1}


def test_holes_of_a_drawn_tumour_are_cut_out_by_the_recipe(tmp_path):
    donut = Polygon(
        [(100, 100), (900, 100), (900, 700), (100, 700)],
        [[(300, 300), (500, 300), (500, 500), (300, 500)]],
    )
    other = Polygon([(1000, 100), (1200, 100), (1200, 300)])
    ignored = Polygon([(700, 500), (850, 500), (850, 650), (700, 650)])  # QuPath's Ignore* class
    anns = [
        Annotation(donut, "Tumor", "lesion"),
        Annotation(other, "Stroma", "not tumour"),
        Annotation(ignored, "Ignore*", "artefact"),
    ]
    xml = to_asap_xml(anns)
    points = sample_points(shapely.union_all([donut, other]), step=5.0)
    mask = annotation_to_mask(xml, points)
    region = donut.difference(ignored)
    inside, decided = expected_tumour(region, points)
    assert np.array_equal(mask[decided] == 1, inside[decided])
    assert mask[(points[:, 0] == 400) & (points[:, 1] == 400)].tolist() == [0]  # the hole
    assert mask[(points[:, 0] == 775) & (points[:, 1] == 575)].tolist() == [0]  # Ignore*
    assert mask[(points[:, 0] == 200) & (points[:, 1] == 200)].tolist() == [1]


def test_the_old_tumor_group_gives_the_recipe_an_empty_mask():
    """Why tumour is written as _0: the recipe keeps only the groups it lists."""
    square = Polygon([(0, 0), (100, 0), (100, 100), (0, 100)])
    xml = to_asap_xml([Annotation(square, "Tumor")]).replace(b'"_0"', b'"Tumor"')
    assert annotation_to_mask(xml, [(50, 50)]).tolist() == [0]
    assert annotation_to_mask(to_asap_xml([Annotation(square, "Tumor")]), [(50, 50)]).tolist() == [
        1
    ]


@pytest.mark.parametrize("group", ["Tumor", "metastases", "_0", "_1"])
def test_older_and_other_tumour_group_names_still_read_as_tumour(tmp_path, group):
    square = Polygon([(0, 0), (100, 0), (100, 100), (0, 100)])
    xml = to_asap_xml([Annotation(square, "_0")]).replace(b'"_0"', f'"{group}"'.encode())
    path = tmp_path / "a.xml"
    path.write_bytes(xml)
    (back,) = read_annotations(path)
    assert back.is_tumour and back.classification == group
    assert tumour_geometry([back]).equals(square)


@pytest.mark.parametrize("name", ["Ignore*", "ignore*", "Region*", "_2", "Exclusion"])
def test_exclusion_classes_include_qupaths_ignored_classes(name):
    assert Annotation(Polygon([(0, 0), (1, 0), (0, 1)]), name).is_exclusion
    assert not Annotation(Polygon([(0, 0), (1, 0), (0, 1)]), "Ignore me").is_exclusion


def test_ignore_class_cuts_a_hole_in_tumour_from_geojson(tmp_path):
    tumour = Polygon([(0, 0), (100, 0), (100, 100), (0, 100)])
    ignored = Polygon([(10, 10), (20, 10), (20, 20), (10, 20)])
    path = write_annotations(
        tmp_path / "q.geojson", [Annotation(tumour, "Tumor"), Annotation(ignored, "Ignore*")]
    )
    region = tumour_geometry(read_annotations(path))
    assert region.area == pytest.approx(100 * 100 - 10 * 10)


@pytest.mark.conformance
def test_f3_a_tumour_island_in_another_regions_hole_survives_the_recipe(tmp_path):
    """F3: Camelyon16's recipe (ASAP's AnnotationToMask, label map {"_0": 1, "_1": 1, "_2": 0},
    order _0, _1, _2: ``asap_mask_recipe.py``, from ASAP 1.9's source) paints _2 last; a hole
    written whole wiped the island inside it. The recipe's mask must equal our own region."""
    donut = Polygon(
        [(100, 100), (900, 100), (900, 900), (100, 900)],
        [[(250.5, 250.5), (750.5, 250.5), (750.5, 750.5), (250.5, 750.5)]],
    )
    # an island in the hole, itself with a hole holding a smaller island (three levels deep)
    island = Polygon(
        [(350.3, 350.3), (650.3, 350.3), (650.3, 650.3), (350.3, 650.3)],
        [[(420.7, 420.7), (580.7, 420.7), (580.7, 580.7), (420.7, 580.7)]],
    )
    islet = Polygon([(470.2, 470.2), (530.2, 470.2), (530.2, 530.2), (470.2, 530.2)])
    annotations = [
        Annotation(donut, "Tumor", "outer"),
        Annotation(island, "Tumor", "island"),
        Annotation(islet, "Tumor", "islet"),
    ]
    region = tumour_geometry(annotations)
    path = write_annotations(tmp_path / "nested.xml", annotations)
    points = sample_points(donut, step=4.0)
    mask = annotation_to_mask(path.read_bytes(), points)
    inside, decided = expected_tumour(region, points)
    assert np.array_equal(mask[decided] == 1, inside[decided])
    at = {(x, y): m for (x, y), m in zip(points.tolist(), mask.tolist(), strict=True)}
    assert at[(500.0, 500.0)] == 1 and at[(400.0, 400.0)] == 1  # islet, island
    assert at[(300.0, 300.0)] == 0 and at[(440.0, 440.0)] == 0  # the two holes
    # and reading our file back gives the same region
    assert read_annotations(path) and tumour_geometry(read_annotations(path)).equals(region)
