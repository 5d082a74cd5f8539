"""Bad annotation files: one clear error naming the file and the feature, nothing half-read."""

from __future__ import annotations

import json

import pytest
from shapely.geometry import LineString, Polygon

from napari_metastasis.annotations import (
    Annotation,
    AnnotationRepairWarning,
    _files,
    read_annotations,
    write_annotations,
)
from napari_metastasis.errors import AnnotationError

SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]


def feature(geometry, name="lesion"):
    return {"type": "Feature", "geometry": geometry, "properties": {"name": name}}


def collection(*features):
    return {"type": "FeatureCollection", "features": list(features)}


def write_json(tmp_path, obj, name="bad.geojson"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


GOOD = feature({"type": "Polygon", "coordinates": [SQUARE]}, "fine")


@pytest.mark.parametrize(
    ("geometry", "message"),
    [
        (
            {"type": "Circle", "coordinates": [0, 0]},
            r"feature 2 \('lesion'\): unsupported geometry type 'Circle'",
        ),
        (
            {"type": "GeometryCollection", "geometries": []},
            "unsupported geometry type 'GeometryCollection'",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]},
            r"feature 2 \('lesion'\): polygon has 2 distinct point\(s\); a polygon needs at least 3",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 1], [0, 0]]]},
            "needs at least 3",
        ),
        (
            {"type": "Polygon", "coordinates": [SQUARE, [[1, 1], [2, 2]]]},
            r"\(hole 1\): polygon has 2 distinct",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [2, 0], [0, 0]]]},
            "polygon has no area",
        ),
        ({"type": "Polygon", "coordinates": []}, "polygon has no rings"),
        (
            {"type": "MultiPolygon", "coordinates": [[SQUARE], [[[0, 0], [1, 1]]]]},
            r"\(part 2\): polygon has 2",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], ["a", 0], [1, 1], [0, 0]]]},
            "coordinate 'a' is not a number",
        ),
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [True, 0], [1, 1], [0, 0]]]},
            "is not a number",
        ),
        ({"type": "Point", "coordinates": [1]}, r"a position must be \[x, y\]"),
        ({"type": "Point"}, "Point has no coordinates"),
        ({"type": "LineString", "coordinates": [[0, 0]]}, "a line needs at least 2 points"),
        ({"type": "MultiPoint", "coordinates": []}, "MultiPoint has no points"),
        ({"type": "Polygon", "coordinates": "0 0 1 1"}, "coordinates are not a list"),
        ("POLYGON((0 0, 1 0, 1 1))", "geometry is not an object"),
    ],
)
def test_bad_geometry(tmp_path, geometry, message):
    path = write_json(tmp_path, collection(GOOD, feature(geometry)))
    with pytest.raises(AnnotationError, match=rf"^bad\.geojson: .*{message}"):
        read_annotations(path)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_coordinates(tmp_path, literal):
    text = json.dumps(collection(GOOD, feature({"type": "Point", "coordinates": [1, 2]})))
    path = write_json(tmp_path, text.replace("[1, 2]", f"[1, {literal}]"))
    with pytest.raises(
        AnnotationError, match=r"feature 2 \('lesion'\): coordinate is .*NaN or infinite"
    ):
        read_annotations(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"type": "FeatureCollection", "features": [', "not valid JSON"),
        ("", "the file is empty"),
        ('{"type": "Topology"}', "not GeoJSON"),
        ('"just a string"', "not GeoJSON"),
        ('{"type": "FeatureCollection"}', "without a 'features' list"),
        ('[{"type": "Feature", "geometry": null}, 3]', "feature 2: not a GeoJSON Feature"),
        (
            '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": 5}',
            "'properties' is not an object",
        ),
        (
            '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {"classification": 5}}',
            "'classification' is neither",
        ),
        (
            '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {"color": "red"}}',
            "colour 'red' is not",
        ),
    ],
)
def test_bad_geojson_files(tmp_path, content, message):
    path = write_json(tmp_path, content)
    with pytest.raises(AnnotationError, match=f"^bad.geojson: .*{message}"):
        read_annotations(path)


def test_json_that_is_neither_format(tmp_path):
    path = write_json(tmp_path, '{"slide": "x.svs"}', "other.json")
    with pytest.raises(AnnotationError, match=r"other\.json: neither GeoJSON nor NCRF"):
        read_annotations(path)


