"""The tumour region an annotation set describes: what patch labelling and evaluation need."""

from __future__ import annotations

from collections.abc import Iterable

import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from napari_metastasis.annotations._validate import polygonal_part
from napari_metastasis.annotations.model import Annotation


def tumour_geometry(annotations: Iterable[Annotation]) -> BaseGeometry:
    """Union of tumour polygons minus the union of exclusion polygons, in level-0 px.

    Camelyon16 draws tumour as Tumor/_0/_1 polygons and cuts normal tissue out of them with _2
    polygons (Tumor_064 has 24); holes inside a tumour polygon are kept too. The result is a
    (Multi)Polygon, empty when nothing is tumour. Lines and points are ignored.
    """
    annotations = list(annotations)
    tumour = _union(a.geometry for a in annotations if a.is_tumour)
    exclusion = _union(a.geometry for a in annotations if a.is_exclusion)
    region = tumour.difference(exclusion) if not exclusion.is_empty else tumour
    return polygonal_part(region) if not region.is_empty else Polygon()


def _union(geometries: Iterable[BaseGeometry]) -> BaseGeometry:
    polys = [g for g in geometries if isinstance(g, (Polygon, MultiPolygon))]
    if not polys:
        return Polygon()
    return shapely.union_all(polys)
