"""Reading, writing and round-tripping every annotation file in ../shared/data/annotations."""

from __future__ import annotations

import csv
import math
import warnings

import defusedxml.ElementTree as SafeET
import pytest
import shapely
from _annotation_checks import check_asap_xml, check_geojson, load_strict_json
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shared_data import ANNOTATIONS

from napari_metastasis.annotations import (
    Annotation,
    AnnotationRepairWarning,
    read_annotations,
    summarize,
    tumour_geometry,
    write_annotations,
)
from napari_metastasis.errors import AnnotationError

ALL_FILES = sorted(p for p in ANNOTATIONS.rglob("*") if p.is_file())
TOL = 1e-6


def read_quiet(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationRepairWarning)
        return read_annotations(path)


def same_region(a, b) -> bool:
    """Equal as point sets to within 1e-6 px (symmetric difference of no measurable area)."""
    if a.is_empty or b.is_empty:
        return a.is_empty and b.is_empty
    return a.symmetric_difference(b).area <= TOL and abs(a.length - b.length) <= 1e-3


def test_the_shared_data_is_all_here():
    assert len(ALL_FILES) == 14


# --- what the readers find --------------------------------------------------------------------
def test_qupath_polygon_properties(annotations_dir):
    (ann,) = read_annotations(annotations_dir / "qupath_geojson" / "qupath-polygon.json")
    assert isinstance(ann.geometry, Polygon)
    assert ann.name == "polygon"
    assert ann.object_type == "annotation"  # from the v0.2 id "PathAnnotationObject"
    assert ann.id is None
    assert ann.geometry.exterior.coords[0] == (26353.0, 15345.0)
    assert len(ann.geometry.exterior.coords) == 47


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("qupath-rectangle.json", "Polygon"),
        ("qupath-ellipse.json", "Polygon"),
        ("qupath-brush.json", "Polygon"),
        ("qupath-line.json", "LineString"),
        ("qupath-polyline.json", "LineString"),
        ("qupath-point.json", "Point"),
    ],
)
def test_qupath_geometry_types(annotations_dir, name, kind):
    (ann,) = read_annotations(annotations_dir / "qupath_geojson" / name)
    assert ann.geometry.geom_type == kind
    assert ann.name == name[len("qupath-") : -len(".json")]


def test_qupath_rectangle_area(annotations_dir):
    (ann,) = read_annotations(annotations_dir / "qupath_geojson" / "qupath-rectangle.json")
    assert ann.geometry.area == (26478 - 26268) * (15474 - 15298)


def test_plain_geojson_feature_collection(annotations_dir):
    anns = read_annotations(annotations_dir / "geojson_misc" / "napari-wsi_annotations.json")
    assert [a.geometry.geom_type for a in anns] == ["Point", "LineString", "Polygon"]
    assert anns[0].geometry.equals(Point(0, 1))
    assert anns[2].geometry.area == 1.0
    assert all(a.classification is None for a in anns)


def test_asap_files(annotations_dir):
    (dot,) = read_annotations(annotations_dir / "asap_xml" / "asap-dot.xml")
    assert dot.geometry.equals(Point(23071.5605, 16831.0098))
    assert dot.name == "Annotation 0" and dot.classification is None  # PartOfGroup="None"
    assert dot.color == (0xF4, 0xFA, 0x58)
    (pointset,) = read_annotations(annotations_dir / "asap_xml" / "asap-pointset.xml")
    assert pointset.geometry.geom_type == "MultiPoint"
    assert [p.coords[0] for p in pointset.geometry.geoms][1] == (22746.7793, 16708.4414)
    (polygon,) = read_annotations(annotations_dir / "asap_xml" / "asap-polygon.xml")
    assert polygon.geometry.exterior.coords[:-1][5] == (22954.1191, 16565.2363)


def test_asap_coordinates_follow_order_attribute(tmp_path):
    path = tmp_path / "shuffled.xml"
    path.write_text(
        '<ASAP_Annotations><Annotations><Annotation Name="a" Type="Polygon" PartOfGroup="_1">'
        '<Coordinates><Coordinate Order="2" X="10" Y="10"/><Coordinate Order="0" X="0" Y="0"/>'
        '<Coordinate Order="3" X="0" Y="10"/><Coordinate Order="1" X="10" Y="0"/></Coordinates>'
        '</Annotation></Annotations><AnnotationGroups><Group Name="_1" PartOfGroup="None" '
        'Color="#00ff00"/></AnnotationGroups></ASAP_Annotations>'
    )
    (ann,) = read_annotations(path)
    assert list(ann.geometry.exterior.coords) == [(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)]
    assert ann.classification == "_1" and ann.is_tumour
    assert ann.color == (0, 255, 0)  # no Color on the annotation: its group's


