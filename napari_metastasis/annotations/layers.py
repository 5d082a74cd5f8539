"""Exact conversion between annotations (level-0 px) and napari Shapes / Points layer data (µm).

This module is the one place where annotation geometry changes units. The rule of the project:
files hold level-0 pixels ``(x, y)``; napari layers hold µm ``(y, x)`` with layer scale 1, so they
sit on a slide Image layer whose scale is ``(mpp_y, mpp_x)``. ``mpp`` below is that pair (or one
number, or a ``Resolution``); an uncalibrated slide uses 1, so "µm" are then pixels.

Shapes layer convention (what :func:`shapes_layer_data` makes and :func:`shapes_to_annotations`
reads back; anything else that builds annotation Shapes layers, e.g. the contour code, follows it)
-----------------------------------------------------------------------------------------------
napari Shapes cannot hold a polygon with holes, so **every ring is its own napari shape** and the
features table says how rings belong together:

===============  =========  ================================================================
column           dtype      meaning
===============  =========  ================================================================
``id``           str        the annotation (region) id; every row of one annotation shares it:
                            its outer ring(s), its holes, the parts of a MultiPolygon / the
                            lines of a MultiLineString. ``""`` (the default for shapes the
                            user draws) makes the row an annotation of its own.
``role``         str        ``"exterior"`` (a polygon's outer ring), ``"hole"`` (a hole in the
                            exterior of the same ``id`` and ``part``), ``"line"`` (an open
                            path) or ``""`` (the default for shapes the user draws: a
                            ``path``/``line`` is then a line, anything else a region).
``part``         int        index of the polygon (or line) within its annotation; a hole belongs
                            to the exterior with the same ``id`` and ``part``. If ``part`` is
                            missing, a hole goes to the exterior of its ``id`` that contains it.
``classification`` str      class name (``"Tumor"`` for metastases, ``""`` = unclassified).
``name``         str        the annotation's name (``""`` = none).
``color``        str        ``"#rrggbb"`` (``""`` = the class colour).
``object_type``  str        QuPath object type, usually ``"annotation"``.
anything else    float      a measurement (e.g. ``area_um2``, ``max_prob``, ``mean_prob``),
                            repeated on every row of the annotation; read from its first row.
===============  =========  ================================================================

Shape types: a ring is a **closed** ``path`` (its first vertex repeated at the end), so it is drawn
as edges only; napari would otherwise triangulate every polygon's face in pure Python, which takes
~30 s for Camelyon16's Tumor_064 against 0.3 s as paths. ``polygon``, ``rectangle`` and ``ellipse``
shapes are rings too (ellipses become 64-gons); a line is an open ``path``. A region navigator should
list only rows with ``role == "exterior"`` (holes are rows too).

Points layer: one row per point, columns ``id``, ``role`` (``"point"`` or ``"multipoint"``; the
points of one MultiPoint share an ``id``), ``classification``, ``name``, ``color``,
``object_type`` and measurements as above.

Exactness: µm = px × mpp in float64. napari stores Shapes vertices as float32 (about 0.002 µm at
the far side of a Camelyon16 slide), so :func:`shapes_layer_data` keeps the float64 pixel
coordinates of every ring in ``metadata["exact_px"]``, keyed by the float32 bytes napari holds; an
unedited ring converts back to exactly the pixels it came from, and an edited one from its new
vertices. Layer metadata also records ``"mpp"`` as ``[mpp_y, mpp_x]``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from shapely.geometry import (
    LineString,
    MultiLineString,
    MultiPoint,
    MultiPolygon,
    Point,
    Polygon,
)
from shapely.geometry.base import BaseGeometry

from napari_metastasis.annotations import _validate as v
from napari_metastasis.annotations.model import Annotation, color_to_hex, hex_to_color, new_id
from napari_metastasis.annotations.sizes import Mpp, mpp_yx
from napari_metastasis.errors import AnnotationError

LayerData = tuple  # (data, kwargs, layer_type), napari's LayerDataTuple

SHAPES_COLUMNS = ("id", "role", "part", "classification", "name", "color", "object_type")
POINTS_COLUMNS = ("id", "role", "classification", "name", "color", "object_type")
EXTERIOR, HOLE, LINE, UNSET = "exterior", "hole", "line", ""
POINT, MULTIPOINT = "point", "multipoint"
ELLIPSE_VERTICES = 64
EXACT_KEY = "exact_px"


# --- coordinates -------------------------------------------------------------------------------
def px_to_um(xy: np.ndarray, mpp: Mpp) -> np.ndarray:
    """(N, 2) level-0 px ``(x, y)`` -> (N, 2) µm ``(y, x)``, float64."""
    my, mx = mpp_yx(mpp)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return np.column_stack([xy[:, 1] * my, xy[:, 0] * mx])


def um_to_px(yx: np.ndarray, mpp: Mpp) -> np.ndarray:
    """(N, 2) µm ``(y, x)`` -> (N, 2) level-0 px ``(x, y)``, float64."""
    my, mx = mpp_yx(mpp)
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    return np.column_stack([yx[:, 1] / mx, yx[:, 0] / my])


def _key(yx: np.ndarray) -> str:
    """The key of a ring as napari holds it (float32), for the exact-pixel cache."""
    return hashlib.sha1(np.ascontiguousarray(yx, dtype=np.float32).tobytes()).hexdigest()


# --- annotations -> layers ---------------------------------------------------------------------
def annotations_to_layer_data(
    annotations: Sequence[Annotation], mpp: Mpp, *, name: str = "Annotations"
) -> list[LayerData]:
    """Shapes layer data for regions and lines, Points layer data for points (each if any)."""
    ids = _unique_ids(annotations)
    out = []
    shapes = shapes_layer_data(annotations, mpp, name=name, ids=ids)
    if shapes is not None:
        out.append(shapes)
    points = points_layer_data(annotations, mpp, name=f"{name} points", ids=ids)
    if points is not None:
        out.append(points)
    return out


def shapes_layer_data(
    annotations: Sequence[Annotation],
    mpp: Mpp,
    *,
    name: str = "Annotations",
    ids: Sequence[str] | None = None,
    ring_shape: str = "path",
) -> LayerData | None:
    """``(data, kwargs, "shapes")`` for the regions and lines in ``annotations`` (None if none).

    ``ring_shape="polygon"`` makes rings napari polygons (selectable by a click inside, and
    fillable) instead of closed paths: fine for a few hand-drawn regions, slow for big outlines.
    """
    if ring_shape not in ("path", "polygon"):
        raise ValueError(f"ring_shape must be 'path' or 'polygon', not {ring_shape!r}")
    ids = list(ids) if ids is not None else _unique_ids(annotations)
    data: list[np.ndarray] = []
    shape_types: list[str] = []
    rows: list[dict[str, Any]] = []
    exact: dict[str, np.ndarray] = {}
    for annotation, ident in zip(annotations, ids, strict=True):
        if annotation.kind == "point":
            continue
        base = _attributes(annotation, ident)
        for part, role, xy in _rings(annotation.geometry):
            if role != LINE and ring_shape == "path":
                xy = np.vstack([xy, xy[:1]])  # close the ring so its last edge is drawn
            yx = px_to_um(xy, mpp)
            exact[_key(yx)] = np.array(xy, dtype=np.float64)
            data.append(yx)
            shape_types.append("path" if role == LINE else ring_shape)
            rows.append({**base, "role": role, "part": part})
    if not data:
        return None
    features = _table(rows, SHAPES_COLUMNS)
    edge = [_rgba(r["color"], r["classification"]) for r in rows]
    kwargs = {
        "name": name,
        "shape_type": shape_types,
        "features": features,
        "feature_defaults": _defaults(features),
        "edge_color": np.array(edge),
        "face_color": [0.0, 0.0, 0.0, 0.0],
        "edge_width": _edge_width(data),
        "metadata": {"mpp": list(mpp_yx(mpp)), EXACT_KEY: exact},
    }
    return (data, kwargs, "shapes")


def points_layer_data(
    annotations: Sequence[Annotation],
    mpp: Mpp,
    *,
    name: str = "Annotation points",
    ids: Sequence[str] | None = None,
) -> LayerData | None:
    """``(data, kwargs, "points")`` for the Point/MultiPoint annotations (None if none)."""
    ids = list(ids) if ids is not None else _unique_ids(annotations)
    coords: list[tuple[float, float]] = []
    rows: list[dict[str, Any]] = []
    exact: dict[str, np.ndarray] = {}
    for annotation, ident in zip(annotations, ids, strict=True):
        if annotation.kind != "point":
            continue
        base = _attributes(annotation, ident)
        geom = annotation.geometry
        role = POINT if isinstance(geom, Point) else MULTIPOINT
        for p in [geom] if isinstance(geom, Point) else geom.geoms:
            xy = np.array(p.coords[0], dtype=np.float64)
            yx = px_to_um(xy, mpp)[0]
            exact[_key(yx)] = xy.reshape(1, 2)
            coords.append(yx)
            rows.append({**base, "role": role})
    if not coords:
        return None
    features = _table(rows, POINTS_COLUMNS)
    kwargs = {
        "name": name,
        "features": features,
        "feature_defaults": _defaults(features),
        "face_color": np.array([_rgba(r["color"], r["classification"]) for r in rows]),
        "size": 20.0,
        "metadata": {"mpp": list(mpp_yx(mpp)), EXACT_KEY: exact},
    }
    return (np.array(coords, dtype=np.float64).reshape(-1, 2), kwargs, "points")


def _rings(geom: BaseGeometry) -> Iterator[tuple[int, str, np.ndarray]]:
    """(part, role, (N, 2) px xy) for each napari shape a geometry becomes."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        polys = [geom] if isinstance(geom, Polygon) else list(geom.geoms)
        for part, poly in enumerate(polys):
            yield part, EXTERIOR, np.asarray(poly.exterior.coords)[:-1]
            for hole in poly.interiors:
                yield part, HOLE, np.asarray(hole.coords)[:-1]
    elif isinstance(geom, (LineString, MultiLineString)):
        lines = [geom] if isinstance(geom, LineString) else list(geom.geoms)
        for part, line in enumerate(lines):
            yield part, LINE, np.asarray(line.coords)


