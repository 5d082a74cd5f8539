"""Camelyon16's lesion-level FROC, following the challenge's evaluation code (Evaluation_FROC.py).

* Lesions: the reference mask at "level 5" (32x coarser than level 0), each level-5 pixel being the
  level-0 pixel at its block's top-left corner (the official masks are painted at level 0 and
  sampled down), dilated by the 75 µm boundary the challenge allows (as in the official code: every
  pixel closer than 75/2 µm to tumour), holes filled, 8-connected components.
* Isolated tumour cells: lesions whose major axis (of the dilated region) is under 275 µm, as in the
  official code (which states the threshold in level-5 pixels of 0.243 µm: 275 / (0.243 * 32)). A
  detection inside one is neither a hit nor a false positive, and they are not counted as lesions.
  The one difference: the official script takes 0.243 µm/px for every slide, we take the slide's.
* Each detection is a point (level-0 x, y) with a probability, looked up at (y // 32, x // 32).
  Inside a lesion it is a hit, and only the highest-probability hit per lesion counts; outside every
  lesion it is a false positive. On a slide without tumour every detection is a false positive.
* FROC: for each threshold (every distinct positive probability; the official code drops the lowest
  distinct value, which is the 0 of a missed lesion whenever one is missed, and otherwise wrongly
  drops a real detection), the
  average false positives per slide and the fraction of lesions hit; the score is the sensitivity
  averaged at 1/4, 1/2, 1, 2, 4 and 8 false positives per slide (linear interpolation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry.base import BaseGeometry
from skimage import measure

FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
LEVEL5_DOWNSAMPLE = 32.0


def rasterize(
    geometry: BaseGeometry | None, shape: tuple[int, int], downsample: float
) -> np.ndarray:
    """Boolean (rows, cols) mask of a level-0 geometry on a grid ``downsample`` x coarser.

    Pixel (r, c) takes the value of level-0 pixel (x, y) = (c*ds, r*ds), the top-left pixel of the
    block it covers: what Camelyon16's evaluation gets from its reference masks, which are painted
    at level 0 (ASAP's ``AnnotationToMask``: a pixel is tumour when its integer coordinates lie in
    the polygon) and reduced to level 5 by nearest-neighbour sampling (``mask[::32, ::32]``). At a
    lesion's border this decides whether a detection hits it; sampling block centres instead turns
    hits into false positives there.
    """
    mask = np.zeros(shape, dtype=bool)
    if geometry is None or geometry.is_empty:
        return mask
    rows, cols = shape
    minx, miny, maxx, maxy = geometry.bounds
    c0, c1 = max(0, math.ceil(minx / downsample)), min(cols, math.floor(maxx / downsample) + 1)
    r0, r1 = max(0, math.ceil(miny / downsample)), min(rows, math.floor(maxy / downsample) + 1)
    if c1 <= c0 or r1 <= r0:
        return mask
    shapely.prepare(geometry)
    for r in range(r0, r1):  # a row at a time keeps memory flat on whole slides
        xs = np.arange(c0, c1, dtype=np.float64) * downsample
        mask[r, c0:c1] = shapely.contains_xy(geometry, xs, np.full_like(xs, r * downsample))
    return mask


@dataclass
class LesionMask:
    """Labelled lesions of one slide (0 = background) and which labels are isolated tumour cells."""

    labels: np.ndarray
    itc: set[int]
    downsample: float  # level-0 px per mask px

    @property
    def n_lesions(self) -> int:
        """Lesions that count (isolated tumour cells excluded)."""
        return int(self.labels.max()) - len(self.itc) if self.labels.size else 0


def lesion_mask(
    geometry: BaseGeometry | None,
    slide_dimensions: tuple[int, int],
    mpp: float,
    *,
    downsample: float = LEVEL5_DOWNSAMPLE,
    dilation_um: float = 75.0,
    itc_um: float = 275.0,
) -> LesionMask:
    """The challenge's evaluation mask for one slide (see module doc)."""
    w, h = slide_dimensions
    shape = (max(1, int(np.ceil(h / downsample))), max(1, int(np.ceil(w / downsample))))
    tumour = rasterize(geometry, shape, downsample)
    if not tumour.any():
        return LesionMask(np.zeros(shape, np.int32), set(), downsample)
    px_um = mpp * downsample
    distance = ndimage.distance_transform_edt(~tumour)
    grown = distance < dilation_um / (2 * px_um)
    filled = ndimage.binary_fill_holes(grown)
    labels = measure.label(filled, connectivity=2).astype(np.int32)
    itc = {
        int(region.label)
        for region in measure.regionprops(labels)
        if region.axis_major_length * px_um < itc_um
    }
    return LesionMask(labels, itc, downsample)


