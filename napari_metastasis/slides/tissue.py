"""Tissue detection on a low-resolution image of the slide, so the model never sees bare glass.

Most of a lymph-node slide is empty glass; classifying it wastes time and invites false positives
on dust and scanner edges. We read a coarse version of the slide (one mask pixel is ~8 µm by
default), call a pixel *tissue* when it is stained (saturation) or absorbs light (optical density),
and then remove what stained-looking pixels that are not tissue tend to be:

* **white background**: low saturation and low optical density, whatever Otsu says;
* **black scanner borders, black pen, out-of-focus debris**: very dark and grey (low value and low
  saturation), never H&E;
* **green / blue-green / blue pen and tissue-marking dye**: hues H&E does not produce (eosin is pink
  to red, haematoxylin blue-violet to purple).

Otsu's threshold is computed on the pixels that are not obviously background, then clamped to a
plausible range: on a slide that is almost all tissue (a crop) the histogram is not bimodal and an
unclamped Otsu would cut the tissue in two. Small specks are removed and small holes filled, with
sizes given in µm² so the result does not depend on the level that was read.

The mask keeps its geometry (level-0 pixels per mask pixel), so :meth:`TissueMask.tissue_fraction`
can answer, for any :class:`~napari_metastasis.slides.grid.PatchGrid` cell, how much of its patch is
tissue, through a summed-area table (constant time per cell).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from skimage import color, filters, morphology

from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Slide, block_mean

#: Default size of one mask pixel, in µm: fine enough for 0.25-0.5 mm patches, coarse enough to read
#: a whole slide in well under a second from its pyramid.
DEFAULT_MASK_UM = 8.0

#: Assumed µm/px for slides with no usable resolution (only sizes of cleanup steps depend on it).
NOMINAL_MPP = 0.5

#: Reading a level in blocks of this many pixels keeps memory bounded on single-level slides.
_READ_BLOCK = 2048

#: Clamp ranges for the Otsu thresholds (saturation in [0, 1], optical density summed over RGB).
SATURATION_RANGE = (0.04, 0.10)
OPTICAL_DENSITY_RANGE = (0.12, 0.35)


@dataclass
class TissueMask:
    """A boolean tissue mask of the whole slide and the level-0 geometry of its pixels.

    Mask pixel (i, j) covers level-0 x in [j * downsample_x, (j + 1) * downsample_x) and y in
    [i * downsample_y, (i + 1) * downsample_y).
    """

    mask: np.ndarray  # (rows, cols) bool
    downsample_x: float  # level-0 px per mask px
    downsample_y: float
    mpp_x: float | None = None  # level-0 µm/px used for the layer scale (None: uncalibrated)
    mpp_y: float | None = None
    level: int = 0  # pyramid level it was computed from
    thresholds: dict = field(default_factory=dict)
    _integral: np.ndarray | None = field(default=None, init=False, repr=False)

    # --- coverage ---------------------------------------------------------------------------
    @property
    def fraction(self) -> float:
        """Fraction of the slide covered by tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def _summed_area(self) -> np.ndarray:
        if self._integral is None:
            integral = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), np.int64)
            integral[1:, 1:] = self.mask.astype(np.int64).cumsum(0).cumsum(1)
            self._integral = integral
        return self._integral

    def fraction_in_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """Tissue fraction inside each level-0 box (x, y, w, h) of an (N, 4) array.

        Boxes are snapped outward to whole mask pixels (at least one), so a small patch on a tissue
        edge counts the mask pixel it touches; the parts outside the slide count as background.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.empty(0, np.float32)
        rows, cols = self.mask.shape
        x0 = np.floor(boxes[:, 0] / self.downsample_x)
        y0 = np.floor(boxes[:, 1] / self.downsample_y)
        x1 = np.maximum(np.ceil((boxes[:, 0] + boxes[:, 2]) / self.downsample_x), x0 + 1)
        y1 = np.maximum(np.ceil((boxes[:, 1] + boxes[:, 3]) / self.downsample_y), y0 + 1)
        area = (x1 - x0) * (y1 - y0)
        cx0, cx1 = np.clip(x0, 0, cols).astype(int), np.clip(x1, 0, cols).astype(int)
        cy0, cy1 = np.clip(y0, 0, rows).astype(int), np.clip(y1, 0, rows).astype(int)
        s = self._summed_area()
        inside = s[cy1, cx1] - s[cy0, cx1] - s[cy1, cx0] + s[cy0, cx0]
        return (inside / area).astype(np.float32)

    def tissue_fraction(self, grid: PatchGrid, cells: np.ndarray | None = None) -> np.ndarray:
        """Tissue fraction of each grid cell's patch: (N,) for (N, 2) ``cells``, else the grid."""
        if cells is None:
            return self.fraction_in_boxes(grid.read_boxes(grid.all_cells())).reshape(grid.shape)
        return self.fraction_in_boxes(grid.read_boxes(cells))

    def cells_with_tissue(
        self, grid: PatchGrid, cells: np.ndarray, min_fraction: float
    ) -> np.ndarray:
        """The subset of ``cells`` whose patch holds at least ``min_fraction`` tissue."""
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
        if min_fraction <= 0 or len(cells) == 0:
            return cells
        return cells[self.tissue_fraction(grid, cells) >= min_fraction]

    # --- napari -----------------------------------------------------------------------------
    @property
    def layer_scale(self) -> tuple[float, float]:
        """(y, x) µm per mask pixel (level-0 px when uncalibrated)."""
        return self.downsample_y * (self.mpp_y or 1.0), self.downsample_x * (self.mpp_x or 1.0)

    @property
    def layer_translate(self) -> tuple[float, float]:
        """(y, x) of mask pixel (0, 0)'s centre, in the same units as :attr:`layer_scale`."""
        sy, sx = self.layer_scale
        return sy / 2, sx / 2


