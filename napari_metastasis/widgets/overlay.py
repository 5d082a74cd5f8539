"""The probability overlay: one napari Image layer per (slide, model) analysis.

The layer shows :attr:`ProbabilityMap.values` as they are, NaN included: napari draws NaN pixels
transparent, so cells never analysed show the slide beneath, while analysed cells with a low
probability are tinted (a pathologist must tell "looked at, negative" from "not looked at").
Its scale and translate come from the map's :class:`~napari_metastasis.grid.PatchGrid` placed in the
slide layer's frame (:meth:`SlideFrame.overlay_kwargs`), which puts every cell exactly over the
slide pixels its patch was read from.
"""

from __future__ import annotations

import numpy as np
from napari.utils.colormaps import Colormap

from .._napari.helpers import LazyLayer
from ..probability import ProbabilityMap
from .frame import SlideFrame

#: Blue (analysed, unlikely) through yellow to red (likely tumour). Low values are half see-through
#: so the tissue stays readable under a large negative area; high values are nearly opaque.
METASTASIS_COLORMAP = Colormap(
    colors=np.array(
        [
            [0.15, 0.35, 1.00, 0.35],
            [0.10, 0.80, 0.90, 0.45],
            [1.00, 0.90, 0.10, 0.75],
            [1.00, 0.05, 0.05, 0.95],
        ]
    ),
    controls=np.array([0.0, 0.35, 0.6, 1.0]),
    name="metastasis",
    display_name="metastasis (blue→red)",
)

#: Colormaps offered in the widget (napari names, plus ours first).
COLORMAPS = ("metastasis", "inferno", "viridis", "turbo", "magma")

DEFAULT_OPACITY = 0.7
#: Probabilities below this are not drawn (0: every analysed patch is tinted).
DEFAULT_FLOOR = 0.0


def colormap_for(name: str) -> Colormap | str:
    return METASTASIS_COLORMAP if name == "metastasis" else name


class ProbabilityOverlay(LazyLayer):
    """Keeps an Image layer in step with a :class:`ProbabilityMap` that fills while it is shown.

    The map is the single source of truth; the layer may be deleted by the user at any time, and
    :meth:`refresh` then adds it again rather than failing.
    """

    def __init__(
        self, viewer, prob_map: ProbabilityMap, name: str, frame: SlideFrame | None = None
    ):
        super().__init__(viewer, name)
        self.prob_map = prob_map
        self.frame = frame or SlideFrame.from_grid(prob_map.grid)
        self.colormap = "metastasis"
        self.opacity = DEFAULT_OPACITY

    def _create(self):
        return self.viewer.add_image(
            self.prob_map.values.copy(),
            name=self.name,
            colormap=colormap_for(self.colormap),
            contrast_limits=(0.0, 1.0),
            opacity=self.opacity,
            visible=self.visible,
            blending="translucent",
            interpolation2d="nearest",
            metadata={"probability_map": True},
            **self.frame.overlay_kwargs(self.prob_map.grid),
            **self.frame.layer_kwargs(),
        )

    def refresh(self) -> None:
        """Show the map's current values (a copy: the engine keeps writing into the original)."""
        layer = self.layer
        layer.data = self.prob_map.values.copy()
        if tuple(layer.contrast_limits) != (0.0, 1.0):
            layer.contrast_limits = (0.0, 1.0)

    def set_map(self, prob_map: ProbabilityMap, frame: SlideFrame | None = None) -> None:
        """Show another map (e.g. on a new grid) in the same layer."""
        self.prob_map = prob_map
        if frame is not None:
            self.frame = frame
        if self.is_shown():
            placement = self.frame.overlay_kwargs(prob_map.grid)
            self._layer.data = prob_map.values.copy()
            self._layer.scale = placement["scale"]
            self._layer.translate = placement["translate"]

    def set_colormap(self, name: str) -> None:
        self.colormap = name
        if self.is_shown():
            self._layer.colormap = colormap_for(name)

    def set_opacity(self, opacity: float) -> None:
        self.opacity = float(opacity)
        if self.is_shown():
            self._layer.opacity = self.opacity