def test_asap_types_rectangle_spline_measurement(tmp_path):
    path = tmp_path / "types.xml"
    coords = '<Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="4" Y="0"/>'
    square = coords + '<Coordinate Order="2" X="4" Y="4"/><Coordinate Order="3" X="0" Y="4"/>'
    body = "".join(
        f'<Annotation Name="{t}" Type="{t}" PartOfGroup="None"><Coordinates>{c}</Coordinates>'
        "</Annotation>"
        for t, c in (("Rectangle", square), ("Spline", square), ("Measurement", coords))
    )
    path.write_text(f"<ASAP_Annotations><Annotations>{body}</Annotations></ASAP_Annotations>")
    rect, spline, line = read_annotations(path)
    assert rect.geometry.area == 16 and spline.geometry.area == 16
    assert line.geometry.equals(LineString([(0, 0), (4, 0)]))


def test_ncrf_classes_come_from_the_list_not_the_name(ncrf_dir):
    anns = read_quiet(ncrf_dir / "Tumor_004.json")
    assert len(anns) == 7
    assert all(a.classification == "Tumor" and a.is_tumour for a in anns)
    # the names are ASAP annotation names, one of which is "_2"; still tumour
    assert [a.name for a in anns][:3] == ["_0", "_1", "_2"]


def test_tumor_064_exclusions_are_holes_in_the_tumour_geometry(ncrf_dir):
    anns = read_quiet(ncrf_dir / "Tumor_064.json")
    positive = [a for a in anns if a.is_tumour]
    negative = [a for a in anns if a.is_exclusion]
    assert (len(positive), len(negative)) == (11, 24)
    region = tumour_geometry(anns)
    assert isinstance(region, MultiPolygon) and region.is_valid
    union = shapely.union_all([a.geometry for a in positive])
    excluded = shapely.union_all([a.geometry for a in negative])
    assert all(union.contains(a.geometry) for a in negative)  # every exclusion cuts a hole
    # exclusions _11 and _12 overlap, so the 24 polygons make 23 holes
    assert len(excluded.geoms) == 23
    assert sum(len(p.interiors) for p in region.geoms) == 23
    assert region.area == pytest.approx(union.area - excluded.area, rel=1e-9)
    for a in negative:  # no point of an exclusion is tumour
        assert not region.contains(a.geometry.representative_point())


def test_tumour_geometry_matches_the_patch_labels(ncrf_dir, annotations_dir):
    """The labels of the shared Camelyon16 patches agree with tumour_geometry (centre pixel)."""
    labels = annotations_dir.parent / "patches" / "camelyon16_256" / "labels.csv"
    regions = {}
    agree = total = 0
    for row in csv.DictReader(labels.open()):
        slide = row["camelyon16_slide"].lower().replace("tumor_", "Tumor_")
        if slide not in regions:
            regions[slide] = tumour_geometry(read_quiet(ncrf_dir / f"{slide}.json"))
        size = float(row["size_px_level0"])
        centre = Point(float(row["x_level0"]) + size / 2, float(row["y_level0"]) + size / 2)
        fraction = float(row["tumor_area_fraction_from_ncrf_json"])
        if fraction in (0.0, 1.0):
            total += 1
            agree += regions[slide].contains(centre) == (fraction == 1.0)
    assert total > 20 and agree == total


def test_self_intersecting_camelyon_polygons_are_repaired_and_reported(ncrf_dir):
    with pytest.warns(AnnotationRepairWarning, match=r"Tumor_004.json: positive polygon 1"):
        anns = read_annotations(ncrf_dir / "Tumor_004.json")
    assert all(a.geometry.is_valid for a in anns)


# --- round trips ------------------------------------------------------------------------------
def _can_hold(annotations, fmt) -> bool:
    for a in annotations:
        geom = a.geometry
        if fmt == "ncrf" and (a.kind != "polygon" or not (a.is_tumour or a.is_exclusion)):
            return False
        if fmt == "asap":
            lines = [geom] if isinstance(geom, LineString) else getattr(geom, "geoms", [])
            if a.kind == "line" and any(len(x.coords) != 2 for x in lines):
                return False
            polys = [geom] if isinstance(geom, Polygon) else getattr(geom, "geoms", [])
            if a.kind == "polygon" and not a.is_tumour and any(p.interiors for p in polys):
                return False
    return True