@dataclass
class SlideHits:
    """One slide's false-positive probabilities and per-lesion best hit (0 = missed)."""

    fp_probs: np.ndarray
    tp_probs: np.ndarray  # one per counted lesion


def lesion_of_detections(detections: np.ndarray, lesions: LesionMask | None) -> np.ndarray:
    """(K,) int: the lesion label under each detection point (0 = outside every lesion)."""
    detections = np.asarray(detections, dtype=np.float64).reshape(-1, 3)
    if lesions is None or lesions.labels.size == 0:
        return np.zeros(len(detections), dtype=np.int64)
    rows, cols = lesions.labels.shape
    r = np.clip((detections[:, 1] / lesions.downsample).astype(np.int64), 0, rows - 1)
    c = np.clip((detections[:, 0] / lesions.downsample).astype(np.int64), 0, cols - 1)
    return lesions.labels[r, c].astype(np.int64)


def score_detections(detections: np.ndarray, lesions: LesionMask | None) -> SlideHits:
    """Split a slide's detections into hits (best per lesion) and false positives."""
    detections = np.asarray(detections, dtype=np.float64).reshape(-1, 3)
    if lesions is None or lesions.labels.max() == 0:
        return SlideHits(detections[:, 2].copy(), np.zeros(0))
    n_labels = int(lesions.labels.max())
    best = np.zeros(n_labels + 1)
    fps = []
    for (_x, _y, p), hit in zip(detections, lesion_of_detections(detections, lesions), strict=True):
        if hit == 0:
            fps.append(p)
        elif hit not in lesions.itc:
            best[hit] = max(best[hit], p)
    counted = [k for k in range(1, n_labels + 1) if k not in lesions.itc]
    return SlideHits(np.asarray(fps), best[counted])


@dataclass
class FrocResult:
    score: float
    fps_per_slide: np.ndarray  # x of the curve
    sensitivity: np.ndarray  # y of the curve
    sensitivity_at: dict[float, float] = field(default_factory=dict)
    n_slides: int = 0
    n_lesions: int = 0

    def to_dict(self) -> dict:
        return {
            "froc_score": self.score,
            "sensitivity_at_fps_per_slide": {str(k): v for k, v in self.sensitivity_at.items()},
            "n_slides": self.n_slides,
            "n_lesions": self.n_lesions,
            "curve": {
                "fps_per_slide": self.fps_per_slide.tolist(),
                "sensitivity": self.sensitivity.tolist(),
            },
        }


def froc(hits: list[SlideHits]) -> FrocResult:
    """The FROC curve and score over slides (see module doc)."""
    n_slides = len(hits)
    if n_slides == 0:
        raise ValueError("FROC needs at least one slide")
    fp = np.concatenate([h.fp_probs for h in hits]) if hits else np.zeros(0)
    tp = np.concatenate([h.tp_probs for h in hits]) if hits else np.zeros(0)
    n_lesions = len(tp)
    probs = np.unique(np.concatenate([fp, tp]))
    thresholds = probs[probs > 0]
    total_fp = [float((fp >= t).sum()) for t in thresholds] + [0.0]
    total_tp = [float((tp >= t).sum()) for t in thresholds] + [0.0]
    fps_per_slide = np.asarray(total_fp) / n_slides
    sensitivity = np.asarray(total_tp) / n_lesions if n_lesions else np.full(len(total_tp), np.nan)
    # fps_per_slide falls as the threshold rises; interp needs it increasing
    at = np.interp(FP_RATES, fps_per_slide[::-1], sensitivity[::-1])
    return FrocResult(
        score=float(np.mean(at)),
        fps_per_slide=fps_per_slide,
        sensitivity=sensitivity,
        sensitivity_at={r: float(s) for r, s in zip(FP_RATES, at, strict=True)},
        n_slides=n_slides,
        n_lesions=n_lesions,
    )
