"""Structural checks of written annotation files, shared by the annotation tests.

GeoJSON is checked against RFC 7946's structure (and QuPath's extra requirements) by hand, since no
schema can be fetched here; ASAP XML against what ASAP's own loader needs.
"""

from __future__ import annotations

import json
import math
from numbers import Real
from pathlib import Path

import defusedxml.ElementTree as SafeET
import shapely

DEPTH = {
    "Point": 0,
    "MultiPoint": 1,
    "LineString": 1,
    "MultiLineString": 2,
    "Polygon": 2,
    "MultiPolygon": 3,
}


def load_strict_json(path: Path):
    """JSON as the spec defines it: NaN/Infinity literals are not JSON."""

    def refuse(name):
        raise AssertionError(f"{path.name}: non-standard JSON constant {name}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def check_geojson(obj: dict, *, qupath: bool = True) -> None:
    assert obj["type"] == "FeatureCollection"
    assert isinstance(obj["features"], list)
    for feature in obj["features"]:
        assert feature["type"] == "Feature"
        assert set(feature) <= {"type", "id", "geometry", "properties"}
        if "id" in feature:
            assert isinstance(feature["id"], (str, int))
        _check_geometry(feature["geometry"])
        props = feature["properties"]
        assert props is None or isinstance(props, dict)
        if qupath:
            assert isinstance(props["objectType"], str)
            if "classification" in props:
                cls = props["classification"]
                assert isinstance(cls["name"], str) and cls["name"]
                assert _is_rgb(cls["color"]), cls
            if "color" in props:
                assert _is_rgb(props["color"])
            for key, value in props.get("measurements", {}).items():
                assert isinstance(key, str) and isinstance(value, float) and math.isfinite(value)


def _check_geometry(geometry: dict) -> None:
    kind = geometry["type"]
    assert kind in DEPTH, kind
    coords = geometry["coordinates"]
    _check_nesting(coords, DEPTH[kind])
    if kind in ("Polygon", "MultiPolygon"):
        polygons = [coords] if kind == "Polygon" else coords
        for rings in polygons:
            assert rings, "a polygon needs an exterior ring"
            for ring in rings:
                assert len(ring) >= 4 and ring[0] == ring[-1], "linear rings are closed, >= 4"
    if kind in ("LineString", "MultiLineString"):
        for line in [coords] if kind == "LineString" else coords:
            assert len(line) >= 2
    assert shapely.geometry.shape(geometry).is_valid or kind not in ("Polygon", "MultiPolygon")


def _check_nesting(value, depth: int) -> None:
    if depth == 0:
        assert isinstance(value, list) and len(value) in (2, 3), value
        assert all(isinstance(c, Real) and math.isfinite(c) for c in value)
        return
    assert isinstance(value, list)
    for item in value:
        _check_nesting(item, depth - 1)


def _is_rgb(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(c, int) and 0 <= c <= 255 for c in value)
    )


def check_asap_xml(path: Path) -> None:
    """What ASAP's XmlRepository needs: declared groups, Orders 0..n-1, known types."""
    root = SafeET.parse(path).getroot()
    assert root.tag == "ASAP_Annotations"
    groups = {g.get("Name") for g in root.iterfind("AnnotationGroups/Group")}
    for group in root.iterfind("AnnotationGroups/Group"):
        assert group.get("PartOfGroup") in groups | {"None"}
        assert group.get("Color", "").startswith("#")
    annotations = root.findall("Annotations/Annotation")
    for node in annotations:
        assert node.get("Type") in {
            "Dot",
            "Polygon",
            "Spline",
            "PointSet",
            "Measurement",
            "Rectangle",
        }
        assert node.get("PartOfGroup") in groups | {"None"}, node.get("PartOfGroup")
        orders = [int(c.get("Order")) for c in node.iterfind("Coordinates/Coordinate")]
        assert sorted(orders) == list(range(len(orders)))
        for coord in node.iterfind("Coordinates/Coordinate"):
            assert math.isfinite(float(coord.get("X"))) and math.isfinite(float(coord.get("Y")))