def _attributes(annotation: Annotation, ident: str) -> dict[str, Any]:
    return {
        "id": ident,
        "classification": annotation.classification or "",
        "name": annotation.name or "",
        "color": color_to_hex(annotation.color) if annotation.color else "",
        "object_type": annotation.object_type or "annotation",
        **{k: float(x) for k, x in annotation.measurements.items()},
    }


def _unique_ids(annotations: Sequence[Annotation]) -> list[str]:
    """Each annotation's id, or a fresh UUID (QuPath's kind of id) where it has none or a duplicate."""
    seen: set[str] = set()
    out = []
    for a in annotations:
        ident = str(a.id) if a.id else ""
        if not ident or ident in seen:
            ident = new_id()
        seen.add(ident)
        out.append(ident)
    return out


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    measurement_names: list[str] = []
    for row in rows:
        measurement_names += [k for k in row if k not in columns and k not in measurement_names]
    table = pd.DataFrame(rows, columns=[*columns, *measurement_names])
    for column in measurement_names:
        table[column] = table[column].astype(float)
    if "part" in table:
        table["part"] = table["part"].astype(int)
    return table


def _defaults(features: pd.DataFrame) -> dict[str, Any]:
    """Values napari gives shapes the user adds: a new, unclassified annotation of its own."""
    defaults: dict[str, Any] = {
        "id": "",
        "role": UNSET if "part" in features else POINT,
        "classification": "",
        "name": "",
        "color": "",
        "object_type": "annotation",
    }
    if "part" in features:
        defaults["part"] = 0
    for column in features.columns:
        defaults.setdefault(column, math.nan)
    return defaults


