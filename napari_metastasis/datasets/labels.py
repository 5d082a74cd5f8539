"""Labelling rules: the exact tumour mask of a patch from reference polygons, and its label.

Labels are derived from a mask, never from a folder name alone, so every source (slides, patch
folders with coordinates, PCam) is labelled by the same stated rule:

* ``centre``: PCam's rule, "tumour in the centre 32x32 px of a 96-px patch", generalised to the centre
  third of any patch size: positive when any tumour pixel lies in that centre square.
* ``fraction``: positive when the tumour covers at least ``threshold`` of the whole patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import box as shapely_box
from shapely.geometry.base import BaseGeometry

RULES = ("centre", "fraction")


@dataclass(frozen=True)
class LabelRule:
    """How a patch's tumour mask becomes a 0/1 label."""

    name: str = "centre"
    threshold: float = 0.5  # used by "fraction" only

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"unknown label rule {self.name!r}; choose one of {', '.join(RULES)}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"label threshold must be in (0, 1], got {self.threshold}")

    def describe(self) -> str:
        if self.name == "centre":
            return "positive if any tumour pixel lies in the centre third (PCam: 32x32 of 96 px)"
        return f"positive if tumour covers at least {self.threshold:.0%} of the patch"


#: PCam's rule, the default for extraction from slides.
CENTRE_RULE = LabelRule("centre")
#: Half the patch under tumour: the rule for patch folders whose patches are mostly one tissue.
HALF_RULE = LabelRule("fraction", 0.5)


def centre_window(size: int) -> slice:
    """The centre third of a patch side (32..64 of 96), as PCam defines its label region."""
    third = size / 3.0
    start = round(third)
    stop = round(2 * third)
    return slice(start, max(stop, start + 1))


def label_from_mask(mask: np.ndarray, rule: LabelRule = CENTRE_RULE) -> int:
    """0/1 label of one (H, W) boolean tumour mask under ``rule``."""
    mask = np.asarray(mask, dtype=bool)
    if rule.name == "centre":
        rows, cols = centre_window(mask.shape[0]), centre_window(mask.shape[1])
        return int(mask[rows, cols].any())
    return int(mask.mean() >= rule.threshold)


def centre_fraction(mask: np.ndarray) -> float:
    """Tumour fraction of the centre third: the soft target the training loop uses."""
    mask = np.asarray(mask, dtype=np.float32)
    return float(mask[centre_window(mask.shape[0]), centre_window(mask.shape[1])].mean())


def geometry_mask(
    geometry: BaseGeometry | None,
    x0: float,
    y0: float,
    width: float,
    height: float,
    shape: tuple[int, int],
) -> np.ndarray:
    """Boolean (rows, cols) mask of ``geometry`` over the level-0 box (x0, y0, width, height).

    Each output pixel is tested at its centre, so a patch read at any resolution gets the mask at the
    same resolution. Holes (exclusion polygons) are respected because the test is point-in-polygon
    on the final geometry.
    """
    rows, cols = shape
    out = np.zeros((rows, cols), dtype=bool)
    if geometry is None or geometry.is_empty:
        return out
    region = shapely_box(x0, y0, x0 + width, y0 + height)
    if not geometry.intersects(region):
        return out
    if geometry.contains(region):
        out[:] = True
        return out
    clipped = shapely.clip_by_rect(geometry, x0, y0, x0 + width, y0 + height)
    xs = x0 + (np.arange(cols) + 0.5) * (width / cols)
    ys = y0 + (np.arange(rows) + 0.5) * (height / rows)
    gx, gy = np.meshgrid(xs, ys)
    shapely.prepare(clipped)
    return shapely.contains_xy(clipped, gx, gy)
