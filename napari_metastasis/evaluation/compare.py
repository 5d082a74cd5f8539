"""One slide's detected regions against a reference annotation, for the viewer's comparison.

Everything is the ``evaluate`` command's own code (:mod:`.froc`, :mod:`.slides`), applied to the
regions the pathologist is looking at: lesions are Camelyon16's (reference dilated by 75 µm, holes
filled, isolated tumour cells under 275 µm neither hit nor missed); each region is one detection at
its most probable cell, a hit when that cell lies in a lesion and a false positive when it lies in
none; lesion sensitivity is the share of lesions hit; Dice is the cell-level overlap of the map at
the threshold with the reference, on analysed cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from shapely.geometry.base import BaseGeometry
from skimage import measure

from napari_metastasis.evaluation.froc import lesion_mask, lesion_of_detections, score_detections
from napari_metastasis.evaluation.slides import overlap
from napari_metastasis.maps.probability import ProbabilityMap

HIT, FALSE_POSITIVE, ITC = "hit", "false positive", "isolated tumour cells"


@dataclass(frozen=True)
class Lesion:
    """A reference lesion that counts (not isolated tumour cells)."""

    label: int
    bounds: tuple[float, float, float, float]  # level-0 (minx, miny, maxx, maxy)
    hit: bool
    best_probability: float  # of the most probable region inside it (0 when missed)


@dataclass(frozen=True)
class Comparison:
    threshold: float
    region_status: list[str]  # one of HIT, FALSE_POSITIVE, ITC per region, in the given order
    lesions: list[Lesion]
    dice: float

    @property
    def missed(self) -> list[Lesion]:
        return [lesion for lesion in self.lesions if not lesion.hit]

    @property
    def n_hit(self) -> int:
        return sum(lesion.hit for lesion in self.lesions)

    @property
    def sensitivity(self) -> float:
        return self.n_hit / len(self.lesions) if self.lesions else float("nan")

    @property
    def false_positives(self) -> int:
        return self.region_status.count(FALSE_POSITIVE)


def region_detections(prob_map: ProbabilityMap, regions: Sequence) -> np.ndarray:
    """(K, 3) level-0 (x, y, probability): each region's most probable cell, as FROC counts it."""
    grid, values = prob_map.grid, np.nan_to_num(prob_map.values, nan=-1.0)
    out = []
    for region in regions:
        cells = grid.cells_in_geometry(region.polygon)
        if len(cells) == 0:  # a sliver: its representative point stands for it
            point = region.polygon.representative_point()
            out.append((point.x, point.y, float(region.max_prob)))
            continue
        best = cells[np.argmax(values[cells[:, 0], cells[:, 1]])]
        x, y = grid.detection_points(best[None])[0]
        out.append((x, y, float(values[best[0], best[1]])))
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)


def compare_with_reference(
    prob_map: ProbabilityMap,
    regions: Sequence,
    reference: BaseGeometry | None,
    threshold: float,
) -> Comparison:
    """Which regions hit a reference lesion, which lesions were missed, Dice at ``threshold``."""
    grid = prob_map.grid
    lesions = lesion_mask(reference, (grid.width, grid.height), (grid.mpp_x + grid.mpp_y) / 2)
    detections = region_detections(prob_map, regions)
    under = lesion_of_detections(detections, lesions)
    status = [
        FALSE_POSITIVE if label == 0 else ITC if label in lesions.itc else HIT for label in under
    ]
    best = score_detections(detections, lesions).tp_probs  # per counted lesion, 0 = missed
    counted = [k for k in range(1, int(lesions.labels.max()) + 1) if k not in lesions.itc]
    boxes = {
        int(p.label): p.bbox for p in measure.regionprops(lesions.labels) if p.label in counted
    }
    ds = lesions.downsample
    found = []
    for label, probability in zip(counted, best, strict=True):
        r0, c0, r1, c1 = boxes[label]
        found.append(
            Lesion(
                label,
                (c0 * ds, r0 * ds, c1 * ds, r1 * ds),
                bool(probability > 0),
                float(probability),
            )
        )
    dice = overlap(prob_map, reference, threshold).dice
    return Comparison(float(threshold), status, found, dice)