def _rgba(color_hex: str, classification: str) -> list[float]:
    from napari_metastasis.annotations.model import class_color

    rgb = hex_to_color(color_hex) or class_color(classification or None)
    return [c / 255 for c in rgb] + [1.0]


def _edge_width(data: list[np.ndarray]) -> float:
    """Edges visible at whole-slide zoom: ~1/1000 of the annotations' extent, at least 1 unit."""
    stacked = np.concatenate(data)
    extent = float(np.max(stacked.max(axis=0) - stacked.min(axis=0)))
    return max(1.0, extent / 1000)


# --- layers -> annotations ---------------------------------------------------------------------
def shapes_to_annotations(
    data: Sequence[np.ndarray],
    shape_types: Sequence[str],
    features: pd.DataFrame | Mapping[str, Sequence] | None,
    mpp: Mpp,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> list[Annotation]:
    """Annotations (level-0 px) from Shapes layer data in µm, following the module's convention."""
    table = _as_table(features, len(data))
    exact = (metadata or {}).get(EXACT_KEY) or {}
    groups: dict[str, list[dict[str, Any]]] = {}
    for index, (yx, shape_type) in enumerate(zip(data, shape_types, strict=True)):
        row = table.iloc[index].to_dict() if len(table.columns) else {}
        ident = _text(row.get("id"))
        role = _text(row.get("role"))
        if shape_type in ("path", "line"):
            role = role if role in (EXTERIOR, HOLE) else LINE
        elif role not in (EXTERIOR, HOLE):
            role = EXTERIOR
        xy = _to_px(yx, mpp, exact, shape_type)
        entry = {"index": index, "role": role, "part": _int(row.get("part")), "xy": xy, "row": row}
        groups.setdefault(ident or f"\0{index}", []).append(entry)
    annotations = []
    for key, entries in groups.items():
        ident = new_id() if key.startswith("\0") else key  # drawn in napari: a new object
        annotations.extend(_group_to_annotations(ident, entries))
    return annotations


def points_to_annotations(
    data: np.ndarray,
    features: pd.DataFrame | Mapping[str, Sequence] | None,
    mpp: Mpp,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> list[Annotation]:
    """Annotations (level-0 px) from Points layer data in µm: a Point per row, or MultiPoints."""
    data = np.asarray(data, dtype=np.float64).reshape(-1, 2)
    table = _as_table(features, len(data))
    exact = (metadata or {}).get(EXACT_KEY) or {}
    groups: dict[str, list[tuple[np.ndarray, dict[str, Any]]]] = {}
    for index, yx in enumerate(data):
        row = table.iloc[index].to_dict() if len(table.columns) else {}
        xy = _to_px(yx.reshape(1, 2), mpp, exact, "point")[0]
        groups.setdefault(_text(row.get("id")) or f"\0{index}", []).append((xy, row))
    annotations = []
    for key, entries in groups.items():
        first = entries[0][1]
        multi = len(entries) > 1 or _text(first.get("role")) == MULTIPOINT
        points = [xy for xy, _ in entries]
        geom = MultiPoint(points) if multi else Point(points[0])
        annotations.append(_annotation(geom, first, None if key.startswith("\0") else key))
    return annotations


def layer_to_annotations(layer: Any, mpp: Mpp | None = None) -> list[Annotation]:
    """Annotations from a napari Shapes or Points layer; ``mpp`` defaults to its metadata's."""
    metadata = dict(getattr(layer, "metadata", {}) or {})
    mpp = mpp if mpp is not None else metadata.get("mpp", 1.0)
    kind = type(layer).__name__.lower()
    if kind == "shapes":
        return shapes_to_annotations(
            layer.data, layer.shape_type, layer.features, mpp, metadata=metadata
        )
    if kind == "points":
        return points_to_annotations(layer.data, layer.features, mpp, metadata=metadata)
    raise AnnotationError(f"layer {layer.name!r} is a {kind} layer, not Shapes or Points")


def _group_to_annotations(ident: str | None, entries: list[dict[str, Any]]) -> list[Annotation]:
    where = f"shape {entries[0]['index'] + 1}" + (f" (id {ident!r})" if ident else "")
    lines = [e for e in entries if e["role"] == LINE]
    exteriors = [e for e in entries if e["role"] == EXTERIOR]
    holes = [e for e in entries if e["role"] == HOLE]
    if holes and not exteriors:  # holes whose region was deleted: keep them as regions
        exteriors, holes = holes, []
    out = []
    if exteriors:
        shells = [v.ring(e["xy"], where) for e in exteriors]
        hole_lists: list[list[np.ndarray]] = [[] for _ in shells]
        for hole in holes:
            hole_lists[_owner(hole, exteriors, shells)].append(v.ring(hole["xy"], where))
        polys = [v.polygon(s, h, where) for s, h in zip(shells, hole_lists, strict=True)]
        geom = polys[0] if len(polys) == 1 else v.multipolygon(polys, where)
        out.append(_annotation(geom, exteriors[0]["row"], ident))
    if lines:
        parts = [v.line(e["xy"], where) for e in lines]
        geom = parts[0] if len(parts) == 1 else MultiLineString(parts)
        out.append(_annotation(geom, lines[0]["row"], ident))
    return out


def _owner(hole: dict[str, Any], exteriors: list[dict[str, Any]], shells: list[np.ndarray]) -> int:
    """Index of the exterior a hole belongs to: same ``part``, else the one containing it."""
    for k, e in enumerate(exteriors):
        if hole["part"] is not None and e["part"] == hole["part"]:
            return k
    inside = Point(hole["xy"][0])
    for k, shell in enumerate(shells):
        if Polygon(shell).covers(inside):
            return k
    return 0


def _annotation(geom: BaseGeometry, row: Mapping[str, Any], ident: str | None) -> Annotation:
    reserved = set(SHAPES_COLUMNS) | set(POINTS_COLUMNS)
    measurements = {}
    for key, value in row.items():
        if key in reserved or isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value):
            measurements[str(key)] = float(value)
    return Annotation(
        geometry=geom,
        classification=_text(row.get("classification")) or None,
        name=_text(row.get("name")) or None,
        color=hex_to_color(_text(row.get("color"))),
        object_type=_text(row.get("object_type")) or "annotation",
        measurements=measurements,
        id=ident,
    )


def _to_px(
    yx: np.ndarray, mpp: Mpp, exact: Mapping[str, np.ndarray], shape_type: str
) -> np.ndarray:
    yx = np.asarray(yx)
    cached = exact.get(_key(yx))
    if cached is not None:
        return np.array(cached, dtype=np.float64)
    if shape_type == "ellipse":
        yx = ellipse_outline(yx)
    return um_to_px(yx, mpp)


def ellipse_outline(corners: np.ndarray, n: int = ELLIPSE_VERTICES) -> np.ndarray:
    """An n-gon on the ellipse napari stores as the 4 corners of its (possibly rotated) box."""
    corners = np.asarray(corners, dtype=np.float64)
    center = corners.mean(axis=0)
    u = (corners[1] + corners[2]) / 2 - center
    w = (corners[2] + corners[3]) / 2 - center
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return center + np.cos(t) * u + np.sin(t) * w


def _as_table(features: Any, n: int) -> pd.DataFrame:
    if features is None:
        return pd.DataFrame(index=range(n))
    table = features if isinstance(features, pd.DataFrame) else pd.DataFrame(features)
    if len(table.columns) and len(table) != n:
        raise AnnotationError(f"the layer has {n} shapes but {len(table)} feature rows")
    return table.reset_index(drop=True)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))  # ids stored as numbers (e.g. 3.0 in a float column) -> "3"
    return str(value).strip()


def _int(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None