def test_json_not_utf8(tmp_path):
    path = tmp_path / "latin.geojson"
    path.write_bytes('{"name": "Läsion"}'.encode("latin-1"))
    with pytest.raises(AnnotationError, match=r"latin\.geojson: not UTF-8"):
        read_annotations(path)


def test_json_nested_absurdly_deep(tmp_path):
    path = write_json(tmp_path, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(AnnotationError, match="nested too deeply"):
        read_annotations(path)


def test_file_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(_files, "MAX_FILE_BYTES", 100)
    path = write_json(tmp_path, collection(GOOD, GOOD))
    with pytest.raises(AnnotationError, match="larger than the 0 MB limit"):
        read_annotations(path)


def test_missing_file(tmp_path):
    with pytest.raises(AnnotationError, match="annotation file not found"):
        read_annotations(tmp_path / "nope.xml")


def test_csv_cannot_be_read(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("id\n1\n")
    with pytest.raises(AnnotationError, match=r"s\.csv: a CSV summary holds no geometry"):
        read_annotations(path)


def test_feature_without_geometry_is_skipped_with_a_warning(tmp_path):
    path = write_json(
        tmp_path, collection(GOOD, {"type": "Feature", "geometry": None, "properties": {}})
    )
    with pytest.warns(AnnotationRepairWarning, match="feature 2: has no geometry; skipped"):
        anns = read_annotations(path)
    assert len(anns) == 1


def test_self_intersecting_polygon_is_repaired(tmp_path):
    bowtie = [[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]
    path = write_json(
        tmp_path, collection(feature({"type": "Polygon", "coordinates": [bowtie]}, "bow"))
    )
    with pytest.warns(
        AnnotationRepairWarning, match=r"feature 1 \('bow'\): invalid polygon \(Self-intersection"
    ):
        (ann,) = read_annotations(path)
    assert ann.geometry.is_valid and ann.geometry.geom_type == "MultiPolygon"
    assert ann.geometry.area == pytest.approx(50.0)  # both triangles, not the shoelace's 0


# --- NCRF ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"positive": [{"name": "_0", "vertices": [[0, 0], [1, 1]]}]},
            r"positive polygon 1 \('_0'\): polygon has 2 distinct",
        ),
        ({"positive": [], "negative": [{"name": "_5"}]}, r"negative polygon 1: needs 'vertices'"),
        (
            {"positive": [{"name": "_0", "vertices": [[0, 0], [1, "x"], [2, 2]]}]},
            "coordinate 'x' is not a number",
        ),
    ],
)
def test_bad_ncrf(tmp_path, content, message):
    path = write_json(tmp_path, content, "Tumor_999.json")
    with pytest.raises(AnnotationError, match=f"^Tumor_999.json: .*{message}"):
        read_annotations(path)


def test_ncrf_nan_vertex(tmp_path):
    path = write_json(
        tmp_path, '{"positive": [{"name": "_0", "vertices": [[0, 0], [5, NaN], [2, 2]]}]}', "t.json"
    )
    with pytest.raises(
        AnnotationError, match=r"t.json: positive polygon 1 \('_0'\): coordinate is nan"
    ):
        read_annotations(path)


# --- ASAP XML -------------------------------------------------------------------------------------
def asap(body: str, groups: str = "") -> str:
    return (
        f"<?xml version='1.0'?><ASAP_Annotations><Annotations>{body}</Annotations>"
        f"<AnnotationGroups>{groups}</AnnotationGroups></ASAP_Annotations>"
    )


