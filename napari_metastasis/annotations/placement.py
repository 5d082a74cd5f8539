"""Do annotations belong to this slide? Outlines outside it, and geometry repairs, in one sentence.

Annotation files carry no slide identity: Camelyon16's Tumor_064.json opened over another slide
lands tens of millimetres beside it without complaint. :func:`check_placement` counts the
annotations lying outside a slide of known size, and :func:`placement_warning` says so once, in
words, for the viewer and for ``convert --slide``. :func:`repairs_summary` folds the per-polygon
repair notes of a file into one line (the details go to the log).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import shapely
from shapely.geometry import box

from napari_metastasis.annotations.model import Annotation


@dataclass(frozen=True)
class Placement:
    """How many annotations lie wholly or partly outside the slide, and how far the farthest is."""

    total: int
    outside: int  # wholly outside
    partly: int  # crossing the slide's edge
    farthest_px: float  # largest distance (level-0 px) of an annotation point from the slide


def check_placement(annotations: Sequence[Annotation], width: int, height: int) -> Placement:
    """Compare annotations (level-0 px) with a ``width`` × ``height`` px slide."""
    slide = box(0, 0, width, height)
    outside = partly = 0
    farthest = 0.0
    for annotation in annotations:
        geometry = annotation.geometry
        if geometry is None or geometry.is_empty:
            continue
        if not geometry.intersects(slide):
            outside += 1
        elif not slide.covers(geometry):
            partly += 1
        else:
            continue
        points = shapely.get_coordinates(geometry)
        if len(points):
            farthest = max(farthest, float(shapely.distance(slide, shapely.points(points)).max()))
    return Placement(len(annotations), outside, partly, farthest)


def placement_warning(
    placement: Placement, source: str, slide_name: str, mpp: float | None = None
) -> str | None:
    """One sentence when annotations fall outside the slide; None when all lie on it."""
    if not (placement.outside or placement.partly):
        return None
    if mpp:  # in mm from 1 mm on, else in µm: "outside, up to 0.0 mm away" contradicted itself
        um = placement.farthest_px * mpp
        distance = f"{um / 1000:.1f} mm" if um >= 1000 else f"{max(1.0, um):.0f} µm"
    else:
        distance = f"{placement.farthest_px:.0f} px"
    parts = []
    if placement.outside:
        parts.append(
            f"{placement.outside} of {placement.total} annotations lie outside {slide_name}"
        )
    if placement.partly:
        parts.append(f"{placement.partly} cross its edge")
    likely = (
        "; they were probably drawn on another slide"
        if placement.outside * 2 >= placement.total
        else ""
    )
    return f"{source}: {', '.join(parts)} (up to {distance} away){likely}."


def repairs_summary(messages: Sequence[str], source: str) -> str | None:
    """One line for a file's geometry repairs (None when there were none)."""
    if not messages:
        return None
    n = len(messages)
    what = "outline needed repair and was" if n == 1 else "outlines needed repair and were"
    return f"{source}: {n} {what} fixed (self-intersections or similar); details in the log."
