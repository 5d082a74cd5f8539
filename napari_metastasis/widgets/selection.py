"""What to analyse: the viewer's state (camera, a click, drawn shapes) as level-0 regions.

The engine plans patches from level-0 pixel rectangles or polygons; napari speaks world µm. This
module turns one into the other through the slide layer's :class:`~.frame.SlideFrame`, so "Visible
region" means exactly the slide area the pathologist sees, and a click means exactly the field
around the point under the cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from napari_metastasis._napari.helpers import canvas_size, visible_world_rect
from napari_metastasis.annotations.layers import ellipse_outline
from napari_metastasis.widgets.frame import SlideFrame

__all__ = [
    "AREA_SHAPE_TYPES",
    "Rect",
    "canvas_size",
    "clip_to_slide",
    "field_around",
    "shapes_geometry",
    "visible_region",
    "visible_world_rect",
]

#: Shape types of a napari Shapes layer that enclose an area (lines and paths do not).
AREA_SHAPE_TYPES = frozenset({"rectangle", "polygon", "ellipse"})


@dataclass(frozen=True)
class Rect:
    """An axis-aligned level-0 pixel rectangle (x, y = top-left corner)."""

    x: float
    y: float
    width: float
    height: float

    @property
    def area(self) -> float:
        return self.width * self.height

    def as_tuple(self) -> tuple[float, float, float, float]:
        return self.x, self.y, self.width, self.height

    def geometry(self) -> Polygon:
        return box(self.x, self.y, self.x + self.width, self.y + self.height)


def clip_to_slide(x0: float, y0: float, x1: float, y1: float, frame: SlideFrame) -> Rect | None:
    """The part of the level-0 box [x0, x1) × [y0, y1) inside the slide, or None if none is."""
    x0, x1 = max(0.0, min(x0, x1)), min(float(frame.width), max(x0, x1))
    y0, y1 = max(0.0, min(y0, y1)), min(float(frame.height), max(y0, y1))
    if x1 <= x0 or y1 <= y0:
        return None
    return Rect(x0, y0, x1 - x0, y1 - y0)


# --- the camera ------------------------------------------------------------------------------
def visible_region(viewer: Any, frame: SlideFrame) -> Rect | None:
    """The level-0 rectangle of the slide currently in view, clipped to the slide."""
    y0, x0, y1, x1 = visible_world_rect(viewer)
    (px0, py0), (px1, py1) = frame.to_level0(np.array([[y0, x0], [y1, x1]]))
    return clip_to_slide(px0, py0, px1, py1, frame)


# --- a click ---------------------------------------------------------------------------------
def field_around(point_yx_um: Sequence[float], size_um: float, frame: SlideFrame) -> Rect | None:
    """The square field of side ``size_um`` centred on a world point, clipped to the slide.

    Returns None when the point lies outside the slide: a click beside the tissue's image should
    not start an analysis of its nearest edge.
    """
    px, py = frame.to_level0(np.asarray(point_yx_um, dtype=np.float64)[-2:])[0]
    hw, hh = frame.length_to_level0(size_um / 2)
    if not (0 <= px < frame.width and 0 <= py < frame.height):
        return None
    return clip_to_slide(px - hw, py - hh, px + hw, py + hh, frame)


# --- drawn shapes ----------------------------------------------------------------------------
def shapes_geometry(layer: Any, frame: SlideFrame, selected_only: bool = False) -> BaseGeometry:
    """The union, in level-0 px, of the area shapes (rectangles, polygons, ellipses) of a layer.

    Vertices go through the layer's own transform to world µm first, so a Shapes layer with a
    scale or translate of its own still selects what it shows. Lines and paths enclose nothing
    and are ignored. With ``selected_only`` and a selection, only the selected shapes count.
    """
    indices: list[int] | range = range(len(layer.data))
    if selected_only and layer.selected_data:
        indices = sorted(layer.selected_data)
    polygons = []
    for i in indices:
        if layer.shape_type[i] not in AREA_SHAPE_TYPES:
            continue
        vertices = np.asarray(layer.data[i], dtype=np.float64)[:, -2:]
        if layer.shape_type[i] == "ellipse":
            vertices = ellipse_outline(vertices)
        yx = np.array([layer.data_to_world(v)[-2:] for v in vertices])
        xy_px = frame.to_level0(yx)
        if len(xy_px) >= 3:
            polygons.append(shapely.make_valid(Polygon(xy_px)))
    if not polygons:
        return Polygon()
    return shapely.union_all(polygons).intersection(box(0, 0, frame.width, frame.height))