def asap_annotation(kind="Polygon", coords=((0, 0), (10, 0), (10, 10)), name="A1", orders=None):
    orders = orders or range(len(coords))
    items = "".join(
        f'<Coordinate Order="{o}" X="{x}" Y="{y}"/>'
        for o, (x, y) in zip(orders, coords, strict=True)
    )
    return f'<Annotation Name="{name}" Type="{kind}" PartOfGroup="None"><Coordinates>{items}</Coordinates></Annotation>'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            asap_annotation(kind="Ellipse"),
            "unsupported annotation type 'Ellipse'",
        ),
        (
            asap_annotation(coords=((0, 0), (1, 1))),
            "polygon has 2 distinct",
        ),
        (asap_annotation(coords=((0, 0), ("nan", 1), (2, 3))), "coordinate is nan"),
        (asap_annotation(coords=((0, 0), ("1e999", 1), (2, 3))), "NaN or infinite"),
        (asap_annotation(coords=((0, 0), ("abc", 1), (2, 3))), "coordinate 'abc' is not a number"),
        (asap_annotation(orders=(0, 1, 1)), "two coordinates share the same Order"),
        (asap_annotation(orders=(0, 1, "x")), "Order 'x' is not an integer"),
        (asap_annotation(kind="Dot", coords=((0, 0), (1, 1))), "a Dot needs exactly 1 coordinate"),
        (asap_annotation(kind="PointSet", coords=()), "PointSet has no coordinates"),
        (
            '<Annotation Name="A1" Type="Dot"><Coordinates><Coordinate Order="0" X="1"/></Coordinates></Annotation>',
            "lacks its X or Y",
        ),
    ],
)
def test_bad_asap(tmp_path, body, message):
    path = tmp_path / "slide.xml"
    path.write_text(asap(asap_annotation(name="ok") + body))
    with pytest.raises(AnnotationError, match=rf"^slide.xml: annotation 2 \('A1'\): .*{message}"):
        read_annotations(path)


def test_asap_comma_decimals(tmp_path):
    path = tmp_path / "comma.xml"
    path.write_text(asap(asap_annotation(kind="Dot", coords=(("12,5", "7,25"),))))
    (ann,) = read_annotations(path)
    assert ann.geometry.coords[0] == (12.5, 7.25)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("<ASAP_Annotations><Annotations>", "not valid XML"),
        ("<Annotations/>", r"not an ASAP annotation file \(root is <Annotations>\)"),
        (
            '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            "<ASAP_Annotations><Annotations>&b;</Annotations></ASAP_Annotations>",
            "XML uses entities or DTDs",
        ),
        (
            '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            "<ASAP_Annotations>&x;</ASAP_Annotations>",
            "XML uses entities or DTDs",
        ),
    ],
)
def test_bad_xml(tmp_path, content, message):
    path = tmp_path / "evil.xml"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=f"^evil.xml: {message}"):
        read_annotations(path)


# --- writing: atomic, and refusals --------------------------------------------------------------
def test_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "regions.xml"
    target.write_text("previous export")
    polyline = Annotation(LineString([(0, 0), (1, 1), (2, 0)]), name="path")
    with pytest.raises(
        AnnotationError, match=r"regions.xml: annotation 1 \('path'\): ASAP XML cannot hold a line"
    ):
        write_annotations(target, [polyline])
    assert target.read_text() == "previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["regions.xml"]  # no temporary file left


def test_holes_in_non_tumour_regions_are_refused_by_asap(tmp_path):
    donut = Polygon(SQUARE, [[(2, 2), (4, 2), (4, 4)]])
    with pytest.raises(AnnotationError, match="only hold holes in tumour regions"):
        write_annotations(tmp_path / "x.xml", [Annotation(donut, "Stroma")])
    write_annotations(tmp_path / "x.xml", [Annotation(donut, "Tumor")])


def test_ncrf_refuses_what_it_cannot_hold(tmp_path):
    with pytest.raises(AnnotationError, match="NCRF JSON holds only tumour and exclusion"):
        write_annotations(tmp_path / "n.json", [Annotation(Polygon(SQUARE), "Stroma")], "ncrf")
    with pytest.raises(AnnotationError, match="holds only polygons"):
        write_annotations(tmp_path / "n.json", [Annotation(LineString(SQUARE), "Tumor")], "ncrf")


def test_unknown_output_format(tmp_path):
    with pytest.raises(AnnotationError, match=r"cannot tell the format from '.txt'"):
        write_annotations(tmp_path / "a.txt", [])
    with pytest.raises(AnnotationError, match="unknown annotation format 'shp'"):
        write_annotations(tmp_path / "a.json", [], "shp")


def test_empty_or_unsupported_geometry_is_refused(tmp_path):
    from shapely.geometry import GeometryCollection, Point

    with pytest.raises(AnnotationError, match=r"e\.geojson: annotation 2 has no geometry"):
        write_annotations(tmp_path / "e.geojson", [Annotation(Point(1, 2)), Annotation(Polygon())])
    odd = GeometryCollection([Point(1, 2)])
    with pytest.raises(
        AnnotationError,
        match=r"e\.geojson: annotation 1: unsupported geometry type GeometryCollection",
    ):
        write_annotations(tmp_path / "e.geojson", [Annotation(odd)])
    assert not (tmp_path / "e.geojson").exists()