def tissue_mask(
    slide: Slide,
    *,
    mask_um: float = DEFAULT_MASK_UM,
    method: str = "both",
    min_object_um2: float = 20_000.0,
    max_hole_um2: float = 10_000.0,
    exclude_pen: bool = True,
    mpp: float | None = None,
) -> TissueMask:
    """Detect tissue on a coarse version of ``slide``.

    Parameters
    ----------
    mask_um:
        Side of one mask pixel in µm (the pyramid level at most this coarse is read, then
        block-averaged).
    method:
        ``"saturation"``, ``"od"`` (optical density) or ``"both"`` (a pixel is tissue when either
        says so: pale loose stroma is caught by OD, faint eosin by saturation).
    min_object_um2, max_hole_um2:
        Tissue specks smaller than this are dropped; holes smaller than this are filled.
    exclude_pen:
        Drop pixels with ink hues (green, cyan, pen blue) and near-black grey pixels.
    mpp:
        Level-0 µm/px; defaults to the slide's resolution, else :data:`NOMINAL_MPP`.
    """
    if method not in ("saturation", "od", "both"):
        raise ValueError(f"unknown tissue method {method!r}; use saturation, od or both")
    res = slide.resolution
    if mpp is None:
        mpp_x, mpp_y = (res.mpp_x, res.mpp_y) if res else (None, None)
    else:
        mpp_x = mpp_y = mpp
    sizing_mpp = math.sqrt(mpp_x * mpp_y) if mpp_x and mpp_y else NOMINAL_MPP

    rgb, level, factor = _read_coarse(slide, mask_um / sizing_mpp)
    width, height = slide.dimensions
    lw, lh = slide.level_dimensions[level]
    ds_x = factor * width / lw
    ds_y = factor * height / lh

    tissue, thresholds = classify_pixels(rgb, method=method, exclude_pen=exclude_pen)
    px_um2 = ds_x * ds_y * sizing_mpp**2
    tissue = _clean(
        tissue, min_object_px=min_object_um2 / px_um2, max_hole_px=max_hole_um2 / px_um2
    )
    return TissueMask(tissue, ds_x, ds_y, mpp_x, mpp_y, level, thresholds)


#: classify_pixels converts colours this many rows at a time (HSV in float64 for one chunk only), so
#: a 6250 x 5000 mask of a 100k px slide needs about 1 GB instead of 3.
_CLASSIFY_ROWS = 256


