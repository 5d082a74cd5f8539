"""Sizes of annotations in µm, from level-0 px geometry and the slide's µm per pixel.

``mpp`` is accepted in the forms the rest of the package has at hand: a number (isotropic), a
``(mpp_y, mpp_x)`` pair (napari's axis order, as in a slide layer's ``scale`` and
``Slide.metadata()["mpp"]``), or a :class:`~napari_metastasis.slides.slide.Resolution`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from shapely import affinity
from shapely.geometry.base import BaseGeometry

from napari_metastasis.errors import AnnotationError


class _HasMpp(Protocol):
    @property
    def mpp_x(self) -> float: ...

    @property
    def mpp_y(self) -> float: ...


Mpp = float | Sequence[float] | _HasMpp


def mpp_yx(mpp: Mpp) -> tuple[float, float]:
    """Normalise ``mpp`` to ``(mpp_y, mpp_x)``, both finite and positive."""
    if hasattr(mpp, "mpp_x") and hasattr(mpp, "mpp_y"):
        pair = (float(mpp.mpp_y), float(mpp.mpp_x))  # type: ignore[union-attr]
    elif isinstance(mpp, (int, float)):
        pair = (float(mpp), float(mpp))
    else:
        values = [float(x) for x in mpp]  # type: ignore[union-attr]
        if len(values) < 2:
            raise AnnotationError(f"µm per pixel must be one number or (y, x), got {mpp!r}")
        pair = (values[-2], values[-1])
    if not all(math.isfinite(x) and x > 0 for x in pair):
        raise AnnotationError(f"µm per pixel must be positive numbers, got {mpp!r}")
    return pair


def to_um(geometry: BaseGeometry, mpp: Mpp) -> BaseGeometry:
    """The same geometry in µm (x scaled by mpp_x, y by mpp_y, origin at the slide's corner)."""
    my, mx = mpp_yx(mpp)
    return affinity.scale(geometry, xfact=mx, yfact=my, origin=(0, 0))


def measure(geometry: BaseGeometry, mpp: Mpp) -> dict[str, float]:
    """``area_um2`` and ``perimeter_um`` of regions, ``length_um`` of lines; nothing for points."""
    kind = geometry.geom_type
    if kind in ("Polygon", "MultiPolygon"):
        um = to_um(geometry, mpp)
        return {"area_um2": float(um.area), "perimeter_um": float(um.length)}
    if kind in ("LineString", "MultiLineString"):
        return {"length_um": float(to_um(geometry, mpp).length)}
    return {}
