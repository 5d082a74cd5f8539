"""The clinical summary of an analysed slide (``<stem>.summary.json``) and of a run (``stages.csv``).

A summary holds what goes into a pathologist's report for one slide: its verdict and largest deposit,
each region's area, greatest dimension, category and probabilities, and how the numbers were made
(model, threshold, grid stride, µm/px, the measuring error of about one stride), and the deposit
decision that made the verdict: the rule and its numbers (``decision``), how many candidate regions
were found above the threshold and how many were confirmed, and per region whether it was confirmed
and why. Only confirmed deposits make the verdict; a summary written before the decision existed
reads back with every region confirmed, as it counted then. ``predict`` writes
one per slide; the ``report`` command and the widget read them back. ``stages.csv`` is the same
answer per patient, in Camelyon17's submission format (see :mod:`napari_metastasis.clinical.staging`).

Sizes are in mm and mm², positions (centroids, slide size) in level-0 pixels, like every file the
package writes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from napari_metastasis.clinical.staging import (
    Deposit,
    PatientStage,
    SlideVerdict,
    group_patients,
    grouped_by_name,
    incomplete_sentence,
    measure_regions,
    measuring_error_mm,
    slide_verdict,
    stages_csv,
)
from napari_metastasis.errors import MetastasisError
from napari_metastasis.outputs.atomic import write_text_atomic

if TYPE_CHECKING:
    from napari_metastasis.clinical.decision import DecisionRule
    from napari_metastasis.maps.contours import Region
    from napari_metastasis.maps.probability import ProbabilityMap

SUMMARY_SUFFIX = ".summary.json"
STAGES_FILE = "stages.csv"
#: ``stages.csv`` is a set of its own: ``stages.outputs.json`` (no slide gets this stem).
STAGES_STEM = "stages"
FORMAT_TAG = "napari-metastasis slide summary v1"
#: The line every human-facing output carries.
DISCLAIMER = "For research use only; not a diagnosis. A pathologist must review every slide."


@dataclass
class SlideSummary:
    """One slide's clinical answer and how it was obtained."""

    slide: str  # the slide's file (or DICOM folder) name, as in stages.csv
    stem: str  # the name of its output files: <stem>.summary.json, .heatmap.png, ...
    deposits: list[Deposit]
    threshold: float
    model: str
    stride_um: float  # grid step: the measuring error is about this much
    patch_um: float
    mpp: tuple[float, float]  # level-0 (x, y) µm per pixel
    dimensions_px: tuple[int, int]  # level-0 (width, height)
    patches: int = -1  # patches analysed (0: no verdict can be given); -1 unknown
    #: of those, patches the cheap first pass settled as normal (the full model classified the rest)
    patches_first_pass_only: int = 0
    slide_path: str = ""
    #: The deposit decision's rule (DecisionRule.to_dict()); None in summaries written before it.
    decision: dict | None = None
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )

    @property
    def verdict(self) -> SlideVerdict:
        return slide_verdict(self.deposits)

    @property
    def measuring_error_mm(self) -> float:
        return measuring_error_mm(self.stride_um)

    def to_dict(self) -> dict:
        verdict = self.verdict
        limitation = self.itc_note()
        return {
            "format": FORMAT_TAG,
            "slide": self.slide,
            "stem": self.stem,
            "slide_path": self.slide_path,
            "verdict": verdict.category,
            "verdict_text": verdict.sentence(),
            "greatest_dimension_mm": verdict.greatest_dimension_mm,
            "largest_region": verdict.largest.id if verdict.largest else None,
            "threshold": self.threshold,
            "model": self.model,
            "stride_um": self.stride_um,
            "patch_um": self.patch_um,
            "measuring_error_mm": self.measuring_error_mm,
            "mpp": list(self.mpp),
            "dimensions_px": list(self.dimensions_px),
            "patches": self.patches,
            "patches_first_pass_only": self.patches_first_pass_only,
            "decision": self.decision,
            "itc_assessed": not limitation,
            "limitation": limitation,
            "regions_above_threshold": len(self.deposits),
            "candidates": sum(d.is_candidate for d in self.deposits),
            "confirmed": sum(d.confirmed for d in self.deposits),
            "created": self.created,
            "disclaimer": DISCLAIMER,
            "regions": [d.to_dict() for d in self.deposits],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> SlideSummary:
        return cls(
            slide=str(data["slide"]),
            stem=str(data["stem"]),
            deposits=[Deposit.from_dict(r) for r in data.get("regions", [])],
            threshold=float(data["threshold"]),
            model=str(data.get("model", "")),
            stride_um=float(data["stride_um"]),
            patch_um=float(data.get("patch_um", data["stride_um"])),
            mpp=(float(data["mpp"][0]), float(data["mpp"][1])),
            dimensions_px=(int(data["dimensions_px"][0]), int(data["dimensions_px"][1])),
            patches=int(data.get("patches", -1)),
            patches_first_pass_only=int(data.get("patches_first_pass_only", 0)),
            slide_path=str(data.get("slide_path", "")),
            created=str(data.get("created", "")),
            decision=dict(data["decision"]) if data.get("decision") else None,
        )

    @property
    def confirmed_deposits(self) -> list[Deposit]:
        return [d for d in self.deposits if d.confirmed]

    @property
    def unconfirmed(self) -> list[Deposit]:
        """Candidate regions (holding a seed patch) the decision did not confirm."""
        return [d for d in self.deposits if d.is_candidate and not d.confirmed]

    def rule(self) -> DecisionRule | None:
        """The deposit decision's rule (None for a summary written before it, or unreadable)."""
        if not self.decision:
            return None
        from napari_metastasis.clinical.decision import DecisionRule
        from napari_metastasis.errors import ModelError

        try:
            return DecisionRule.from_dict(self.decision, "summary")
        except ModelError:
            return None

    def itc_note(self) -> str:
        """The rule's :meth:`~napari_metastasis.clinical.decision.DecisionRule.itc_note` on this
        slide's grid ("" when isolated tumour cells can be confirmed, or no rule is recorded)."""
        rule = self.rule()
        return rule.itc_note(self.stride_um) if rule is not None else ""

    def rule_text(self) -> str:
        """The decision rule in one line ("" for a summary written before the decision)."""
        if not self.decision:
            return ""
        rule = self.rule()
        return rule.describe() if rule is not None else str(self.decision)


def summarise_regions(
    regions: Sequence[Region],
    prob_map: ProbabilityMap,
    *,
    slide: str,
    stem: str,
    threshold: float,
    model: str,
    slide_path: str = "",
    rule: DecisionRule | None = None,
) -> SlideSummary:
    """The summary of ``regions`` found on ``prob_map`` (a ProbabilityMap) at ``threshold``.

    Regions carry their deposit decision (``predict`` and the viewer decide them); with ``rule`` (a
    DecisionRule) any region not decided yet is decided here. The summary names the rule; regions
    that no rule decided (drawn ones) count as deposits and the summary then names none."""
    from napari_metastasis.clinical.decision import confirm_regions

    grid = prob_map.grid
    decided = [getattr(r, "decision", None) for r in regions]
    undecided = [r for r, d in zip(regions, decided, strict=True) if d is None]
    if rule is not None and undecided:
        confirm_regions(undecided, prob_map, rule)
    if rule is None:
        rule = next((d.rule for d in decided if d is not None and d.rule is not None), None)
    return SlideSummary(
        slide=slide,
        stem=stem,
        deposits=measure_regions(regions, grid),
        threshold=float(threshold),
        model=model,
        stride_um=float(grid.step_um),
        patch_um=float(grid.patch_um),
        mpp=(float(grid.mpp_x), float(grid.mpp_y)),
        dimensions_px=(int(grid.width), int(grid.height)),
        patches=int(prob_map.n_analysed),
        patches_first_pass_only=prob_map.n_first_pass,
        slide_path=slide_path,
        decision=None if rule is None else rule.to_dict(),
    )


def write_summary(folder: str | Path, summary: SlideSummary) -> Path:
    path = Path(folder) / f"{summary.stem}{SUMMARY_SUFFIX}"
    write_text_atomic(path, json.dumps(summary.to_dict(), indent=2) + "\n")
    return path


def read_summary(path: str | Path) -> SlideSummary:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT_TAG:
            raise ValueError("not written by napari-metastasis")
        return SlideSummary.from_dict(data)
    except OSError as exc:
        raise MetastasisError(f"{path.name}: cannot read the summary ({exc.strerror})") from exc
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise MetastasisError(f"{path.name}: not a slide summary ({exc})") from exc


def read_summaries(folder: str | Path) -> list[SlideSummary]:
    """Every ``*.summary.json`` of a predict output folder, by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MetastasisError(f"{folder}: not a folder")
    paths = sorted(folder.glob(f"*{SUMMARY_SUFFIX}"))
    if not paths:
        raise MetastasisError(
            f"{folder}: no {SUMMARY_SUFFIX} files (run `napari-metastasis predict --out {folder}`)"
        )
    return [read_summary(p) for p in paths]


def patient_stages(
    summaries: Iterable[SlideSummary],
    *,
    case: str | None = None,
    cases: Mapping[str, str] | None = None,
) -> list[PatientStage]:
    """One :class:`PatientStage` per patient (grouped as :func:`clinical.group_patients` does)."""
    by_slide = {s.slide: s for s in summaries}
    groups = group_patients(list(by_slide), case=case, cases=cases)
    return [
        PatientStage.from_slides(
            patient,
            [(str(name), by_slide[str(name)].verdict.category) for name in names],
            check_nodes=grouped_by_name(names, case=case, cases=cases),
        )
        for patient, names in groups.items()
    ]


def stage_run(
    slides: Sequence[str | Path],
    stems: Sequence[str],
    failed: Iterable[str | Path],
    folder: str | Path,
    *,
    case: str | None = None,
    cases: Mapping[str, str] | None = None,
) -> tuple[list[PatientStage], list[str]]:
    """The patients of a run (slides and their output ``stems``, summaries in ``folder``), and one
    line for each patient left unstaged because one of its slides failed or had no patch analysed
    (no tissue found), or because a Camelyon17 patient lacks node slides (of its five): a stage
    from some of the nodes could understate it. Unstaged patients are left out of ``stages.csv``,
    whose format (Camelyon17's) has no way to say "incomplete"."""
    stem_of = {str(path): stem for path, stem in zip(slides, stems, strict=True)}
    failed_set = {str(p) for p in failed}
    staged, unstaged = [], []
    for patient, paths in group_patients(list(slides), case=case, cases=cases).items():
        bad = [Path(p).name for p in paths if str(p) in failed_set]
        if bad:
            unstaged.append(f"{patient}: not staged, {', '.join(bad)} could not be analysed")
            continue
        summaries = [
            read_summary(Path(folder) / f"{stem_of[str(path)]}{SUMMARY_SUFFIX}") for path in paths
        ]
        empty = [s.slide for s in summaries if s.patches == 0]
        if empty:
            unstaged.append(
                f"{patient}: not staged, no patch of {', '.join(empty)} was analysed "
                "(no tissue found; --tissue-min-fraction 0 classifies every patch)"
            )
            continue
        stage = PatientStage.from_slides(
            patient,
            [(s.slide, s.verdict.category) for s in summaries],
            check_nodes=grouped_by_name(paths, case=case, cases=cases),
        )
        if stage.missing:  # left out of stages.csv: its format has no way to say "incomplete"
            unstaged.append(incomplete_sentence(patient, stage.missing))
            continue
        if stage.stage == "pN0":  # may hide pN0(i+) where the rule cannot see ITCs
            notes = {s.itc_note() for s in summaries} - {""}
            stage = replace(stage, notes=tuple(sorted(notes)))
        staged.append(stage)
    return staged, unstaged


def write_stages(
    folder: str | Path, patients: Iterable[PatientStage], sources: Iterable[str] = ()
) -> Path:
    """Write ``stages.csv`` as a set of its own (``stages.outputs.json``) that lists the files it
    was made from (``sources``: the slides' ``<stem>.summary.json`` in ``folder``), so a
    ``stages.csv`` older than one of its slides' summaries is found stale, not read as current."""
    from napari_metastasis.outputs.output_set import OutputSet

    text = stages_csv(patients)
    with OutputSet(folder, STAGES_STEM, depends_on=sources) as outputs:
        write_text_atomic(outputs.path(STAGES_FILE), text)
    return Path(folder) / STAGES_FILE


def check_stages(path: str | Path) -> None:
    """Refuse a ``stages.csv`` of a predict folder that is not a complete, current set (a file
    from elsewhere, such as Camelyon17's reference, is not checked)."""
    from napari_metastasis.outputs.output_set import is_set_member, require_complete

    path = Path(path)
    folder = path.parent
    stem = path.name[: -len(".csv")] if path.name.endswith(".csv") else path.stem
    if is_set_member(folder, stem) or (
        path.name == STAGES_FILE and any(folder.glob(f"*{SUMMARY_SUFFIX}"))
    ):
        require_complete(folder, stem, path.name)
