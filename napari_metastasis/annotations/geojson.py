"""QuPath GeoJSON (and plain GeoJSON) in and out.

Reads what QuPath exports (a FeatureCollection, a single Feature, or a bare JSON array of Features;
v0.2 files with ``"id": "PathAnnotationObject"`` and v0.4+ files with ``properties.objectType``) and
GeoJSON from other tools (bare geometries, features without properties). Writes a FeatureCollection
that QuPath opens: ``objectType`` on every feature, and ``classification`` always with both ``name``
and ``color`` (QuPath rejects a classification without a colour). Coordinates are level-0 pixels,
written with Python's shortest exact float repr, so a read-write-read round trip is lossless.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

from shapely.geometry import MultiLineString, MultiPoint, mapping
from shapely.geometry.base import BaseGeometry

from napari_metastasis.annotations import _validate as v
from napari_metastasis.annotations.model import Annotation, class_color, new_id
from napari_metastasis.annotations.sizes import Mpp, measure
from napari_metastasis.errors import AnnotationError
from napari_metastasis.errors.policy import quoted
from napari_metastasis.outputs.atomic import write_text_atomic

#: QuPath v0.2 stored the object type in the feature id.
LEGACY_TYPE_IDS = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathTileObject": "tile",
    "PathCellObject": "cell",
    "TMACoreObject": "tmaCore",
    "PathRootObject": "root",
}
#: Measurement names that version 0.1.0's ``predict`` wrote, read under today's names (the names
#: :data:`napari_metastasis.maps.contours.REGION_MEASUREMENTS` lists, shared by every writer).
LEGACY_MEASUREMENTS = {"max_probability": "max_prob", "mean_probability": "mean_prob"}
GEOMETRY_TYPES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
)


# --- reading ----------------------------------------------------------------------------------
def parse_geojson(data: Any, source: str) -> list[Annotation]:
    """Annotations from parsed GeoJSON ``data``; ``source`` names the file in error messages."""
    features = _features(data, source)
    v.check_feature_count(len(features), source)
    annotations = []
    for index, feature in enumerate(features):
        annotation = _feature(feature, f"{source}: feature {index + 1}")
        if annotation is not None:
            annotations.append(annotation)
    return annotations


def looks_like_geojson(data: Any) -> bool:
    if isinstance(data, list):
        return all(isinstance(f, dict) and f.get("type") == "Feature" for f in data)
    return isinstance(data, dict) and data.get("type") in (
        "FeatureCollection",
        "Feature",
        *GEOMETRY_TYPES,
    )


def _features(data: Any, source: str) -> list:
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise AnnotationError(f"{source}: not GeoJSON (top level is a {type(data).__name__})")
    kind = data.get("type")
    if kind == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise AnnotationError(f"{source}: FeatureCollection without a 'features' list")
        return features
    if kind == "Feature":
        return [data]
    if kind in GEOMETRY_TYPES or kind == "GeometryCollection":
        return [{"type": "Feature", "geometry": data, "properties": {}}]
    raise AnnotationError(f"{source}: not GeoJSON (no FeatureCollection, Feature or geometry)")


def _feature(feature: Any, where: str) -> Annotation | None:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise AnnotationError(f"{where}: not a GeoJSON Feature")
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise AnnotationError(f"{where}: 'properties' is not an object")
    name = props.get("name")
    name = str(name) if name is not None else None
    if name:
        where = f"{where} ({quoted(name)})"
    geometry = feature.get("geometry")
    if geometry is None:
        warnings.warn(f"{where}: has no geometry; skipped", v.AnnotationRepairWarning, stacklevel=3)
        return None
    raw_id = feature.get("id")
    object_type = None
    ident = None
    if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool):
        if str(raw_id) in LEGACY_TYPE_IDS:
            object_type = LEGACY_TYPE_IDS[str(raw_id)]
        else:
            ident = str(raw_id)
    for key in ("objectType", "object_type"):
        if isinstance(props.get(key), str):
            object_type = props[key]
            break
    classification, class_rgb = _classification(props.get("classification"), where)
    color = _color(props.get("color"), where) or class_rgb
    return Annotation(
        geometry=parse_geometry(geometry, where),
        classification=classification,
        name=name,
        color=color,
        object_type=object_type or "annotation",
        measurements=_measurements(props.get("measurements")),
        id=ident,
    )


def parse_geometry(geometry: Any, where: str) -> BaseGeometry:
    """A GeoJSON geometry object -> checked shapely geometry (level-0 px)."""
    if not isinstance(geometry, dict):
        raise AnnotationError(f"{where}: geometry is not an object")
    kind = geometry.get("type")
    if kind not in GEOMETRY_TYPES:
        raise AnnotationError(f"{where}: unsupported geometry type {quoted(kind)}")
    coords = geometry.get("coordinates")
    if coords is None:
        raise AnnotationError(f"{where}: {kind} has no coordinates")
    if kind == "Point":
        return v.point(v.positions([coords], where)[0], where)
    if kind == "MultiPoint":
        points = v.positions(coords, where)
        if not len(points):
            raise AnnotationError(f"{where}: MultiPoint has no points")
        return MultiPoint(points)
    if kind == "LineString":
        return v.line(v.positions(coords, where), where)
    if kind == "MultiLineString":
        parts = [v.line(v.positions(c, where), where) for c in _list(coords, where)]
        if not parts:
            raise AnnotationError(f"{where}: MultiLineString has no lines")
        return MultiLineString(parts)
    if kind == "Polygon":
        return _polygon(coords, where)
    parts = [_polygon(c, f"{where} (part {k + 1})") for k, c in enumerate(_list(coords, where))]
    if not parts:
        raise AnnotationError(f"{where}: MultiPolygon has no polygons")
    return v.multipolygon(parts, where)


def _polygon(rings: Any, where: str) -> BaseGeometry:
    rings = _list(rings, where)
    if not rings:
        raise AnnotationError(f"{where}: polygon has no rings")
    arrays = [v.positions(r, where) for r in rings]
    return v.polygon(arrays[0], arrays[1:], where)


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise AnnotationError(f"{where}: coordinates are not a list")
    return value


def _classification(value: Any, where: str) -> tuple[str | None, tuple[int, int, int] | None]:
    if value is None:
        return None, None
    if isinstance(value, str):
        return value or None, None
    if not isinstance(value, dict):
        raise AnnotationError(f"{where}: 'classification' is neither an object nor a name")
    name = value.get("name")
    # QuPath >= 0.4 writes "color": [r, g, b]; v0.2 wrote "colorRGB" as a packed int.
    color = _color(value.get("color", value.get("colorRGB")), where)
    if isinstance(value.get("names"), list) and name is None:  # derived classes: "A: B"
        name = ": ".join(str(n) for n in value["names"])
    return (str(name) if name else None), color


def _color(value: Any, where: str) -> tuple[int, int, int] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise AnnotationError(f"{where}: colour {quoted(value)} is not a colour")
    if isinstance(value, int):  # packed (A)RGB
        return ((value >> 16) & 255, (value >> 8) & 255, value & 255)
    if (
        isinstance(value, list)
        and len(value) in (3, 4)
        and all(isinstance(c, Real) and not isinstance(c, bool) for c in value)
    ):
        return tuple(max(0, min(255, round(c))) for c in value[:3])  # type: ignore[return-value]
    raise AnnotationError(f"{where}: colour {quoted(value)} is not [r, g, b]")


def _measurements(value: Any) -> dict[str, float]:
    """QuPath >= 0.4 writes ``{name: value}``; earlier versions ``[{name, value}, ...]``."""
    items: Iterable = []
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = (
            (m.get("name"), m.get("value")) for m in value if isinstance(m, dict) and "name" in m
        )
    out = {}
    for key, number in items:
        if isinstance(number, Real) and not isinstance(number, bool) and math.isfinite(number):
            out[str(key)] = float(number)
    for old, new in LEGACY_MEASUREMENTS.items():
        if old in out and new not in out:
            out[new] = out.pop(old)
    return out


# --- writing ----------------------------------------------------------------------------------
def to_geojson(annotations: Sequence[Annotation], mpp: Mpp | None = None) -> dict:
    """A QuPath-compatible FeatureCollection; with ``mpp``, area/perimeter in µm are added."""
    return {"type": "FeatureCollection", "features": [_to_feature(a, mpp) for a in annotations]}


def write_geojson(
    path: str | Path, annotations: Sequence[Annotation], mpp: Mpp | None = None
) -> None:
    text = json.dumps(to_geojson(annotations, mpp), allow_nan=False, ensure_ascii=False)
    write_text_atomic(path, text + "\n")


def _to_feature(annotation: Annotation, mpp: Mpp | None) -> dict:
    props: dict[str, Any] = {"objectType": annotation.object_type or "annotation"}
    if annotation.name:
        props["name"] = annotation.name
    if annotation.classification:
        color = annotation.color or class_color(annotation.classification)
        props["classification"] = {"name": annotation.classification, "color": list(color)}
    elif annotation.color:
        props["color"] = list(annotation.color)
    measurements = {k: float(x) for k, x in annotation.measurements.items() if math.isfinite(x)}
    if mpp is not None:
        measurements.update(measure(annotation.geometry, mpp))
    if measurements:
        props["measurements"] = measurements
    # QuPath gives every object a UUID; one without an id gets a new one, as QuPath would.
    feature: dict[str, Any] = {"type": "Feature", "id": str(annotation.id or new_id())}
    feature["geometry"] = _geometry(annotation.geometry)
    feature["properties"] = props
    return feature


def _geometry(geometry: BaseGeometry) -> dict:
    if geometry.geom_type not in GEOMETRY_TYPES:
        raise AnnotationError(f"cannot write {geometry.geom_type} geometry to GeoJSON")
    out = mapping(geometry)
    return {"type": out["type"], "coordinates": _lists(out["coordinates"])}


def _lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_lists(x) for x in value]
    return float(value)
