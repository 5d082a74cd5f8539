"""The finish step of a run: a probability map's regions, their deposit decision, the slide summary.

:func:`answer_slide` is the one place a map becomes an answer. It finds the regions at the threshold
once (:func:`~napari_metastasis.maps.contours.probability_contours`: 4-connected cells, because cells
that touch only at a corner share no edge and their outlines would make two polygons), decides each
by the map's deposit rule (:mod:`napari_metastasis.clinical.decision`), and every output comes from
that one region list: the ``predict`` command's GeoJSON, heatmap outlines, summary (verdict, sizes,
stage) and Camelyon16 detection file, and the viewer's regions layer, regions panel and verdict.

``min_area_um2`` leaves smaller regions out of :attr:`SlideAnswer.regions` (what is outlined,
measured and staged, renumbered 1, 2, … by decreasing probability as the finder numbers them); the
detection file lists every region at the threshold (:attr:`SlideAnswer.candidates`), as a FROC
submission ranks candidates rather than filters them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from napari_metastasis.clinical.decision import DecisionRule, confirm_regions, rule_for_map
from napari_metastasis.clinical.staging import Deposit, measure_regions
from napari_metastasis.clinical.summary import SlideSummary, summarise_regions
from napari_metastasis.maps.contours import Region, probability_contours, region_detections
from napari_metastasis.maps.probability import ProbabilityMap


@dataclass
class SlideAnswer:
    """What a map says at a threshold: regions (decided), the rule that decided them, and more."""

    prob_map: ProbabilityMap
    threshold: float
    rule: DecisionRule
    #: every region at the threshold, by decreasing max probability (the detection file's)
    candidates: list[Region]
    #: the candidates of at least ``min_area_um2``, each with its deposit decision
    regions: list[Region]

    @property
    def confirmed(self) -> list[Region]:
        """The regions the decision confirms as deposits (those that make the verdict)."""
        return [r for r in self.regions if r.confirmed]

    @cached_property
    def deposits_by_region(self) -> dict[int, Deposit]:
        """Each of :attr:`regions` measured (size, category, decision), by the region object's
        ``id()`` (the answer holds its regions, so no other object has it meanwhile). Measured
        once, on the thread that first asks: the viewer's contour worker, not the GUI thread."""
        return {
            id(region): deposit
            for region, deposit in zip(
                self.regions, measure_regions(self.regions, self.prob_map.grid), strict=True
            )
        }

    def measure(self, regions: list) -> list[Deposit]:
        """``regions`` (this answer's, perhaps some deleted) measured: what was measured already
        is looked up, anything else (a region edited since) is measured now."""
        known = self.deposits_by_region
        return [known.get(id(r)) or measure_regions([r], self.prob_map.grid)[0] for r in regions]

    def detections(self) -> np.ndarray:
        """(K, 3) level-0 (x, y, probability), one per candidate: Camelyon16's detection rows."""
        return region_detections(self.candidates, self.prob_map)

    def summary(self, *, slide: str, stem: str, model: str, slide_path: str = "") -> SlideSummary:
        """The slide summary of :attr:`regions` (verdict, deposit sizes, the rule that decided)."""
        return summarise_regions(
            self.regions,
            self.prob_map,
            slide=slide,
            stem=stem,
            threshold=self.threshold,
            model=model,
            slide_path=slide_path,
            rule=self.rule,
        )


def answer_slide(
    prob_map: ProbabilityMap,
    threshold: float,
    min_area_um2: float = 0.0,
    rule: DecisionRule | None = None,
) -> SlideAnswer:
    """The regions of ``prob_map`` at ``threshold`` (at least ``min_area_um2`` µm²), each decided
    by ``rule`` (default: the rule the map was stamped with, see :func:`.rule_for_map`)."""
    rule = rule or rule_for_map(prob_map, threshold)
    candidates = probability_contours(prob_map, threshold)
    regions = candidates
    if min_area_um2 > 0:
        kept = [r for r in candidates if r.area_um2 >= min_area_um2]
        regions = [replace(r, id=i) for i, r in enumerate(kept, start=1)]
    return SlideAnswer(
        prob_map, float(threshold), rule, candidates, confirm_regions(regions, prob_map, rule)
    )