def classify_pixels(
    rgb: np.ndarray, *, method: str = "both", exclude_pen: bool = True
) -> tuple[np.ndarray, dict]:
    """Per-pixel tissue decision on an RGB uint8 image (no spatial cleanup); also the thresholds."""
    rgb = np.asarray(rgb)
    h, w = rgb.shape[:2]
    sat = np.empty((h, w), np.float64)
    od = np.empty((h, w), np.float32)
    candidates = np.empty((h, w), bool)
    for y in range(0, h, _CLASSIFY_ROWS):
        rows = slice(y, y + _CLASSIFY_ROWS)
        chunk = rgb[rows]
        hsv = color.rgb2hsv(chunk)
        hue, s, val = hsv[..., 0] * 360.0, hsv[..., 1], hsv[..., 2]
        sat[rows] = s
        od[rows] = -np.log((chunk.astype(np.float32) + 1.0) / 256.0).sum(axis=-1)
        # Pixels that are neither tissue nor glass: ink, dye, black borders.
        ink = (val < 0.25) & (s < 0.35)  # dark grey
        if exclude_pen:
            green_cyan = (hue >= 70) & (hue < 190) & (s > 0.15)
            pen_blue = (hue >= 190) & (hue < 235) & (s > 0.30)
            ink |= green_cyan | pen_blue
        candidates[rows] = ~ink & (val > 0.05)

    thresholds: dict = {}
    tissue = np.zeros((h, w), bool)
    if method in ("saturation", "both"):
        t = _clamped_otsu(sat[candidates], SATURATION_RANGE)
        thresholds["saturation"] = t
        tissue |= sat > t
    del sat
    if method in ("od", "both"):
        t = _clamped_otsu(od[candidates], OPTICAL_DENSITY_RANGE)
        thresholds["optical_density"] = t
        tissue |= od > t
    return tissue & candidates, thresholds


def _clamped_otsu(values: np.ndarray, bounds: tuple[float, float]) -> float:
    """Otsu's threshold, kept within ``bounds`` (a unimodal histogram gives a meaningless Otsu)."""
    lo, hi = bounds
    if values.size < 2 or np.ptp(values) == 0:
        return lo
    return float(np.clip(filters.threshold_otsu(values), lo, hi))


def _clean(mask: np.ndarray, *, min_object_px: float, max_hole_px: float) -> np.ndarray:
    """Median-smooth, drop specks, fill holes (sizes in mask pixels)."""
    if mask.size == 0:
        return mask
    mask = filters.median(mask.astype(np.uint8), morphology.disk(1)).astype(bool)
    if min_object_px >= 1:
        mask = _size_filter(morphology.remove_small_objects, mask, int(min_object_px))
    if max_hole_px >= 1:
        mask = _size_filter(morphology.remove_small_holes, mask, int(max_hole_px))
    return mask


def _size_filter(func: Callable[..., np.ndarray], mask: np.ndarray, size: int) -> np.ndarray:
    """scikit-image >= 0.26 names the size ``max_size`` (inclusive); older versions differ."""
    try:
        return func(mask, max_size=size)
    except TypeError:  # scikit-image < 0.26
        return func(mask, size + 1)


def _read_coarse(slide: Slide, downsample: float) -> tuple[np.ndarray, int, int]:
    """The slide at about ``downsample`` (level-0 px per pixel) as RGB uint8, read block by block.

    Returns (image, level read, integer block-average factor applied to that level).
    """
    downsample = max(downsample, 1.0)
    level = slide.overview_level(downsample, "finding tissue")
    factor = max(1, round(downsample / slide.level_downsamples[level]))
    lw, lh = slide.level_dimensions[level]
    out_w, out_h = math.ceil(lw / factor), math.ceil(lh / factor)
    out = np.empty((out_h, out_w, 3), np.uint8)
    block = factor * max(1, _READ_BLOCK // factor)
    for y in range(0, lh, block):
        for x in range(0, lw, block):
            w, h = min(block, lw - x), min(block, lh - y)
            tile = slide.read_level_region(level, x, y, w, h)
            small = block_mean(tile, factor)
            out[
                y // factor : y // factor + small.shape[0],
                x // factor : x // factor + small.shape[1],
            ] = small
    return out, level, factor