def _assert_same(before, after, fmt):
    if fmt == "geojson":  # one feature per annotation, everything kept
        assert len(after) == len(before)
        for a, b in zip(before, after, strict=True):
            assert shapely.equals_exact(a.geometry, b.geometry, tolerance=TOL)
            assert (a.classification, a.name, a.object_type) == (
                b.classification,
                b.name,
                b.object_type,
            )
            assert b.color == (a.color if a.color or not a.classification else b.color)
        return
    # ASAP and NCRF split multipolygons and turn holes into exclusion polygons: same regions.
    assert same_region(tumour_geometry(before), tumour_geometry(after))
    for kind in ("point", "line"):
        ours = [a.geometry for a in before if a.kind == kind]
        theirs = [a.geometry for a in after if a.kind == kind]
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert shapely.equals_exact(a, b, tolerance=TOL)
    for cls in {a.classification for a in before if not (a.is_tumour or a.is_exclusion)}:
        ours = shapely.union_all([a.geometry for a in before if a.classification == cls])
        theirs = shapely.union_all([a.geometry for a in after if a.classification == cls])
        if not ours.is_empty and ours.geom_type in ("Polygon", "MultiPolygon"):
            assert same_region(ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["geojson", "asap", "ncrf"])
@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_round_trip(path, fmt, tmp_path):
    before = read_quiet(path)
    out = tmp_path / f"out.{ {'geojson': 'geojson', 'asap': 'xml', 'ncrf': 'json'}[fmt] }"
    if not _can_hold(before, fmt):
        with pytest.raises(AnnotationError, match=r"out\.\w+: annotation \d+"):
            write_annotations(out, before, fmt)
        assert not out.exists()
        return
    write_annotations(out, before, fmt, mpp=0.25)
    if fmt == "asap":
        check_asap_xml(out)
    if fmt == "geojson":
        check_geojson(load_strict_json(out))
    after = read_annotations(out)  # no repairs needed a second time
    _assert_same(before, after, fmt)
    # and a second trip through the same format changes nothing at all
    again = tmp_path / f"again{out.suffix}"
    write_annotations(again, after, fmt)
    assert read_annotations(again) == after


@pytest.mark.slow
def test_cross_format_chain_keeps_tumour_064(ncrf_dir, tmp_path):
    """ncrf_dir -> GeoJSON -> ASAP XML -> ncrf_dir -> GeoJSON: the same tumour region at every step."""
    start = read_quiet(ncrf_dir / "Tumor_064.json")
    region = tumour_geometry(start)
    current = start
    for step, fmt in enumerate(["geojson", "asap", "ncrf", "geojson"]):
        path = tmp_path / f"step{step}.{'xml' if fmt == 'asap' else 'json'}"
        write_annotations(path, current, fmt)
        current = read_annotations(path)
        assert same_region(region, tumour_geometry(current)), fmt
    assert sum(a.is_exclusion for a in current) >= 24


def test_polygon_with_holes_and_multipolygon_round_trip(tmp_path):
    shell = [(0, 0), (100, 0), (100, 100), (0, 100)]
    hole = [(20.5, 20.25), (40, 20), (40, 40), (20, 40)]
    donut = Polygon(shell, [hole])
    parts = MultiPolygon([donut, Polygon([(200, 0), (300, 0), (250, 80.125)])])
    anns = [
        Annotation(parts, "Tumor", "lesion 1", measurements={"max_prob": 0.97}, id="1"),
        Annotation(Point(5.5, 6.25), "Other", id="2"),
    ]
    for fmt, suffix in (("geojson", ".geojson"), ("asap", ".xml")):
        path = tmp_path / f"a{suffix}"
        write_annotations(path, anns, fmt)
        back = read_annotations(path)
        assert same_region(tumour_geometry(back), parts)
    back = read_annotations(tmp_path / "a.geojson")
    assert shapely.equals_exact(back[0].geometry, parts, 0)
    assert back[0].measurements == {"max_prob": 0.97} and back[0].id == "1"
    xml = SafeET.parse(tmp_path / "a.xml").getroot()
    groups = [n.get("PartOfGroup") for n in xml.iterfind("Annotations/Annotation")]
    assert groups == ["_0", "_2", "_0", "Other"]  # tumour is _0, the hole Camelyon16's exclusion
    declared = {g.get("Name") for g in xml.iterfind("AnnotationGroups/Group")}
    assert declared == {"_0", "_2", "Other"}


