"""Detected regions as a napari Shapes layer: one outlined polygon per region, holes kept.

Contours are recomputed whenever the threshold moves, so the layer is refilled in place (the user's
colour or visibility settings survive) rather than replaced. Outlines are kept a constant width on
screen: napari measures edge width in world units (µm), which would make them invisible at
whole-slide zoom and fat at cell level.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pandas as pd
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from .frame import SlideFrame

#: Columns of the layer's features table (one row per region).
FEATURE_COLUMNS = ("id", "classification", "area_um2", "max_prob", "mean_prob")
DEFAULT_CLASSIFICATION = "Tumor"
#: Outline width in screen pixels, whatever the zoom.
EDGE_SCREEN_PX = 2.0
#: Outline colour per classification; anything else is drawn white.
CLASS_COLORS = {
    "Tumor": "#00ff66",
    "Suspicious": "#ffd400",
    "Normal": "#4da6ff",
}


def polygon_to_shape(polygon: Polygon, frame: SlideFrame) -> np.ndarray:
    """(N, 2) world (row, col) vertices of a level-0 polygon, holes encoded the way napari reads them.

    napari (≥ 0.5) draws a polygon with holes from one vertex list: the exterior ring, then for each
    hole a jump from the exterior's first vertex to the hole, the hole ring (closed, wound the other
    way) and, before the next hole, a jump back. napari drops edges visited twice (the jumps; the
    last jump back is the implicit closing edge) from both the fill and the outline, so only the
    rings are drawn: ``E0..En-1, E0, H0..Hm-1, H0, E0, K0..K0``.
    """
    polygon = orient(polygon, sign=1.0)  # exterior counter-clockwise, holes clockwise
    exterior = np.asarray(polygon.exterior.coords)[:-1]
    pieces = [exterior]
    for interior in polygon.interiors:
        pieces.append(exterior[:1])
        pieces.append(np.asarray(interior.coords))
    return frame.to_world(np.concatenate(pieces))


def shape_to_polygon(vertices: np.ndarray, frame: SlideFrame) -> Polygon:
    """Inverse of :func:`polygon_to_shape`: split at the repeats of the first vertex."""
    xy = frame.to_level0(vertices)
    at_start = np.flatnonzero(np.all(xy == xy[0], axis=1))
    if len(at_start) == 1:
        return Polygon(xy)
    bounds = [*at_start.tolist(), len(xy)]
    holes = [xy[a + 1 : b] for a, b in pairwise(bounds[1:])]
    return Polygon(xy[: at_start[1]], [h for h in holes if len(h) >= 4])


def regions_features(regions: Sequence, labels: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.array([r.id for r in regions], dtype=np.int64),
            "classification": pd.Series(list(labels), dtype=object),
            "area_um2": np.array([r.area_um2 for r in regions], dtype=np.float64),
            "max_prob": np.array([r.max_prob for r in regions], dtype=np.float64),
            "mean_prob": np.array([r.mean_prob for r in regions], dtype=np.float64),
        },
        columns=list(FEATURE_COLUMNS),
    )


class RegionsLayer:
    """Keeps a Shapes layer showing a list of regions (objects with ``polygon``, ``id``, ...)."""

    def __init__(self, viewer, frame: SlideFrame, name: str):
        self.viewer = viewer
        self.frame = frame
        self.name = name
        self.visible = True
        self._layer = None
        self._zoom_connected = False

    @property
    def layer(self):
        if self._layer is None or self._layer not in self.viewer.layers:
            self._layer = self.viewer.add_shapes(
                name=self.name,
                ndim=2,
                face_color="transparent",
                edge_color=CLASS_COLORS[DEFAULT_CLASSIFICATION],
                edge_width=self._edge_width(),
                features=regions_features([], []),
                visible=self.visible,
                metadata={"metastasis_regions": True},
                **self.frame.layer_kwargs(),
            )
            self._connect_zoom()
        return self._layer

    def is_shown(self) -> bool:
        return self._layer is not None and self._layer in self.viewer.layers

    def show(self, regions: Sequence, labels: Sequence[str]) -> None:
        """Replace the layer's shapes and features with ``regions`` (labels: one per region)."""
        layer = self.layer
        shapes = [polygon_to_shape(r.polygon, self.frame) for r in regions]
        features = regions_features(regions, labels)
        with layer.events.data.blocker():
            layer.selected_data = set()
            layer.data = []
            if shapes:
                layer.add_polygons(shapes)
        layer.features = features
        layer.face_color = "transparent"
        if shapes:
            layer.edge_color = [CLASS_COLORS.get(lab, "#ffffff") for lab in labels]
            layer.edge_width = self._edge_width()
        layer.refresh()

    def relabel(self, index: int, label: str) -> None:
        layer = self.layer
        layer.features.loc[index, "classification"] = label
        colors = np.array(layer.edge_color)
        from napari.utils.colormaps.standardize_color import transform_color

        colors[index] = transform_color(CLASS_COLORS.get(label, "#ffffff"))[0]
        layer.edge_color = colors

    def set_visible(self, visible: bool) -> None:
        self.visible = bool(visible)
        if self.is_shown():
            self._layer.visible = self.visible

    def remove(self) -> None:
        self._disconnect_zoom()
        if self.is_shown():
            self.viewer.layers.remove(self._layer)
        self._layer = None

    # --- constant on-screen outline width ---------------------------------------------------
    def _camera(self):
        scene = getattr(self.viewer, "scene", None)
        return scene.camera if scene is not None else self.viewer.camera

    def _edge_width(self) -> float:
        return EDGE_SCREEN_PX / max(self._camera().zoom, 1e-9)

    def _connect_zoom(self) -> None:
        if not self._zoom_connected:
            self._camera().events.zoom.connect(self._on_zoom)
            self._zoom_connected = True

    def _disconnect_zoom(self) -> None:
        if self._zoom_connected:
            self._camera().events.zoom.disconnect(self._on_zoom)
            self._zoom_connected = False

    def _on_zoom(self, event=None) -> None:
        if self.is_shown() and self._layer.nshapes:
            width = self._edge_width()
            current = self._layer.edge_width
            if current and abs(current[0] - width) > 0.05 * width:
                self._layer.edge_width = width
