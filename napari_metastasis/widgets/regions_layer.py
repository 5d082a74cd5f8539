"""Detected regions as a napari Shapes layer that the annotation exporters understand.

The layer follows :mod:`napari_metastasis.annotations.layers`' convention, so the annotation panel
exports it as it is: every ring is a closed ``path`` (edges only, and fast to redraw while the
threshold slider moves), the features table groups rings by region ``id`` with a ``role``
(``exterior`` or ``hole``), and carries ``classification`` and the measurements ``predict`` writes
(:data:`~napari_metastasis.maps.contours.REGION_MEASUREMENTS`: ``area_um2``, ``max_prob``,
``mean_prob``, ``patches``, ``threshold``) per region; ``id`` is the region's UUID, as in QuPath.
The layer is refilled in place when the threshold moves, so the user's
settings on it survive. Outlines keep a constant width on screen: napari measures edge width in
world units (µm), which would make them vanish at whole-slide zoom and fatten at cell level.
Candidates the deposit decision did not confirm are drawn in grey, thinner, whatever their label
(napari cannot dash an outline): they make no verdict, and must not look like deposits.

Contours are computed again and again while a run fills the map; most regions come back exactly
as they were. :meth:`RegionsLayer.show` therefore changes only the rings that changed (removes
the rings no region has any more, adds the new ones, rewrites the features table) and restyles
only outlines whose colour or width changed: napari rebuilds its meshes, thumbnail and canvas for
every change of a Shapes layer, which on a busy laptop took a fifth of a second per update
(issue 21, D7). What the rings, features, colours and widths are is :mod:`.region_shapes`' (no
napari); this module keeps the layer in step with them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from napari_metastasis._napari.helpers import LazyLayer, camera
from napari_metastasis.annotations.layers import EXTERIOR, HOLE, shapes_layer_data
from napari_metastasis.widgets.frame import SlideFrame
from napari_metastasis.widgets.region_shapes import (
    DEFAULT_CLASSIFICATION,
    EDGE_SCREEN_PX,
    HIGHLIGHT_COLOR,
    TUMOUR_DISPLAY_COLOR,
    display_color,
    empty_features,
    outline_colors,
    outline_widths,
    region_annotations,
    ring_key,
)


class RegionsLayer(LazyLayer):
    """Keeps a Shapes layer showing a list of regions (objects with ``polygon``, ``id``, ...)."""

    def __init__(self, viewer: Any, frame: SlideFrame, name: str) -> None:
        super().__init__(viewer, name)
        self.frame = frame
        #: called with the ids (str) of regions the user deleted in the layer itself
        self.on_user_delete: Callable[[set[str]], None] | None = None
        self._shown_ids: set[str] = set()
        #: ids of the regions shown that the deposit decision did not confirm
        self.unconfirmed: set[str] = set()
        #: outline colour of tumour regions
        self.tumour_color = TUMOUR_DISPLAY_COLOR
        #: region id -> outline colour, over the classification's (e.g. a reference comparison)
        self.region_colors: dict[str, str] = {}
        self.highlighted: str | None = None
        #: outline colour of the highlighted region (set to stand out from the others)
        self.highlight_color = HIGHLIGHT_COLOR
        self._updating = False
        self._zoom_connected = False
        #: one key per row of the layer (its ring's type and vertices), as shown by :meth:`show`
        self._row_keys: list[bytes] = []

    @property
    def mpp(self) -> tuple[float, float]:
        """What the annotation convention calls mpp: world units per level-0 px, (y, x)."""
        return self.frame.scale_yx

    def build(self) -> Any:
        from napari.layers import Shapes

        return Shapes(
            name=self.name,
            ndim=2,
            face_color="transparent",
            edge_color=display_color(DEFAULT_CLASSIFICATION, self.tumour_color),
            edge_width=self._edge_width(),
            opacity=1.0,  # outlines in their own colour, not blended into the overlay
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

    def place(self, frame: SlideFrame) -> None:
        """Draw over a slide layer in ``frame`` (its shapes are redrawn by the next :meth:`show`)."""
        self.frame = frame
        if self.is_shown():
            self._layer.translate = frame.translate_yx
            self._layer.metadata["mpp"] = list(self.mpp)

    def _attached(self, layer: Any) -> None:
        layer.events.data.connect(self._on_data_changed)
        self._connect_zoom()

    def show(
        self, regions: Sequence, labels: Sequence[str], threshold: float | None = None
    ) -> None:
        """Show ``regions`` (one label per region): only the rings that changed are removed or
        added; the features table is rewritten; outlines are restyled where they changed."""
        layer = self.layer
        self.unconfirmed = {str(r.uid) for r in regions if not getattr(r, "confirmed", True)}
        built = shapes_layer_data(
            region_annotations(regions, labels, threshold), self.mpp, name=self.name
        )
        # napari redraws a Shapes layer's thumbnail after each change (removed rings, added rings,
        # colours, widths: 20-30 ms each with hundreds of outlines); drawn once, at the end
        with layer.block_thumbnail_update():
            self._show_built(layer, built)
            self._shown_ids = {str(r.uid) for r in regions}
            self.highlighted = None
            self.restyle()
        layer.refresh(data_displayed=False, highlight=False, extent=False)  # the thumbnail only

    def _show_built(self, layer: Any, built: Any) -> None:
        self._updating = True
        try:
            if built is None:
                if layer.nshapes:
                    layer.selected_data = set()
                    layer.data = []
                layer.features = empty_features()
                self._row_keys = []
            else:
                data, kwargs, _ = built
                keys = [ring_key(d, t) for d, t in zip(data, kwargs["shape_type"], strict=True)]
                order = self._update_rings(layer, data, kwargs["shape_type"], keys)
                features = kwargs["features"].iloc[order].reset_index(drop=True)
                layer.features = features
                layer.feature_defaults = kwargs["feature_defaults"]
                layer.metadata.update(kwargs["metadata"])
                self._row_keys = [keys[i] for i in order]
        finally:
            self._updating = False

    def _update_rings(
        self, layer: Any, data: list, shape_types: list[str], keys: list[bytes]
    ) -> list[int]:
        """Make the layer's rings those of ``keys``, touching only the ones that changed;
        returns, for each row of the layer afterwards, the index of its ring in ``keys``."""
        if len(self._row_keys) != layer.nshapes:  # edited with napari's tools: start again
            if layer.nshapes:
                layer.selected_data = set()
                layer.data = []
            self._row_keys = []
        wanted: defaultdict[bytes, list[int]] = defaultdict(list)
        for index, key in enumerate(keys):
            wanted[key].append(index)
        order: list[int] = []
        gone: set[int] = set()
        for row, key in enumerate(self._row_keys):
            if wanted.get(key):
                order.append(wanted[key].pop(0))
            else:
                gone.add(row)
        new = sorted(i for indices in wanted.values() for i in indices)
        if gone:
            layer.selected_data = gone
            layer.remove_selected()
        elif layer.selected_data:
            layer.selected_data = set()
        if new:
            width = self._edge_width()
            layer.add(
                [data[i] for i in new],
                shape_type=[shape_types[i] for i in new],
                edge_width=[width] * len(new),
                edge_color=[display_color(DEFAULT_CLASSIFICATION, self.tumour_color)] * len(new),
                face_color="transparent",
            )
        return order + new

    # --- colours and widths ------------------------------------------------------------------

    def _colors(self, features: pd.DataFrame) -> list[str]:
        return outline_colors(
            features["id"].astype(str),
            features["classification"],
            highlighted=self.highlighted,
            region_colors=self.region_colors,
            unconfirmed=self.unconfirmed,
            tumour_color=self.tumour_color,
            highlight_color=self.highlight_color,
        )

    def _widths(self, features: pd.DataFrame | None = None) -> list[float]:
        ids = (self._layer.features if features is None else features)["id"].astype(str)
        return outline_widths(ids, self._edge_width(), self.highlighted, self.unconfirmed)

    def restyle(self) -> None:
        """Redraw the outlines' colours and widths where they changed (after a colour or
        highlight change, or new regions)."""
        if not self.is_shown() or not self._layer.nshapes:
            return
        from napari.utils.colormaps.standardize_color import transform_color

        layer = self._layer
        colors = transform_color(self._colors(layer.features))
        widths = self._widths()
        self._updating = True
        try:
            if not np.allclose(np.asarray(layer.edge_color), colors):
                layer.edge_color = colors
            if not np.allclose(np.asarray(layer.edge_width, dtype=float), widths):
                layer.edge_width = widths
        finally:
            self._updating = False

    def set_colors(self, tumour: str, highlight: str) -> None:
        if (tumour, highlight) != (self.tumour_color, self.highlight_color):
            self.tumour_color, self.highlight_color = tumour, highlight
            self.restyle()

    def set_region_colors(self, colors: dict[str, str]) -> None:
        self.region_colors = {str(k): v for k, v in colors.items()}
        self.restyle()

    def rows_of(self, region_id: Any) -> list[int]:
        """Shape indices (exterior and holes) of one region, by its ``uid``."""
        if not self.is_shown() or "id" not in self._layer.features:
            return []
        ids = self._layer.features["id"].astype(str).to_numpy()
        return np.flatnonzero(ids == str(region_id)).tolist()

    def highlight(self, region_id: Any) -> None:
        """Make one region stand out in any mode: a wider outline in its own colour (napari's
        selection box shows only in select mode); its shapes are also selected."""
        self.highlighted = None if region_id is None else str(region_id)
        self.restyle()
        rows = self.rows_of(region_id) if region_id is not None else []
        if rows:
            self._layer.selected_data = set(rows)

    def roles(self) -> list[str]:
        return list(self._layer.features["role"]) if self.is_shown() else []

    def remove(self) -> None:
        self._disconnect_zoom()
        super().remove()

    # --- regions deleted with napari's own tools ---------------------------------------------
    def _on_data_changed(self, event: Any = None) -> None:
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
    def _camera(self) -> Any:
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

    def _on_zoom(self, event: Any = None) -> None:
        if self.is_shown() and self._layer.nshapes:
            widths = self._widths()
            if not np.allclose(self._layer.edge_width, widths, rtol=0.05, atol=0):
                self._updating = True
                try:
                    self._layer.edge_width = widths
                finally:
                    self._updating = False