def test_geojson_export_is_what_qupath_needs(tmp_path):
    anns = [
        Annotation(Polygon([(0, 0), (10, 0), (10, 20)]), "Tumor", measurements={"max_prob": 0.8}),
        Annotation(Polygon([(0, 0), (5, 0), (5, 5)]), "My class"),  # unknown class: still a colour
        Annotation(LineString([(0, 0), (3, 4)]), None, "ruler", color=(1, 2, 3)),
    ]
    path = write_annotations(tmp_path / "qupath.geojson", anns, mpp=(0.5, 0.25))
    obj = load_strict_json(path)
    check_geojson(obj)
    first, second, third = (f["properties"] for f in obj["features"])
    assert first["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    assert first["objectType"] == "annotation"
    assert first["measurements"]["max_prob"] == 0.8
    assert first["measurements"]["area_um2"] == pytest.approx(100 * 0.5 * 0.25)
    assert len(second["classification"]["color"]) == 3
    assert "classification" not in third and third["color"] == [1, 2, 3]
    assert third["measurements"]["length_um"] == pytest.approx(math.hypot(3 * 0.25, 4 * 0.5))


def test_qupath_v04_features_and_measurement_lists(tmp_path):
    path = tmp_path / "v04.geojson"
    path.write_text(
        '[{"type": "Feature", "id": "6c5a3f4e-0000-4000-8000-000000000001", "geometry": '
        '{"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]], [[2, 2], [3, 3], [4, 2]]]},'
        ' "properties": {"objectType": "detection", "classification": {"name": "Tumor", '
        '"colorRGB": -3670016}, "measurements": [{"name": "Area", "value": 2.5}]}},'
        ' {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},'
        ' "properties": {"classification": "Immune cells", "color": [10, 20, 30],'
        ' "measurements": {"count": 2, "bad": null}}}]'
    )
    lines, points = read_annotations(path)
    assert lines.object_type == "detection" and lines.classification == "Tumor"
    assert lines.color == (200, 0, 0) and lines.measurements == {"Area": 2.5}
    assert lines.id == "6c5a3f4e-0000-4000-8000-000000000001"
    assert lines.geometry.geom_type == "MultiLineString"
    assert points.classification == "Immune cells" and points.color == (10, 20, 30)
    assert points.measurements == {"count": 2.0}
    assert points.geometry.geom_type == "MultiPoint"


def test_csv_summary(tmp_path):
    square = Polygon(
        [(100, 200), (300, 200), (300, 400), (100, 400)], [[(150, 250), (160, 250), (160, 260)]]
    )
    anns = [
        Annotation(square, "Tumor", "a", measurements={"max_prob": 0.9, "mean_prob": 0.7}, id="7"),
        Annotation(Point(1, 2), None),
    ]
    path = write_annotations(tmp_path / "summary.csv", anns, mpp=0.5)
    rows = list(csv.DictReader(path.open()))
    assert rows[0]["id"] == "7" and rows[1]["id"] == "2"
    assert rows[0]["class"] == "Tumor" and rows[0]["type"] == "Polygon"
    assert float(rows[0]["area_um2"]) == pytest.approx((200 * 200 - 50) * 0.25)
    assert float(rows[0]["perimeter_um"]) == pytest.approx((800 + 20 + math.hypot(10, 10)) * 0.5)
    assert float(rows[0]["bbox_x_min_px"]) == 100 and float(rows[0]["bbox_y_max_px"]) == 400
    assert float(rows[0]["centroid_x_px"]) == pytest.approx(square.centroid.x)
    assert (rows[0]["max_prob"], rows[0]["mean_prob"]) == ("0.9", "0.7")
    assert rows[1]["area_um2"] == "0.0" and rows[1]["max_prob"] == ""
    with pytest.raises(AnnotationError, match="µm per pixel"):
        write_annotations(tmp_path / "no-mpp.csv", anns)


def test_summary_line(ncrf_dir):
    anns = read_quiet(ncrf_dir / "Tumor_004.json")
    assert summarize(anns) == "7 features (4 Polygon, 3 MultiPolygon)"
    assert summarize([]) == "0 features"
