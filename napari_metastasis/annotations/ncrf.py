"""NCRF-style JSON: ``{"positive": [{"name", "vertices": [[x, y], ...]}], "negative": [...]}``.

This is what Baidu's NCRF ``camelyon16xml2json.py`` makes of the Camelyon16 XMLs: "positive" holds
the tumour polygons (ASAP groups Tumor, _0, _1) and "negative" the exclusion polygons (group _2).
The ``name`` is the ASAP annotation's name (``_0``, ``_1``, ...), not a class, so the class comes from
the list a polygon is in. Vertices are level-0 pixels, ring not closed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shapely.geometry import MultiPolygon, Polygon

from napari_metastasis.annotations import _validate as v
from napari_metastasis.annotations.model import EXCLUSION_CLASS, TUMOUR_CLASS, Annotation
from napari_metastasis.errors import AnnotationError
from napari_metastasis.errors.policy import quoted
from napari_metastasis.outputs.atomic import write_text_atomic

KEYS = ("positive", "negative")


def looks_like_ncrf(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and bool(data)
        and set(data) <= set(KEYS)
        and all(isinstance(data[k], list) for k in data)
    )


def parse_ncrf(data: Any, source: str) -> list[Annotation]:
    if not looks_like_ncrf(data):
        raise AnnotationError(f"{source}: not NCRF JSON (needs 'positive'/'negative' lists)")
    v.check_feature_count(sum(len(data.get(k, [])) for k in KEYS), source)
    annotations = []
    for key, classification in (("positive", TUMOUR_CLASS), ("negative", EXCLUSION_CLASS)):
        for index, item in enumerate(data.get(key, [])):
            where = f"{source}: {key} polygon {index + 1}"
            if not isinstance(item, dict) or "vertices" not in item:
                raise AnnotationError(f"{where}: needs 'vertices'")
            name = item.get("name")
            name = str(name) if name is not None else None
            if name:
                where += f" ({quoted(name)})"
            shell = v.positions(item["vertices"], where)
            annotations.append(
                Annotation(
                    geometry=v.polygon(shell, [], where),
                    classification=classification,
                    name=name,
                )
            )
    return annotations


def to_ncrf(annotations: Sequence[Annotation]) -> dict:
    """Tumour polygons' outlines go to "positive"; exclusion polygons and tumour holes to "negative"."""
    positive: list[dict] = []
    negative: list[dict] = []
    for index, annotation in enumerate(annotations):
        name = annotation.name or f"_{index}"
        where = f"annotation {index + 1} ({quoted(name)})"
        geom = annotation.geometry
        if not isinstance(geom, (Polygon, MultiPolygon)):
            raise AnnotationError(f"{where}: NCRF JSON holds only polygons, not {geom.geom_type}")
        if not (annotation.is_tumour or annotation.is_exclusion):
            raise AnnotationError(
                f"{where}: NCRF JSON holds only tumour and exclusion regions, not class "
                f"{quoted(str(annotation.classification))}"
            )
        polys = [geom] if isinstance(geom, Polygon) else list(geom.geoms)
        for k, poly in enumerate(polys):
            part = name if len(polys) == 1 else f"{name} part {k + 1}"
            target = positive if annotation.is_tumour else negative
            target.append({"name": part, "vertices": _vertices(poly.exterior)})
            if poly.interiors and not annotation.is_tumour:
                raise AnnotationError(f"{where}: NCRF JSON cannot hold holes in exclusion regions")
            for h, hole in enumerate(poly.interiors):
                negative.append({"name": f"{part} hole {h + 1}", "vertices": _vertices(hole)})
    return {"positive": positive, "negative": negative}


def write_ncrf(path: str | Path, annotations: Sequence[Annotation]) -> None:
    write_text_atomic(path, json.dumps(to_ncrf(annotations), allow_nan=False) + "\n")


def _vertices(ring: Any) -> list[list[float]]:
    return [[float(x), float(y)] for x, y in ring.coords[:-1]]
