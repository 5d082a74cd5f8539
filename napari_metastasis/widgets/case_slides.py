"""The case list's slides, their verdicts and their patients' pN stages, without Qt.

A :class:`CaseSlide` is one slide of the list (a file or DICOM folder) with its analysis status,
probability map and verdict; the functions here measure a slide at the dock's threshold and
minimum area (µm²), group slides into patients (``patient_<id>_node_<n>`` names, or all under the
name typed in the dock) and stage each patient once all its slides are done
(:mod:`napari_metastasis.clinical.staging`). :class:`.cases.CaseList` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from napari_metastasis._napari.helpers import slide_key
from napari_metastasis.clinical.staging import (
    CATEGORY_LABELS,
    SlideVerdict,
    format_mm,
    group_patients,
    incomplete_sentence,
    measure_regions,
    missing_nodes,
    pn_stage,
    slide_verdict,
)
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.pipeline.answer import answer_slide

QUEUED, RUNNING, DONE, FAILED, STOPPED = "queued", "analysing", "done", "failed", "stopped"
#: File names a folder is searched for (OpenSlide formats and DICOM folders are also accepted).
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif")


@dataclass
class CaseSlide:
    """One slide of the case list and what its analysis gave."""

    path: str
    status: str = QUEUED
    message: str = ""
    prob_map: ProbabilityMap | None = None
    verdict: SlideVerdict | None = None
    progress: float = 0.0
    regions: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.path).name


def slides_in_folder(folder: str | Path) -> list[Path]:
    """The slides directly in ``folder`` (by extension), and DICOM sub-folders, by name."""
    folder = Path(folder)
    found = []
    for path in sorted(folder.iterdir()):
        if (path.is_file() and path.suffix.lower() in SLIDE_SUFFIXES) or (
            path.is_dir() and any(p.suffix.lower() == ".dcm" for p in path.iterdir())
        ):
            found.append(path)
    return found


def record_run(
    slide: CaseSlide, error: str | None, cancelled: bool, prob_map: ProbabilityMap | None
) -> bool:
    """Write a finished run's outcome into its slide; True when it analysed the slide (its map is
    then the slide's, marked whole-slide, and the slide is to be measured)."""
    if error is not None:
        slide.status, slide.message = FAILED, error
    elif cancelled:
        slide.status = STOPPED
    elif prob_map is None or not prob_map.n_analysed:
        slide.status = FAILED
        slide.message = "No patch was analysed (no tissue found): no verdict."
    else:
        slide.status, slide.progress, slide.prob_map = DONE, 1.0, prob_map
        prob_map.extra["whole_slide"] = True
        return True
    return False


def measure_slide(slide: CaseSlide, threshold: float, min_area_um2: float) -> None:
    """The slide's regions and verdict at this threshold and minimum area (none without a map)."""
    if slide.prob_map is None:
        slide.verdict, slide.regions = None, []
        return
    # the regions predict finds; only confirmed deposits make the verdict
    slide.regions = answer_slide(slide.prob_map, threshold, min_area_um2).regions
    slide.verdict = slide_verdict(measure_regions(slide.regions, slide.prob_map.grid))


def patient_groups(slides: list[CaseSlide], case: str | None) -> dict[str, list[CaseSlide]]:
    """The slides of each patient (all under ``case`` when one is named)."""
    groups = group_patients([s.path for s in slides], case=case)
    by_path = {s.path: s for s in slides}
    return {patient: [by_path[str(p)] for p in paths] for patient, paths in groups.items()}


def patient_missing_nodes(
    patient: str, slides: list[CaseSlide], case: str | None
) -> tuple[str, ...]:
    """The Camelyon17 node slides a patient grouped by its slides' names lacks (a patient
    named in the dock's patient field has the slides its pathologist gave)."""
    if case:
        return ()
    return missing_nodes(patient, [s.path for s in slides])


def patient_stages(slides: list[CaseSlide], case: str | None) -> dict[str, str | None]:
    """Each patient's pN stage; None until all its slides are done, and None for a Camelyon17
    patient lacking node slides: a stage from some of its nodes could understate it (the
    ``predict`` command and the report leave such a patient unstaged too)."""
    out: dict[str, str | None] = {}
    for patient, own in patient_groups(slides, case).items():
        verdicts = [s.verdict for s in own if s.status == DONE and s.verdict is not None]
        complete = len(verdicts) == len(own) and not patient_missing_nodes(patient, own, case)
        out[patient] = pn_stage(v.category for v in verdicts) if complete else None
    return out


def patient_of(
    slides: list[CaseSlide], case: str | None, path: str | Path
) -> tuple[str, list[CaseSlide]] | None:
    """The patient the slide at ``path`` belongs to, and that patient's slides."""
    key = slide_key(path)
    for patient, own in patient_groups(slides, case).items():
        if any(slide_key(s.path) == key for s in own):
            return patient, own
    return None


def slide_for(slides: list[CaseSlide], path: str | Path) -> CaseSlide | None:
    """The slide of the list at ``path`` (the same file however its path is written)."""
    key = slide_key(path)
    return next((s for s in slides if slide_key(s.path) == key), None)


def stage_lines(slides: list[CaseSlide], case: str | None) -> list[str]:
    """One line (rich text) per patient: its stage, why it has none, or how far its slides are."""
    stages = patient_stages(slides, case)
    lines = []
    for patient, own in patient_groups(slides, case).items():
        stage = stages[patient]
        done = sum(s.status == DONE for s in own)
        missing = patient_missing_nodes(patient, own, case)
        if stage is not None:
            lines.append(f"<b>{patient}: {stage}</b> ({len(own)} slides)")
        elif missing and done == len(own):
            lines.append(escape(incomplete_sentence(patient, missing)))
        else:
            lines.append(f"{patient}: {done} of {len(own)} slides analysed")
    return lines


def row_texts(slide: CaseSlide) -> list[str]:
    """The slide's row in the list: name, status (or progress), verdict, largest deposit."""
    status = slide.status
    if status == RUNNING:
        status = f"{slide.progress:.0%}"
    verdict = slide.verdict
    return [
        slide.name,
        status,
        CATEGORY_LABELS[verdict.category] if verdict else "",
        format_mm(verdict.greatest_dimension_mm) if verdict and verdict.largest else "",
    ]
