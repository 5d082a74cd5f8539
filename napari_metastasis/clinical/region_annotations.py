"""Regions of a probability map as annotations: the classes and measurements QuPath, the napari
regions layer and the CSV summary show, with the deposit decision made on each region.

Confirmed deposits (and undecided regions) keep the classification given (``Tumor``); a candidate the
decision did not confirm becomes :data:`CANDIDATE_CLASS`, a region without any seed patch
:data:`BELOW_SEED_CLASS`, so a QuPath user sees why a region is not counted.
"""

from __future__ import annotations

from napari_metastasis.annotations.model import (
    BELOW_SEED_CLASS,
    CANDIDATE_CLASS,
    TUMOUR_CLASS,
    Annotation,
)
from napari_metastasis.clinical.staging import is_candidate
from napari_metastasis.maps.contours import Region

#: The deposit decision's numbers of a decided region (:mod:`napari_metastasis.clinical.decision`):
#: ``confirmed`` 1 or 0, its patches at or above the rule's seed threshold, and the rule's numbers,
#: so a QuPath user sees in the measurement table why a candidate was not confirmed.
DECISION_MEASUREMENTS = (
    "confirmed",
    "seed_patches",
    "seed_threshold",
    "min_seed_patches",
    "min_patches",
)


def region_measurements(region: Region, threshold: float | None = None) -> dict[str, float]:
    """The region's :data:`REGION_MEASUREMENTS` (``threshold`` only when given)."""
    values = {
        "area_um2": float(region.area_um2),
        "max_prob": float(region.max_prob),
        "mean_prob": float(region.mean_prob),
        "patches": float(region.n_cells),
    }
    if threshold is not None:
        values["threshold"] = float(threshold)
    decision = getattr(region, "decision", None)
    if decision is not None:
        values["confirmed"] = 1.0 if decision.confirmed else 0.0
        values["seed_patches"] = float(decision.seed_patches)
        if decision.rule is not None:
            values["seed_threshold"] = float(decision.rule.seed_threshold)
            values["min_seed_patches"] = float(decision.rule.min_seed_patches)
            values["min_patches"] = float(decision.rule.min_patches)
    return values


def region_classification(region: Region, classification: str = TUMOUR_CLASS) -> str:
    """``classification`` for a deposit; :data:`CANDIDATE_CLASS` for a candidate not confirmed
    (it holds a seed patch); :data:`BELOW_SEED_CLASS` for a region without any seed patch."""
    if region.confirmed:
        return classification
    seeds = region.decision.seed_patches if region.decision is not None else None
    return CANDIDATE_CLASS if is_candidate(False, seeds) else BELOW_SEED_CLASS


def region_annotation(
    region: Region, classification: str = TUMOUR_CLASS, threshold: float | None = None
) -> Annotation:
    """One region as an :class:`Annotation` (level-0 px), as ``predict`` and the widget export it:
    ``classification`` as given, the decision in its name and measurements."""
    return Annotation(
        region.polygon,
        classification=classification,
        name=getattr(region, "label", f"Region {region.id}"),
        measurements=region_measurements(region, threshold),
        id=region.uid,
    )


def regions_to_annotations(
    regions: list[Region], classification: str = TUMOUR_CLASS, threshold: float | None = None
) -> list[Annotation]:
    """The regions as :class:`Annotation` objects, ready for any of the annotation writers:
    confirmed deposits (and undecided regions) as ``classification``, candidates the decision did
    not confirm as :data:`CANDIDATE_CLASS`."""
    return [
        region_annotation(region, region_classification(region, classification), threshold)
        for region in regions
    ]
