"""The patch grid: the one place that converts between level-0 pixels, µm and patch cells.

A grid depends only on the slide's size and resolution and on the model's patch size and spacing.
Cell (row, col) is centred on (row, col) x step µm from the slide's top-left corner
(``anchor="centre"``): the first row and column reach half a patch past the slide's top and left
edges, where the slide is read as white.
That is the pixel convention of OME-NGFF and napari (pixel i's centre at i x scale), so a map needs
no translation, and readers that drop one (napari-ome-zarr 0.10) still place it right. Maps written
before had their patches start at the slide's corner (``anchor="corner"``); their stored grid says
so and they keep their geometry. Every analysis of the same slide with the same
model therefore lands on the same cells, which is what lets the viewer reuse earlier results when a
new region overlaps an old one, and lets probability maps from different runs be merged cell by cell.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True)
class DisplayRaster:
    """A map drawn as an image: each cell ``factor`` × ``factor`` pixels, cut at the slide's edge.

    ``pixel_level0`` (y, x) is a pixel's size and ``origin_level0`` (y, x) the top-left corner of
    pixel (0, 0), in level-0 px.
    """

    factor: int
    shape: tuple[int, int]
    pixel_level0: tuple[float, float]
    origin_level0: tuple[float, float]
    skip: tuple[int, int] = (0, 0)  # (y, x) pixels of the first cells dropped before the edge

    def render(self, values: np.ndarray) -> np.ndarray:
        """The image of a (rows, cols) map: cells repeated, then cut at the slide's edges."""
        f = self.factor
        image = values if f == 1 else np.repeat(np.repeat(values, f, axis=0), f, axis=1)
        (y0, x0), (h, w) = self.skip, self.shape
        return np.ascontiguousarray(image[y0 : y0 + h, x0 : x0 + w])

    def pixel_range(self, axis: int, start: int, stop: int) -> tuple[int, int, int]:
        """The image pixels [a, b) along ``axis`` (0: y, 1: x) that show cells [start, stop), and
        how many pixels of cell ``start`` were cut before ``a`` (by the slide's edge)."""
        first = start * self.factor - self.skip[axis]
        a, b = max(first, 0), min(stop * self.factor - self.skip[axis], self.shape[axis])
        return a, b, a - first

    def cell_pixels(self, axis: int, cells: int) -> np.ndarray:
        """One image pixel of each of ``cells`` cells along ``axis``: its first one shown."""
        return np.maximum(np.arange(cells) * self.factor - self.skip[axis], 0)


