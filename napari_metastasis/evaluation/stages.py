"""Camelyon17's metric: predicted pN stages against a reference, and slide categories on the side.

The challenge scores the quadratic-weighted Cohen's kappa between reference and predicted pN stages
over its five ordered stages (pN0 < pN0(i+) < pN1mi < pN1 < pN2), one per patient. The slide rows of
the same files give a 4 x 4 confusion matrix of negative / itc / micro / macro and its accuracy.
Every reference patient must be predicted; extra predicted patients and slides are listed, not scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_metastasis.clinical.staging import CATEGORIES, PN_STAGES, StagesFile, StagingError
from napari_metastasis.evaluation.metrics import cohen_kappa, confusion_matrix


@dataclass
class StageComparison:
    patients: int
    kappa: float
    stage_confusion: list[list[int]]  # rows: reference stage, columns: predicted (PN_STAGES order)
    stage_accuracy: float
    slides: int
    slide_confusion: list[list[int]]  # rows: reference category, columns: predicted (CATEGORIES)
    slide_accuracy: float
    missing_slides: list[str]  # reference slides the prediction lacks (not scored)
    extra_patients: list[str]

    def to_dict(self) -> dict:
        return {
            **self.__dict__,
            "stages": list(PN_STAGES),
            "categories": list(CATEGORIES),
        }

    def format(self) -> str:
        lines = [
            f"patients: {self.patients}  quadratic-weighted kappa {self.kappa:.4f}  "
            f"stage accuracy {self.stage_accuracy:.3f}",
            _table("reference \\ predicted", PN_STAGES, self.stage_confusion),
        ]
        if self.slides:
            lines += [
                f"slides: {self.slides}  category accuracy {self.slide_accuracy:.3f}",
                _table("reference \\ predicted", CATEGORIES, self.slide_confusion),
            ]
        if self.missing_slides:
            lines.append(f"not predicted (not scored): {', '.join(self.missing_slides)}")
        if self.extra_patients:
            lines.append(f"not in the reference (not scored): {', '.join(self.extra_patients)}")
        return "\n".join(lines)


def compare_stages(reference: StagesFile, predicted: StagesFile) -> StageComparison:
    missing = [p for p in reference.patients if p not in predicted.patients]
    if missing:
        raise StagingError(
            f"the prediction has no stage for {len(missing)} reference patient(s): "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    if not reference.patients:
        raise StagingError("the reference has no patient rows (<patient>.zip,<stage>)")
    patients = list(reference.patients)
    ref = np.array([PN_STAGES.index(reference.patients[p]) for p in patients])
    pred = np.array([PN_STAGES.index(predicted.patients[p]) for p in patients])
    slides = [s for s in reference.slides if s in predicted.slides]
    ref_s = np.array([CATEGORIES.index(reference.slides[s]) for s in slides], dtype=np.int64)
    pred_s = np.array([CATEGORIES.index(predicted.slides[s]) for s in slides], dtype=np.int64)
    return StageComparison(
        patients=len(patients),
        kappa=cohen_kappa(ref, pred, len(PN_STAGES), "quadratic"),
        stage_confusion=confusion_matrix(ref, pred, len(PN_STAGES)).tolist(),
        stage_accuracy=float((ref == pred).mean()),
        slides=len(slides),
        slide_confusion=confusion_matrix(ref_s, pred_s, len(CATEGORIES)).tolist(),
        slide_accuracy=float((ref_s == pred_s).mean()) if slides else float("nan"),
        missing_slides=[s for s in reference.slides if s not in predicted.slides],
        extra_patients=[p for p in predicted.patients if p not in reference.patients],
    )


def _table(corner: str, names: tuple[str, ...], counts: list[list[int]]) -> str:
    width = max(len(n) for n in names) + 2
    head = f"{corner:>{len(corner)}}" + "".join(f"{n:>{width}}" for n in names)
    rows = [
        f"{name:>{len(corner)}}" + "".join(f"{c:>{width}}" for c in row)
        for name, row in zip(names, counts, strict=True)
    ]
    return "\n".join([head, *rows])
