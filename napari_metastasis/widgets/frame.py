"""Where the slide layer sits in napari's world: level-0 pixels <-> world coordinates.

The reader gives a slide layer scale = (mpp_y, mpp_x) and no translate, so world units are µm and
this is exactly :class:`~napari_metastasis.slides.grid.PatchGrid`'s px <-> µm conversion. The widget still
converts through the layer's actual transform, so the overlay, the contours and "what is in view"
stay on the slide when it is not: an uncalibrated slide (scale 1, world = pixels, while the engine
may fall back on the objective power for its grid), or a layer the user has moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_metastasis.slides.grid import DisplayRaster, PatchGrid


@dataclass(frozen=True)
class SlideFrame:
    """Level-0 size of a slide and the layer transform world = level0 * scale + translate."""

    width: int  # level-0 px
    height: int
    scale_yx: tuple[float, float] = (1.0, 1.0)  # world units per level-0 px
    translate_yx: tuple[float, float] = (0.0, 0.0)
    units: tuple[str, str] | None = None  # the slide layer's units (µm when calibrated)

    @classmethod
    def from_layer(cls, layer: Any) -> SlideFrame:
        """Frame of a slide Image layer (multiscale or not, RGB)."""
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        height, width = data.shape[:2]
        scale = tuple(float(s) for s in layer.scale[-2:])
        translate = tuple(float(t) for t in layer.translate[-2:])
        units = getattr(layer, "units", None)
        units = tuple(str(u) for u in units[-2:]) if units is not None else None
        return cls(
            int(width), int(height), (scale[0], scale[1]), (translate[0], translate[1]), units
        )

    @classmethod
    def from_grid(cls, grid: PatchGrid) -> SlideFrame:
        """The frame the reader gives a calibrated slide: world = µm of the grid."""
        return cls(grid.width, grid.height, (grid.mpp_y, grid.mpp_x), units=("µm", "µm"))

    def layer_kwargs(self) -> dict:
        """Units for layers drawn over the slide (napari wants them consistent across layers)."""
        return {"units": self.units} if self.units else {}

    # --- points --------------------------------------------------------------------------------
    def to_world(self, xy_px: np.ndarray) -> np.ndarray:
        """(N, 2) level-0 (x, y) -> (N, 2) world (row, col) = (y, x)."""
        xy = np.asarray(xy_px, dtype=np.float64).reshape(-1, 2)
        return xy[:, ::-1] * self.scale_yx + self.translate_yx

    def to_level0(self, yx_world: np.ndarray) -> np.ndarray:
        """(N, 2) world (row, col) -> (N, 2) level-0 (x, y)."""
        yx = np.asarray(yx_world, dtype=np.float64).reshape(-1, 2)
        return ((yx - self.translate_yx) / self.scale_yx)[:, ::-1]

    def length_to_level0(self, world: float) -> tuple[float, float]:
        """A world length (e.g. a field size in µm) in level-0 px along (x, y)."""
        return world / self.scale_yx[1], world / self.scale_yx[0]

    # --- the probability image -------------------------------------------------------------------
    def overlay_kwargs(self, grid: PatchGrid) -> dict:
        """Scale and translate that put a map on ``grid`` over this slide layer.

        Cell (r, c)'s centre (where napari puts the pixel) is at level-0 (c, r) * step (a centred
        grid; a corner grid's is half a patch further). With the reader's frame this is exactly
        ``grid.layer_scale`` / ``grid.layer_translate``.
        """
        step_x, step_y = grid.step_level0
        cx, cy = grid.cell_centres_level0(np.zeros((1, 2)))[0]
        sy, sx = self.scale_yx
        ty, tx = self.translate_yx
        return {
            "scale": (step_y * sy, step_x * sx),
            "translate": (cy * sy + ty, cx * sx + tx),
        }

    def raster_kwargs(self, raster: DisplayRaster) -> dict:
        """Scale and translate that put a :class:`DisplayRaster` image of a map over this layer
        (napari puts pixel centres at translate + index * scale)."""
        py, px = raster.pixel_level0
        oy, ox = raster.origin_level0
        sy, sx = self.scale_yx
        ty, tx = self.translate_yx
        return {
            "scale": (py * sy, px * sx),
            "translate": ((oy + py / 2) * sy + ty, (ox + px / 2) * sx + tx),
        }