@dataclass(frozen=True)
class PatchGrid:
    """Square patches of ``patch_px`` pixels at ``spacing_um`` µm/px, every ``stride_um`` µm.

    ``mpp_x``/``mpp_y`` are the slide's level-0 µm per pixel (1.0 for an uncalibrated slide, whose
    "µm" are then pixels). Cell (row, col) covers level-0 box ``cell_box(row, col)``; ``anchor``
    says where cell (0, 0) lies (see the module notes).
    """

    width: int  # slide level-0 width, px
    height: int  # slide level-0 height, px
    mpp_x: float
    mpp_y: float
    patch_px: int
    spacing_um: float
    stride_um: float | None = None  # None: patches tile the slide without overlap
    anchor: Literal["centre", "corner"] = "centre"

    def __post_init__(self) -> None:
        if self.patch_px <= 0 or self.spacing_um <= 0 or self.mpp_x <= 0 or self.mpp_y <= 0:
            raise ValueError(f"invalid grid parameters: {self}")
        if self.stride_um is not None and self.stride_um <= 0:
            raise ValueError(f"stride must be positive, got {self.stride_um}")
        if self.anchor not in ("centre", "corner"):
            raise ValueError(f"grid anchor must be 'centre' or 'corner', got {self.anchor!r}")

    # --- sizes ----------------------------------------------------------------------------
    @property
    def patch_um(self) -> float:
        """Side of one patch in µm."""
        return self.patch_px * self.spacing_um

    @property
    def step_um(self) -> float:
        """Distance between neighbouring patch origins in µm."""
        return self.stride_um if self.stride_um is not None else self.patch_um

    @property
    def patch_level0(self) -> tuple[float, float]:
        """(width, height) of one patch in level-0 pixels (not necessarily whole numbers)."""
        return self.patch_um / self.mpp_x, self.patch_um / self.mpp_y

    @property
    def step_level0(self) -> tuple[float, float]:
        return self.step_um / self.mpp_x, self.step_um / self.mpp_y

    @property
    def origin_level0(self) -> tuple[float, float]:
        """Level-0 (x, y) of the top-left corner of cell (0, 0)'s patch (negative when centred)."""
        if self.anchor == "corner":
            return 0.0, 0.0
        pw, ph = self.patch_level0
        return -pw / 2, -ph / 2

    @property
    def footprint_origin_level0(self) -> tuple[float, float]:
        """Level-0 (x, y) of the top-left corner of cell (0, 0)'s step square: the square of one
        step around its patch's centre that the cell stands for in regions and pictures."""
        (ox, oy), (pw, ph), (sx, sy) = self.origin_level0, self.patch_level0, self.step_level0
        return ox + (pw - sx) / 2, oy + (ph - sy) / 2

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols): a centred grid has every cell whose step square overlaps the slide (so
        every slide pixel has a cell); a corner grid every cell whose patch starts inside it."""
        sx, sy = self.step_level0
        if self.anchor == "corner":
            return max(1, math.ceil(self.height / sy)), max(1, math.ceil(self.width / sx))
        fx, fy = self.footprint_origin_level0
        # a square that would only touch the edge (up to float rounding) is not a cell
        return (
            max(1, math.ceil((self.height - fy) / sy - 1e-9)),
            max(1, math.ceil((self.width - fx) / sx - 1e-9)),
        )

    @property
    def read_downsample(self) -> float:
        """How much coarser than level 0 the model sees: pick a pyramid level at most this coarse."""
        return self.spacing_um / max(self.mpp_x, self.mpp_y)

    # --- cells <-> level-0 pixels -----------------------------------------------------------
    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Level-0 (x, y, width, height) of a cell's patch on the slide, rounded to whole pixels.

        The first and last rows and columns are clipped to the slide's edges: a patch there is
        read whole (the model sees its full field of view, padded with white beyond the scan),
        but what it describes ends where the slide ends. :meth:`read_boxes` gives the unclipped
        boxes the engine reads.
        """
        x, y, w, h = (int(v) for v in self.cell_boxes(np.array([[row, col]]))[0])
        return x, y, w, h

    def read_boxes(self, cells: np.ndarray) -> np.ndarray:
        """(N, 4) int64 level-0 (x, y, width, height) of the cells' whole patches (what is read;
        the first and last rows and columns reach past the slide's edges)."""
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
        sx, sy = self.step_level0
        pw, ph = self.patch_level0
        ox, oy = self.origin_level0
        x0 = np.rint(cells[:, 1] * sx + ox)
        y0 = np.rint(cells[:, 0] * sy + oy)
        w = np.rint(cells[:, 1] * sx + ox + pw) - x0
        h = np.rint(cells[:, 0] * sy + oy + ph) - y0
        return np.stack([x0, y0, w, h], axis=1).astype(np.int64)

    def cell_boxes(self, cells: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`cell_box` for an (N, 2) array of (row, col): (N, 4) int64, clipped to
        the slide (what the CSV states and the overlay shows)."""
        boxes = self.read_boxes(cells)
        x1 = np.minimum(boxes[:, 0] + boxes[:, 2], self.width)
        y1 = np.minimum(boxes[:, 1] + boxes[:, 3], self.height)
        boxes[:, :2] = np.maximum(boxes[:, :2], 0)
        boxes[:, 2] = x1 - boxes[:, 0]
        boxes[:, 3] = y1 - boxes[:, 1]
        return boxes

    def cell_centres_level0(self, cells: np.ndarray) -> np.ndarray:
        """(N, 2) level-0 (x, y) of the centres of the given cells."""
        cells = np.asarray(cells, dtype=np.float64).reshape(-1, 2)
        sx, sy = self.step_level0
        pw, ph = self.patch_level0
        ox, oy = self.origin_level0
        return np.stack([cells[:, 1] * sx + ox + pw / 2, cells[:, 0] * sy + oy + ph / 2], axis=1)

    def detection_points(self, cells: np.ndarray) -> np.ndarray:
        """(N, 2) level-0 (x, y) that stand for the given cells in detection files: the centre of
        the part of each cell on the slide.

        A cell of the first or last row or column reaches past the slide's edge, so its centre may
        lie off the slide (x = 12049 on a slide 12048 px wide), where Camelyon16's ``Evaluation_FROC.py``
        indexes past its mask and crashes. Every point returned lies on the slide and floors to a
        pixel of it (0 <= x < width).
        """
        boxes = self.cell_boxes(cells).astype(np.float64)
        points = boxes[:, :2] + boxes[:, 2:] / 2
        limit = np.array([self.width, self.height], dtype=np.float64)
        return np.clip(points, 0.0, np.nextafter(limit, 0.0))

    def all_cells(self) -> np.ndarray:
        rows, cols = self.shape
        rr, cc = np.mgrid[0:rows, 0:cols]
        return np.stack([rr.ravel(), cc.ravel()], axis=1)

    def cells_in_rect(self, x: float, y: float, width: float, height: float) -> np.ndarray:
        """Cells whose patch overlaps the level-0 rectangle (clipped to the slide), row-major."""
        x1 = min(x + width, self.width)
        y1 = min(y + height, self.height)
        x, y = max(x, 0.0), max(y, 0.0)
        if x1 <= x or y1 <= y:
            return np.empty((0, 2), np.int64)
        sx, sy = self.step_level0
        pw, ph = self.patch_level0
        ox, oy = self.origin_level0
        rows, cols = self.shape
        c0 = max(0, math.floor((x - ox - pw) / sx) + 1)
        r0 = max(0, math.floor((y - oy - ph) / sy) + 1)
        c1 = min(cols, math.ceil((x1 - ox) / sx))
        r1 = min(rows, math.ceil((y1 - oy) / sy))
        if c1 <= c0 or r1 <= r0:
            return np.empty((0, 2), np.int64)
        rr, cc = np.mgrid[r0:r1, c0:c1]
        return np.stack([rr.ravel(), cc.ravel()], axis=1).astype(np.int64)

    def cells_in_geometry(self, geometry: BaseGeometry) -> np.ndarray:
        """Cells whose patch centre lies inside a level-0 polygon (holes respected)."""
        if geometry.is_empty:
            return np.empty((0, 2), np.int64)
        minx, miny, maxx, maxy = geometry.bounds
        candidates = self.cells_in_rect(minx, miny, maxx - minx, maxy - miny)
        if len(candidates) == 0:
            return candidates
        centres = self.cell_centres_level0(candidates)
        inside = shapely.contains_xy(geometry, centres[:, 0], centres[:, 1])
        return candidates[inside]

    # --- µm <-> level-0 pixels (layers are in µm, files in level-0 px) ------------------------
    def level0_to_um(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) level-0 (x, y) -> (N, 2) µm (x, y)."""
        return np.asarray(xy, dtype=np.float64) * (self.mpp_x, self.mpp_y)

    def um_to_level0(self, xy_um: np.ndarray) -> np.ndarray:
        """(N, 2) µm (x, y) -> (N, 2) level-0 (x, y)."""
        return np.asarray(xy_um, dtype=np.float64) / (self.mpp_x, self.mpp_y)

    # --- the probability image in napari ----------------------------------------------------
    @property
    def layer_scale(self) -> tuple[float, float]:
        """(y, x) µm per probability-map pixel."""
        return self.step_um, self.step_um

    @property
    def layer_translate(self) -> tuple[float, float]:
        """(y, x) µm of the centre of cell (0, 0): napari puts pixel centres at translate + i*scale.
        (0, 0) on a centred grid."""
        if self.anchor == "centre":
            return 0.0, 0.0
        return self.patch_um / 2, self.patch_um / 2

    def display_raster(self, max_pixels: int = 4_000_000, target_um: float = 2.0) -> DisplayRaster:
        """How to draw the map as an image that ends at the slide's edge.

        One image pixel per cell would run up to a whole step past the right and bottom edges
        (the last cells' patches reach past them). Each cell is drawn as ``factor`` × ``factor``
        pixels instead (about ``target_um`` µm each, at most ``max_pixels`` in all), and the
        pixels beyond the slide are dropped, so the image ends within half a pixel of the edge.
        """
        rows, cols = self.shape
        factor = max(1, math.ceil(self.step_um / target_um))
        factor = max(1, min(factor, math.isqrt(max(1, max_pixels // max(1, rows * cols)))))
        sx, sy = self.step_level0
        origin_x, origin_y = self.footprint_origin_level0  # level-0 corner of cell (0, 0)'s square
        px, py = sx / factor, sy / factor

        def skip(origin: float, size: float) -> int:
            """Pixels wholly before the slide's edge: those whose centre lies before it."""
            return max(0, min(factor - 1, math.ceil(-origin / size - 0.5)))

        def keep(n_cells: int, extent: float, origin: float, size: float, first: int) -> int:
            n = round((extent - origin) / size) - first
            total = n_cells * factor - first
            return int(min(total, max(total - factor + 1, n)))

        skip_x, skip_y = skip(origin_x, px), skip(origin_y, py)
        return DisplayRaster(
            factor=factor,
            shape=(
                keep(rows, self.height, origin_y, py, skip_y),
                keep(cols, self.width, origin_x, px, skip_x),
            ),
            pixel_level0=(py, px),
            origin_level0=(origin_y + skip_y * py, origin_x + skip_x * px),
            skip=(skip_y, skip_x),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PatchGrid:
        """The grid a map stored; one stored before grids were centred is a corner grid."""
        return cls(**{"anchor": "corner", **data})
