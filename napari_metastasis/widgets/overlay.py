"""The probability overlay: one napari Image layer per (slide, model) analysis.

The layer shows :attr:`ProbabilityMap.values` as they are, NaN included: napari draws NaN pixels
transparent, so cells never analysed show the slide beneath, while analysed cells with a low
probability are faintly tinted (a pathologist must tell "looked at, negative" from "not looked
at"): every colormap fades in, from 15 % opacity at 0 to opaque at 0.6, so the H&E under a large
negative area stays readable, and a floor can hide low probabilities altogether. The contours take
the colour that stands out most against the chosen colormap (:func:`contour_color`).
Its scale and translate come from the map's :class:`~napari_metastasis.grid.PatchGrid` placed in the
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
from napari.utils.colormaps import Colormap

from .._napari.helpers import LazyLayer
from ..grid import DisplayRaster
from ..probability import ProbabilityMap
from .frame import SlideFrame

#: Blue (analysed, unlikely) through cyan and yellow to red (likely tumour).
METASTASIS_COLORS = Colormap(
    colors=np.array(
        [
            [0.15, 0.35, 1.00, 1.0],
            [0.10, 0.80, 0.90, 1.0],
            [1.00, 0.90, 0.10, 1.0],
            [1.00, 0.05, 0.05, 1.0],
        ]
    ),
    controls=np.array([0.0, 0.35, 0.6, 1.0]),
    name="metastasis-colors",
)

#: Colormaps offered in the widget (napari names, plus ours first).
COLORMAPS = ("metastasis", "inferno", "viridis", "turbo", "magma")

DEFAULT_OPACITY = 0.5
#: Probabilities below this are not drawn (0: every analysed patch is tinted, faintly).
DEFAULT_FLOOR = 0.0
#: Every colormap fades in: opacity FADE[0] at probability 0, rising linearly to 1 at FADE[1].
#: A negative area is a faint tint over readable H&E; a likely tumour is opaque colour.
FADE = (0.15, 0.6)
#: The overlay draws each cell as pixels of about this many µm (so it ends within half of one of
#: them from the slide's edge), with at most this many pixels in all (redraws stay cheap).
RASTER_UM = 4.0
RASTER_PIXELS = 1_500_000
#: The overlay is refreshed by square chunks of this many cells a side (only changed ones).
CHUNK_CELLS = 32
#: Samples of a faded colormap (napari interpolates linearly between them).
SAMPLES = 256

#: Contour colours to choose from, and colours of H&E they must also stand out against.
CONTOUR_CANDIDATES = ("#00ff66", "#00ffff", "#ff00ff", "#ffffff", "#ffff00", "#ff0000", "#0044ff")
HE_COLORS = np.array([[0.92, 0.60, 0.75], [0.45, 0.25, 0.60], [0.95, 0.93, 0.95]])


def base_colors(name: str, values: np.ndarray) -> np.ndarray:
    """(N, 4) RGBA of a colormap (ours or napari's) at ``values`` in [0, 1], opaque."""
    from napari.utils.colormaps import ensure_colormap

    cmap = METASTASIS_COLORS if name == "metastasis" else ensure_colormap(name)
    rgba = np.asarray(cmap.map(np.asarray(values, dtype=np.float64)), dtype=np.float64)
    rgba[:, 3] = 1.0
    return rgba


def fade_alpha(values: np.ndarray, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Opacity of each probability: FADE[0] at 0 rising to 1 at FADE[1]; 0 below ``floor``."""
    low, full = FADE
    alpha = low + (1.0 - low) * np.clip(np.asarray(values, dtype=np.float64) / full, 0.0, 1.0)
    alpha[np.asarray(values) < floor] = 0.0
    return alpha


def colormap_for(name: str, floor: float = DEFAULT_FLOOR) -> Colormap:
    """The colormap ``name`` with its opacity fading in (and cut below ``floor``)."""
    values = np.linspace(0.0, 1.0, SAMPLES)
    if floor > 0:  # a sharp step at the floor, not a ramp between two samples
        values = np.unique(np.concatenate([values, [max(0.0, floor - 1e-6), floor]]))
    rgba = base_colors(name, values)
    rgba[:, 3] = fade_alpha(values, floor)
    return Colormap(
        colors=rgba,
        controls=values,
        name=f"{name} (fades in, floor {floor:.2f})",
        display_name=name,
    )


def contour_color(name: str, threshold: float = 0.5, exclude: tuple[str, ...] = ()) -> str:
    """The outline colour that stands out most against the colormap around and above the
    threshold (what lies on both sides of a contour) and against H&E (``exclude``: colours
    already used, e.g. the contours' own when choosing the highlight's)."""
    values = np.linspace(max(0.0, threshold - 0.2), 1.0, 32)
    backdrop = np.vstack([base_colors(name, values)[:, :3], HE_COLORS])
    best, best_distance = CONTOUR_CANDIDATES[0], -1.0
    for candidate in (c for c in CONTOUR_CANDIDATES if c not in exclude):
        rgb = np.array([int(candidate[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        distance = float(np.min(np.linalg.norm(backdrop - rgb, axis=1)))
        if distance > best_distance + 1e-9:
            best, best_distance = candidate, distance
    return best


#: The comparison with a reference colours outlines cyan (hit), magenta (false positive) and white
#: (isolated tumour cells):
#: no other outline may take these colours, or magenta would mean two things on screen.
COMPARISON_COLORS = ("#00ffff", "#ff00ff", "#ffffff")


def outline_colors(name: str, threshold: float = 0.5) -> tuple[str, str]:
    """(contour colour, highlight colour) for a colormap: both stand out, and from each other,
    and neither is one of the comparison's colours (:data:`COMPARISON_COLORS`)."""
    contour = contour_color(name, threshold, exclude=COMPARISON_COLORS)
    highlight = contour_color(name, threshold, exclude=(contour, *COMPARISON_COLORS))
    return contour, highlight


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
        f = self.raster.factor
        return np.asarray(self.layer.data)[::f, ::f]

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
                target = data[rows.start * f : rows.stop * f, cols.start * f : cols.stop * f]
                block = values[rows, cols]
                if f > 1:
                    block = np.repeat(np.repeat(block, f, axis=0), f, axis=1)
                target[...] = block[: target.shape[0], : target.shape[1]]
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
