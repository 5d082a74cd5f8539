"""The probability overlay: one napari Image layer per (slide, model) analysis.

The layer shows :attr:`ProbabilityMap.values` as they are, NaN included: napari draws NaN pixels
transparent, so cells never analysed show the slide beneath, while analysed cells with a low
probability are faintly tinted (a pathologist must tell "looked at, negative" from "not looked
at"): every colormap fades in, from 15 % opacity at 0 to opaque at 0.6, so the H&E under a large
negative area stays readable, and a floor can hide low probabilities altogether. The contours take
the colour that stands out most against the chosen colormap (:func:`contour_color`).
Its scale and translate come from the map's :class:`~napari_metastasis.slides.grid.PatchGrid` placed in the
slide layer's frame (:meth:`SlideFrame.raster_kwargs`), which puts every cell exactly over the
slide pixels its patch was read from; each cell is drawn as a few pixels so that the image ends at
the slide's edge (:meth:`PatchGrid.display_raster`) instead of a whole patch past it.

While a run fills the map, :meth:`ProbabilityOverlay.refresh` renders again only the chunks
(:data:`CHUNK_CELLS` cells a side) whose cells changed since the last refresh, into the layer's
own array, and leaves the layer alone (no canvas redraw) when none did: a whole-slide map has
~100,000 cells, and a batch changes a few dozen of them (issue 21, D7).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_metastasis._napari.colormaps import DEFAULT_FLOOR, DEFAULT_OPACITY, colormap_for
from napari_metastasis._napari.helpers import LazyLayer
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.slides.grid import DisplayRaster
from napari_metastasis.widgets.frame import SlideFrame

#: The overlay draws each cell as pixels of about this many µm (so it ends within half of one of
#: them from the slide's edge), with at most this many pixels in all (redraws stay cheap).
RASTER_UM = 4.0
RASTER_PIXELS = 1_500_000
#: The overlay is refreshed by square chunks of this many cells a side (only changed ones).
CHUNK_CELLS = 32


def changed_chunks(
    values: np.ndarray, shown: np.ndarray, size: int = CHUNK_CELLS
) -> list[tuple[slice, slice]]:
    """(rows, cols) slices of the ``size`` × ``size`` chunks of cells where ``values`` differ
    from ``shown`` (NaN equals NaN)."""
    changed = (values != shown) & ~(np.isnan(values) & np.isnan(shown))
    if not changed.any():
        return []
    rows, cols = changed.shape
    padded = np.zeros((-(-rows // size) * size, -(-cols // size) * size), dtype=bool)
    padded[:rows, :cols] = changed
    blocks = padded.reshape(padded.shape[0] // size, size, padded.shape[1] // size, size)
    flags = blocks.any(axis=(1, 3))
    return [
        (slice(r * size, min(rows, (r + 1) * size)), slice(c * size, min(cols, (c + 1) * size)))
        for r, c in zip(*np.nonzero(flags), strict=True)
    ]


class ProbabilityOverlay(LazyLayer):
    """Keeps an Image layer in step with a :class:`ProbabilityMap` that fills while it is shown.

    The map is the single source of truth; the layer may be deleted by the user at any time, and
    :meth:`refresh` then adds it again rather than failing.
    """

    def __init__(
        self, viewer: Any, prob_map: ProbabilityMap, name: str, frame: SlideFrame | None = None
    ) -> None:
        super().__init__(viewer, name)
        self.prob_map = prob_map
        self.frame = frame or SlideFrame.from_grid(prob_map.grid)
        self.colormap = "metastasis"
        self.floor = DEFAULT_FLOOR
        self.opacity = DEFAULT_OPACITY
        #: the map's values as the layer shows them, and the layer data array they were drawn
        #: into (a refresh into any other array draws the whole map)
        self._shown: np.ndarray | None = None
        self._shown_in: np.ndarray | None = None
        #: how many chunks the last refresh rendered again (for checks and the benchmark)
        self.last_chunks = 0

    @property
    def raster(self) -> DisplayRaster:
        """How the map is drawn: a few pixels per cell, cut at the slide's edge."""
        return self.prob_map.grid.display_raster(max_pixels=RASTER_PIXELS, target_um=RASTER_UM)

    def image(self) -> np.ndarray:
        """The layer's data for the map's current values (a new array: the engine keeps writing
        into the map); they become the values the layer shows."""
        values = self.prob_map.values.copy()
        image = self.raster.render(values)
        self._shown, self._shown_in = values, image
        return image

    def cell_values(self) -> np.ndarray:
        """The (rows, cols) values the layer shows, one per cell (for checks)."""
        raster, (rows, cols) = self.raster, self.prob_map.grid.shape
        pick = np.ix_(raster.cell_pixels(0, rows), raster.cell_pixels(1, cols))
        return np.asarray(self.layer.data)[pick]

    def build(self) -> Any:
        from napari.layers import Image

        return Image(
            self.image(),
            name=self.name,
            colormap=colormap_for(self.colormap, self.floor),
            contrast_limits=(0.0, 1.0),
            opacity=self.opacity,
            visible=self.visible,
            blending="translucent",
            interpolation2d="nearest",
            metadata={"probability_map": True},
            **self.frame.raster_kwargs(self.raster),
            **self.frame.layer_kwargs(),
        )

    def refresh(self) -> bool:
        """Show the map's current values: the chunks whose cells changed since the last refresh
        are rendered again into the layer's array and nothing else; when none changed the layer
        is left alone (napari draws nothing). Returns whether the layer changed."""
        layer = self.layer
        data = layer.data
        raster = self.raster
        values = self.prob_map.values
        shown = self._shown
        if (
            shown is None
            or data is not self._shown_in
            or not isinstance(data, np.ndarray)
            or data.shape != raster.shape
            or not data.flags.writeable
            or shown.shape != values.shape
        ):
            layer.data = self.image()
            self.last_chunks = -1  # the whole map
        else:
            chunks = changed_chunks(values, shown)
            self.last_chunks = len(chunks)
            if not chunks:
                return False
            f = raster.factor
            for rows, cols in chunks:
                ya, yb, y_cut = raster.pixel_range(0, rows.start, rows.stop)
                xa, xb, x_cut = raster.pixel_range(1, cols.start, cols.stop)
                block = values[rows, cols]
                if f > 1:
                    block = np.repeat(np.repeat(block, f, axis=0), f, axis=1)
                data[ya:yb, xa:xb] = block[y_cut : y_cut + yb - ya, x_cut : x_cut + xb - xa]
                shown[rows, cols] = values[rows, cols]
            try:  # the layer's extent is unchanged: napari need not work out the dims again
                layer.refresh(extent=False)
            except TypeError:  # a napari without refresh's keywords
                layer.refresh()
        if tuple(layer.contrast_limits) != (0.0, 1.0):
            layer.contrast_limits = (0.0, 1.0)
        return True

    def set_map(self, prob_map: ProbabilityMap, frame: SlideFrame | None = None) -> None:
        """Show another map (e.g. on a new grid) in the same layer."""
        self.prob_map = prob_map
        if frame is not None:
            self.frame = frame
        if self.is_shown():
            placement = self.frame.raster_kwargs(self.raster)
            self._layer.data = self.image()
            self._layer.scale = placement["scale"]
            self._layer.translate = placement["translate"]

    def set_colormap(self, name: str, floor: float | None = None) -> None:
        floor = self.floor if floor is None else float(floor)
        if (name, floor) == (self.colormap, self.floor) and self.is_shown():
            return
        self.colormap, self.floor = name, floor
        if self.is_shown():
            self._layer.colormap = colormap_for(name, floor)

    def set_opacity(self, opacity: float) -> None:
        self.opacity = float(opacity)
        if self.is_shown():
            self._layer.opacity = self.opacity
