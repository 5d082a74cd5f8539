"""Detected regions as a napari Shapes layer that the annotation exporters understand.

The layer follows :mod:`napari_metastasis.annotations.layers`' convention, so the annotation panel
exports it as it is: every ring is a closed ``path`` (edges only, and fast to redraw while the
threshold slider moves), the features table groups rings by region ``id`` with a ``role``
(``exterior`` or ``hole``), and carries ``classification`` and the measurements ``predict`` writes
(:data:`~napari_metastasis.contours.REGION_MEASUREMENTS`: ``area_um2``, ``max_prob``, ``mean_prob``,
``patches``, ``threshold``) per region; ``id`` is the region's UUID, as in QuPath. The layer is refilled in place when the threshold moves, so the user's
settings on it survive. Outlines keep a constant width on screen: napari measures edge width in
world units (µm), which would make them vanish at whole-slide zoom and fatten at cell level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._napari.helpers import LazyLayer, camera
from ..annotations.layers import EXTERIOR, HOLE, SHAPES_COLUMNS, shapes_layer_data
from ..annotations.model import TUMOUR_CLASS, Annotation, class_color
from ..contours import REGION_MEASUREMENTS, region_annotation
from .frame import SlideFrame

#: Measurement columns of each region, after the convention's own columns.
MEASUREMENTS = REGION_MEASUREMENTS
DEFAULT_CLASSIFICATION = TUMOUR_CLASS
#: Outline width in screen pixels, whatever the zoom.
EDGE_SCREEN_PX = 2.0
#: Outline colours on screen. Tumour is bright green, not the class's export red, so it stands out
#: on both pink tissue and the red end of the heatmap; other classes use their export colour.
DISPLAY_COLORS = {TUMOUR_CLASS.lower(): "#00ff66"}


def display_color(classification: str) -> str:
    key = (classification or "").strip().lower()
    if key in DISPLAY_COLORS:
        return DISPLAY_COLORS[key]
    return "#{:02x}{:02x}{:02x}".format(*class_color(classification or None))


def region_annotations(
    regions: Sequence, labels: Sequence[str], threshold: float | None = None
) -> list[Annotation]:
    """Annotations (level-0 px) for regions from :func:`napari_metastasis.contours.probability_contours`."""
    return [
        region_annotation(region, label, threshold)
        for region, label in zip(regions, labels, strict=True)
    ]


def empty_features() -> pd.DataFrame:
    table = pd.DataFrame({c: pd.Series(dtype=object) for c in SHAPES_COLUMNS})
    table["part"] = table["part"].astype(int)
    for column in MEASUREMENTS:
        table[column] = pd.Series(dtype=float)
    return table


class RegionsLayer(LazyLayer):
    """Keeps a Shapes layer showing a list of regions (objects with ``polygon``, ``id``, ...)."""

    def __init__(self, viewer, frame: SlideFrame, name: str):
        super().__init__(viewer, name)
        self.frame = frame
        #: called with the ids (str) of regions the user deleted in the layer itself
        self.on_user_delete: Callable[[set[str]], None] | None = None
        self._layer: Any = None
        self._shown_ids: set[str] = set()
        self._updating = False
        self._zoom_connected = False

    @property
    def mpp(self) -> tuple[float, float]:
        """What the annotation convention calls mpp: world units per level-0 px, (y, x)."""
        return self.frame.scale_yx

    def _create(self):
        layer = self.viewer.add_shapes(
            name=self.name,
            ndim=2,
            face_color="transparent",
            edge_color=display_color(DEFAULT_CLASSIFICATION),
            edge_width=self._edge_width(),
            features=empty_features(),
            visible=self.visible,
            translate=self.frame.translate_yx,
            metadata={
                "metastasis_regions": True,
                "mpp": list(self.mpp),
                "calibrated": self.frame.units is not None,
            },
            **self.frame.layer_kwargs(),
        )
        layer.events.data.connect(self._on_data_changed)
        self._connect_zoom()
        return layer

    def show(
        self, regions: Sequence, labels: Sequence[str], threshold: float | None = None
    ) -> None:
        """Replace the layer's shapes and features with ``regions`` (one label per region)."""
        layer = self.layer
        built = shapes_layer_data(
            region_annotations(regions, labels, threshold), self.mpp, name=self.name
        )
        self._updating = True
        try:
            layer.selected_data = set()
            layer.data = []
            if built is None:
                layer.features = empty_features()
            else:
                data, kwargs, _ = built
                colors = [display_color(c) for c in kwargs["features"]["classification"]]
                layer.add(
                    data,
                    shape_type=kwargs["shape_type"],
                    edge_width=self._edge_width(),
                    edge_color=colors,
                    face_color="transparent",
                )
                layer.features = kwargs["features"]
                layer.feature_defaults = kwargs["feature_defaults"]
                layer.metadata.update(kwargs["metadata"])
        finally:
            self._updating = False
        self._shown_ids = {str(r.uid) for r in regions}

    def rows_of(self, region_id) -> list[int]:
        """Shape indices (exterior and holes) of one region, by its ``uid``."""
        if not self.is_shown() or "id" not in self._layer.features:
            return []
        ids = self._layer.features["id"].astype(str).to_numpy()
        return np.flatnonzero(ids == str(region_id)).tolist()

    def highlight(self, region_id) -> None:
        """Make one region stand out (its shapes selected)."""
        rows = self.rows_of(region_id)
        if rows:
            self._layer.selected_data = set(rows)

    def roles(self) -> list[str]:
        return list(self._layer.features["role"]) if self.is_shown() else []

    def remove(self) -> None:
        self._disconnect_zoom()
        super().remove()

    # --- regions deleted with napari's own tools ---------------------------------------------
    def _on_data_changed(self, event=None) -> None:
        if self._updating or self.on_user_delete is None or not self.is_shown():
            return
        action = str(getattr(event, "action", ""))
        if "remov" not in action.lower():
            return
        features = self._layer.features
        present = set()
        if len(features):
            exterior = features["role"].astype(str).isin([EXTERIOR, HOLE])
            present = set(features.loc[exterior, "id"].astype(str))
        gone = self._shown_ids - present
        if gone:
            self._shown_ids -= gone
            self.on_user_delete(gone)

    # --- constant on-screen outline width ---------------------------------------------------
    def _camera(self):
        return camera(self.viewer)

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
