"""Turn raw coordinate lists from any format into checked shapely geometry, or a readable error.

Every reader goes through here, so the rules are the same for GeoJSON, ASAP XML and NCRF JSON:
numbers only, finite, polygons with at least 3 distinct vertices, lines with at least 2 points.
Self-intersecting polygons are repaired with shapely's ``make_valid`` (structure method, polygons only)
and reported as an :class:`AnnotationRepairWarning`, because silently changing a pathologist's outline
is as bad as refusing it.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from numbers import Real

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from napari_metastasis.errors import AnnotationError

#: Limits that keep a huge or hostile annotation file from taking the machine (a 45 MB GeoJSON with
#: one 2.6M-vertex self-intersecting polygon once took 4.5 GB and 67 s). Past them the file is
#: refused with a message naming the limit. Camelyon16's largest outline has a few thousand
#: vertices; a QuPath export of every cell on a slide is about a million features.
MAX_FEATURES = 1_000_000
MAX_VERTICES_PER_GEOMETRY = 1_000_000
MAX_VERTICES_PER_FILE = 20_000_000
#: An invalid (self-intersecting) polygon with more vertices than this is refused, not repaired:
#: repair time grows with the number of crossings and reached minutes on hostile outlines.
MAX_REPAIR_VERTICES = 50_000

_vertex_budget: ContextVar[list[int] | None] = ContextVar("vertex_budget", default=None)


@contextlib.contextmanager
def file_limits() -> Iterator[None]:
    """Count vertices against :data:`MAX_VERTICES_PER_FILE` while one file is read."""
    token = _vertex_budget.set([0])
    try:
        yield
    finally:
        _vertex_budget.reset(token)


def check_feature_count(count: int, where: str) -> None:
    if count > MAX_FEATURES:
        raise AnnotationError(
            f"{where}: {count:,} annotations; at most {MAX_FEATURES:,} are read from one file"
        )


def count_vertices(count: int, where: str) -> None:
    """Refuse a geometry or file past the vertex limits (called by every reader)."""
    if count > MAX_VERTICES_PER_GEOMETRY:
        raise AnnotationError(
            f"{where}: {count:,} vertices in one shape; at most {MAX_VERTICES_PER_GEOMETRY:,} are "
            "read (simplify it in the tool that made it)"
        )
    budget = _vertex_budget.get()
    if budget is not None:
        budget[0] += count
        if budget[0] > MAX_VERTICES_PER_FILE:
            raise AnnotationError(
                f"{where}: more than {MAX_VERTICES_PER_FILE:,} vertices in the file; that is the "
                "limit for one annotation file"
            )


class AnnotationRepairWarning(UserWarning):
    """An annotation was changed (repaired) or skipped while reading; the message says which."""


class GeometryRepairWarning(AnnotationRepairWarning):
    """An outline was invalid (self-intersecting or similar) and was repaired: routine for
    hand-drawn polygons, so the interfaces log each one and show one summary line."""


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise AnnotationError(f"{where}: coordinate {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise AnnotationError(f"{where}: coordinate is {value!r} (NaN or infinite)")
    return number


def position(value: object, where: str) -> tuple[float, float]:
    """One (x, y) position; a third (z) value, which GeoJSON allows, is ignored."""
    if not isinstance(value, (list, tuple)) or len(value) not in (2, 3):
        raise AnnotationError(f"{where}: a position must be [x, y], got {_short(value)}")
    return (_number(value[0], where), _number(value[1], where))


def positions(values: object, where: str) -> np.ndarray:
    """A list of positions -> (N, 2) float64 array of (x, y)."""
    if not isinstance(values, (list, tuple)):
        raise AnnotationError(f"{where}: expected a list of [x, y] positions, got {_short(values)}")
    count_vertices(len(values), where)
    if values:  # fast path for well-formed numeric lists; anything odd takes the checked loop
        try:
            array = np.array(values)
        except ValueError:  # ragged
            array = None
        if (
            array is not None
            and array.dtype.kind in "iuf"
            and array.ndim == 2
            and array.shape[1] in (2, 3)
            and np.isfinite(array).all()
            and not any(type(c) is bool for p in values for c in p)  # numpy takes true as 1
        ):
            return np.ascontiguousarray(array[:, :2], dtype=np.float64)
    out = np.empty((len(values), 2), dtype=np.float64)
    for i, value in enumerate(values):
        out[i] = position(value, where)
    return out


def ring(coords: np.ndarray, where: str) -> np.ndarray:
    """Check a polygon ring (closed or not) has at least 3 distinct vertices; return it unclosed."""
    if len(coords) > 1 and np.array_equal(coords[0], coords[-1]):
        coords = coords[:-1]
    distinct = len(np.unique(coords, axis=0)) if len(coords) else 0
    if len(coords) < 3 or distinct < 3:
        raise AnnotationError(
            f"{where}: polygon has {distinct} distinct point(s); a polygon needs at least 3"
        )
    return coords


def polygon(shell: np.ndarray, holes: Sequence[np.ndarray], where: str) -> BaseGeometry:
    """A polygon with holes from checked rings; repaired if invalid."""
    shell = ring(shell, where)
    holes = [ring(h, f"{where} (hole {k + 1})") for k, h in enumerate(holes)]
    return repair(Polygon(shell, holes), where)


def multipolygon(parts: Sequence[BaseGeometry], where: str) -> BaseGeometry:
    polys: list[Polygon] = []
    for part in parts:
        polys.extend(part.geoms if isinstance(part, MultiPolygon) else [part])
    geom = MultiPolygon(polys)
    return repair(geom, where)


def line(coords: np.ndarray, where: str) -> LineString:
    if len(coords) < 2:
        raise AnnotationError(f"{where}: a line needs at least 2 points, got {len(coords)}")
    return LineString(coords)


def point(coords: np.ndarray, where: str) -> Point:
    return Point(coords)


def repair(geom: BaseGeometry, where: str) -> BaseGeometry:
    """Return ``geom`` if valid; else its ``make_valid`` polygonal part, with a warning."""
    if geom.is_valid:
        return geom
    reason = shapely.is_valid_reason(geom)
    vertices = shapely.get_num_coordinates(geom)
    if vertices > MAX_REPAIR_VERTICES:
        raise AnnotationError(
            f"{where}: invalid polygon ({reason}) with {vertices:,} vertices; polygons of more "
            f"than {MAX_REPAIR_VERTICES:,} vertices are not repaired (it can take minutes): fix "
            "it in the tool that made it"
        )
    # "structure" keeps everything a ring encloses (a loop drawn twice stays tumour), unlike the
    # default "linework" method's even-odd result; collapsed parts (lines, points) are dropped.
    fixed = geom
    for _ in range(3):  # GEOS occasionally needs a second pass to reach a valid result
        fixed = polygonal_part(shapely.make_valid(fixed, method="structure", keep_collapsed=False))
        if fixed.is_valid:
            break
    else:
        fixed = polygonal_part(fixed.buffer(0))
    if fixed.is_empty or fixed.area == 0:
        raise AnnotationError(f"{where}: polygon has no area ({reason})")
    if not fixed.is_valid:
        raise AnnotationError(f"{where}: invalid polygon that could not be repaired ({reason})")
    warnings.warn(
        f"{where}: invalid polygon ({reason}) repaired; area {geom.area:.6g} -> {fixed.area:.6g} px²",
        GeometryRepairWarning,
        stacklevel=2,
    )
    return fixed


def polygonal_part(geom: BaseGeometry) -> BaseGeometry:
    """The polygons in ``geom`` (dropping lines/points ``make_valid`` may leave), as one geometry."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    polys: list[Polygon] = []
    for part in getattr(geom, "geoms", []):
        if isinstance(part, Polygon):
            polys.append(part)
        elif isinstance(part, MultiPolygon):
            polys.extend(part.geoms)
    if not polys:
        return Polygon()
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
