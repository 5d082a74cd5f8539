"""What ``predict`` answered on node slides, against their truth: verdicts, sizes, false deposits, pN.

Reads a ``predict --out`` folder as a user would have it (``<stem>.summary.json``, ``<stem>.geojson``,
``stages.csv``) plus the set's ``nodes_truth.json`` (:mod:`napari_metastasis.evaluation.node_slides`).

* A region is **true** when its outline overlaps the deposit (the union of the tumour cells) by
  some area; any other region is **false**. *Candidates* are the regions the summary counts as
  candidate deposits: those holding at least one seed patch of the deposit decision (hysteresis
  grows deposits from seeds; ``seed_patches``), or every region of a summary written without a
  decision; *confirmed* ones are those with ``"confirmed": true``. Every region above the
  threshold is counted too (``false_regions_above_threshold``), as the exploring view shows it.
* **False regions per mm² of normal tissue**: false candidates over the area of the nodes' normal
  cells (every node's; the deposit's cells excluded).
* **Greatest-dimension error** of a deposit: the largest confirmed true region's greatest dimension
  minus the truth's (max Feret of the tumour cells); "within one stride" uses the summary's stride.
* **pN**: ``stages.csv`` against the truth's stages, Camelyon17's quadratic-weighted kappa.

:func:`load_node_maps` reloads each node's probability map with its truth, so a decision rule can
be tried offline on a finished run without running the network again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from napari_metastasis.clinical.staging import (
    CATEGORIES,
    PN_STAGES,
    StagesFile,
    is_candidate,
    pn_stage,
    read_stages,
)
from napari_metastasis.evaluation.node_slides import read_truth
from napari_metastasis.evaluation.nodes import NodeTruth, truth_stages
from napari_metastasis.evaluation.stages import compare_stages
from napari_metastasis.maps.probability import ProbabilityMap

#: The issue's goals on the node validation (issue 20).
GOALS = {
    "max_false_candidates_per_mm2": 0.1,
    "min_kappa": 0.95,
}


@dataclass
class NodeResult:
    """One node: its truth, ``predict``'s verdict and the regions sorted into true and false."""

    name: str
    patient: str
    shape: str | None
    mpp: float
    on_grid: bool
    truth: str
    verdict: str
    correct: bool
    true_dimension_mm: float
    measured_dimension_mm: float | None  # largest confirmed true region (None: missed)
    dimension_error_mm: float | None
    within_stride: bool | None
    stride_mm: float
    candidates: int
    confirmed: int
    false_candidates: int
    false_regions_above_threshold: int
    false_confirmed: int
    largest_false_candidate_mm: float
    largest_false_confirmed_mm: float
    normal_area_mm2: float
    patches: int
    has_decision: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _region_outlines(geojson_path: Path) -> dict[str, BaseGeometry]:
    if not geojson_path.is_file():
        return {}
    data = json.loads(geojson_path.read_text())
    return {str(f.get("id")): shape(f["geometry"]) for f in data.get("features", [])}


def score_node(truth: NodeTruth, summary: dict, outlines: dict[str, BaseGeometry]) -> NodeResult:
    """Sort one node's regions (summary entries, outlines by uid) into true and false."""
    deposit = truth.deposit_px()
    regions = summary.get("regions", [])
    has_decision = "decision" in summary or any("confirmed" in r for r in regions)
    true_dims, false_cand, false_conf = [], [], []
    n_confirmed = false_above = 0
    for region in regions:
        confirmed = bool(region.get("confirmed", True)) if has_decision else True
        seeds = region.get("seed_patches") if has_decision else None
        candidate = is_candidate(confirmed, None if seeds is None else int(seeds))
        n_confirmed += confirmed
        outline = outlines.get(str(region.get("uid")))
        if outline is None:  # no outline: a point at the centroid stands in
            outline = shapely.Point(region.get("centroid_px") or (-1.0, -1.0))
            is_true = not deposit.is_empty and deposit.buffer(0.5).contains(outline)
        else:
            is_true = not deposit.is_empty and outline.intersection(deposit).area > 0
        size = float(region["greatest_dimension_mm"])
        if is_true:
            if confirmed:
                true_dims.append(size)
        else:
            false_above += 1
            if candidate:
                false_cand.append(size)
            if confirmed:
                false_conf.append(size)
    stride_mm = float(summary.get("stride_um", 80.0)) / 1000.0
    measured = max(true_dims) if true_dims else None
    has_deposit = truth.category != "negative"
    error = measured - truth.greatest_dimension_mm if has_deposit and measured is not None else None
    within = error is not None and abs(error) <= stride_mm + 1e-9
    return NodeResult(
        name=truth.name,
        patient=truth.patient,
        shape=truth.shape,
        mpp=truth.mpp,
        on_grid=truth.on_grid,
        truth=truth.category,
        verdict=str(summary.get("verdict")),
        correct=summary.get("verdict") == truth.category,
        true_dimension_mm=truth.greatest_dimension_mm,
        measured_dimension_mm=measured,
        dimension_error_mm=error,
        within_stride=within if has_deposit else None,
        stride_mm=stride_mm,
        candidates=len(regions),
        confirmed=n_confirmed,
        false_candidates=len(false_cand),
        false_regions_above_threshold=false_above,
        false_confirmed=len(false_conf),
        largest_false_candidate_mm=max(false_cand, default=0.0),
        largest_false_confirmed_mm=max(false_conf, default=0.0),
        normal_area_mm2=truth.normal_area_mm2,
        patches=int(summary.get("patches", -1)),
        has_decision=has_decision,
    )


def truth_stages_file(truths: Sequence[NodeTruth]) -> StagesFile:
    """The truth as a Camelyon17 reference (patients, slide categories, members)."""
    members: dict[str, list[str]] = {}
    for t in truths:
        members.setdefault(t.patient, []).append(f"{t.name}.tif")
    return StagesFile(
        patients=truth_stages(list(truths)),
        slides={f"{t.name}.tif": t.category for t in truths},
        members=members,
    )


def score_run(truths: Sequence[NodeTruth], out: str | Path) -> dict:
    """Every node of a ``predict --out`` folder and the run's patients, aggregates and goals."""
    out = Path(out)
    nodes: list[NodeResult] = []
    missing: list[str] = []
    for truth in truths:
        path = out / f"{truth.name}.summary.json"
        if not path.is_file():
            missing.append(truth.name)
            continue
        summary = json.loads(path.read_text())
        nodes.append(score_node(truth, summary, _region_outlines(out / f"{truth.name}.geojson")))
    reference = truth_stages_file(truths)
    stages_path = out / "stages.csv"
    predicted = read_stages(stages_path) if stages_path.is_file() else None
    stages_source = "stages.csv"
    if predicted is None:  # an interrupted run: stage the patients whose nodes all finished
        predicted = _stages_from_verdicts(truths, nodes)
        stages_source = "summaries (no stages.csv: run interrupted)"
    patients = []
    kappa = None
    comparison = None
    staged = [p for p in reference.patients if p in predicted.patients]
    if staged:
        partial = StagesFile(
            {p: reference.patients[p] for p in staged},
            {s: c for p in staged for s in reference.members[p] for c in [reference.slides[s]]},
            {p: reference.members[p] for p in staged},
        )
        comparison = compare_stages(partial, predicted)
        kappa = comparison.kappa
    for patient, stage in reference.patients.items():
        got = predicted.patients.get(patient)
        patients.append(
            {"patient": patient, "truth": stage, "predicted": got, "correct": got == stage}
        )
    aggregates = _aggregates(nodes)
    result = {
        "nodes": [n.to_dict() for n in nodes],
        "missing_nodes": missing,
        "patients": patients,
        "kappa": kappa,
        "kappa_patients": comparison.patients if comparison else 0,
        "stages_source": stages_source,
        "stage_confusion": comparison.stage_confusion if comparison else None,
        "slide_confusion": comparison.slide_confusion if comparison else None,
        "stages": list(PN_STAGES),
        "categories": list(CATEGORIES),
        **aggregates,
    }
    result["goals"] = goal_lines(result, nodes, patients)
    return result


def _stages_from_verdicts(truths: Sequence[NodeTruth], nodes: Sequence[NodeResult]) -> StagesFile:
    """Stages of the patients whose every node has a verdict (pn_stage of the verdicts)."""
    verdicts = {n.name: n.verdict for n in nodes}
    members: dict[str, list[str]] = {}
    for t in truths:
        members.setdefault(t.patient, []).append(t.name)
    complete = {p: names for p, names in members.items() if all(n in verdicts for n in names)}
    return StagesFile(
        {p: pn_stage([verdicts[n] for n in names]) for p, names in complete.items()},
        {f"{n}.tif": verdicts[n] for names in complete.values() for n in names},
        {p: [f"{n}.tif" for n in names] for p, names in complete.items()},
    )


def _aggregates(nodes: Sequence[NodeResult]) -> dict:
    normal_area = sum(n.normal_area_mm2 for n in nodes)
    false_cand = sum(n.false_candidates for n in nodes)
    negatives = [n for n in nodes if n.truth == "negative"]
    deposits = [n for n in nodes if n.truth in ("micro", "macro")]
    errors = [n.dimension_error_mm for n in deposits if n.dimension_error_mm is not None]
    itc = [n for n in nodes if n.truth == "itc"]
    per_node_rate = [n.false_candidates / n.normal_area_mm2 for n in negatives]
    return {
        "node_accuracy": float(np.mean([n.correct for n in nodes])) if nodes else None,
        "nodes_right": sum(n.correct for n in nodes),
        "nodes_scored": len(nodes),
        "negative_nodes": len(negatives),
        "negative_nodes_negative": sum(n.verdict == "negative" for n in negatives),
        "normal_tissue_mm2": normal_area,
        "false_candidates": false_cand,
        "false_candidates_per_mm2": false_cand / normal_area if normal_area else None,
        "false_regions_above_threshold_per_mm2": (
            sum(n.false_regions_above_threshold for n in nodes) / normal_area
            if normal_area
            else None
        ),
        "false_candidates_per_mm2_negative_nodes": [min(per_node_rate), max(per_node_rate)]
        if per_node_rate
        else None,
        "largest_false_candidate_mm": max(
            (n.largest_false_candidate_mm for n in nodes), default=0.0
        ),
        "confirmed_false_deposits": sum(n.false_confirmed for n in nodes),
        "nodes_with_confirmed_false_deposits": sum(n.false_confirmed > 0 for n in nodes),
        "largest_confirmed_false_deposit_mm": max(
            (n.largest_false_confirmed_mm for n in nodes), default=0.0
        ),
        "deposits": len(deposits),
        "deposits_found": len(errors),
        "deposits_within_one_stride": sum(bool(n.within_stride) for n in deposits),
        "dimension_error_mm": {
            "mean": float(np.mean(errors)) if errors else None,
            "mean_abs": float(np.mean(np.abs(errors))) if errors else None,
            "max_abs": float(np.max(np.abs(errors))) if errors else None,
        },
        "itc_nodes": len(itc),
        "itc_nodes_right": sum(n.correct for n in itc),
        "decision_in_summaries": any(n.has_decision for n in nodes),
    }


def goal_lines(result: dict, nodes: Sequence[NodeResult], patients: Sequence[dict]) -> list[dict]:
    """The issue's goals on this run, each as {goal, measured, pass}."""
    deposits = [n for n in nodes if n.truth in ("micro", "macro")]
    rate = result["false_candidates_per_mm2"]
    kappa = result["kappa"]
    lines = [
        (
            "every negative node negative, no confirmed false deposit on any node",
            f"{result['negative_nodes_negative']}/{result['negative_nodes']} negative nodes "
            f"negative; {result['confirmed_false_deposits']} confirmed false deposits",
            result["negative_nodes_negative"] == result["negative_nodes"]
            and result["confirmed_false_deposits"] == 0,
        ),
        (
            f"<= {GOALS['max_false_candidates_per_mm2']} candidate regions per mm² of normal tissue",
            "n/a" if rate is None else f"{rate:.3f} per mm²",
            rate is not None and rate <= GOALS["max_false_candidates_per_mm2"],
        ),
        (
            "every micro and macro node right",
            f"{sum(n.correct for n in deposits)}/{len(deposits)}",
            bool(deposits) and all(n.correct for n in deposits),
        ),
        (
            "greatest dimension within one stride of the truth",
            f"{sum(bool(n.within_stride) for n in deposits)}/{len(deposits)}",
            bool(deposits) and all(n.within_stride for n in deposits),
        ),
        (
            "pN stage right for every patient",
            f"{sum(p['correct'] for p in patients)}/{len(patients)}",
            bool(patients) and all(p["correct"] for p in patients),
        ),
        (
            f"quadratic-weighted kappa >= {GOALS['min_kappa']}",
            "n/a" if kappa is None else f"{kappa:.3f}",
            kappa is not None and kappa >= GOALS["min_kappa"],
        ),
    ]
    return [{"goal": g, "measured": m, "pass": bool(p)} for g, m, p in lines]


# --- offline: the maps of a finished run --------------------------------------------------------
@dataclass
class NodeMap:
    """A node's probability map and truth, and which map cells cover its deposit and its tissue."""

    truth: NodeTruth
    prob_map: ProbabilityMap
    deposit_cells: np.ndarray  # (rows, cols) bool: the cell's footprint overlaps the deposit
    tissue_cells: np.ndarray  # (rows, cols) bool: the footprint overlaps the tissue square


def _cells_overlapping(prob_map: ProbabilityMap, geometry: BaseGeometry) -> np.ndarray:
    from napari_metastasis.maps.contours import cell_footprints

    rows, cols = prob_map.grid.shape
    cells = np.argwhere(np.ones((rows, cols), bool))
    boxes = shapely.box(*cell_footprints(prob_map, cells).T)
    if geometry.is_empty:
        return np.zeros((rows, cols), bool)
    hit = shapely.area(shapely.intersection(boxes, geometry)) > 0
    return hit.reshape(rows, cols)


def load_node_maps(folder: str | Path) -> list[NodeMap]:
    """Each node of a bench output folder (``predict --out`` with ``nodes_truth.json`` beside it):
    its ``<name>.prob.zarr`` (else ``.prob.tiff``) and truth, for trying a rule without inference."""
    from napari_metastasis.maps.store import load_map

    folder = Path(folder)
    truths, _ = read_truth(folder)
    maps = []
    for truth in truths:
        path = folder / f"{truth.name}.prob.zarr"
        if not path.exists():
            path = folder / f"{truth.name}.prob.tiff"
        prob_map = load_map(path)
        maps.append(
            NodeMap(
                truth,
                prob_map,
                _cells_overlapping(prob_map, truth.deposit_px()),
                _cells_overlapping(prob_map, truth.tissue_px()),
            )
        )
    return maps


def markdown_table(result: dict) -> str:
    """The run in a few Markdown rows, for a model card (``result``: :func:`score_run`'s dict)."""
    kappa = "n/a" if result["kappa"] is None else f"{result['kappa']:.3f}"
    rate = result["false_candidates_per_mm2"]
    err = result["dimension_error_mm"]
    rows = [
        ("nodes right", f"{result['nodes_right']}/{result['nodes_scored']}"),
        (
            "negative nodes negative",
            f"{result['negative_nodes_negative']}/{result['negative_nodes']}",
        ),
        ("ITC nodes right", f"{result['itc_nodes_right']}/{result['itc_nodes']}"),
        (
            "patients with the right pN (kappa)",
            f"{sum(p['correct'] for p in result['patients'])}/{len(result['patients'])} ({kappa})",
        ),
        (
            "false candidate regions per mm² of normal tissue",
            "n/a" if rate is None else f"{rate:.2f}",
        ),
        (
            "false regions above the threshold per mm² (exploring view)",
            "n/a"
            if result.get("false_regions_above_threshold_per_mm2") is None
            else f"{result['false_regions_above_threshold_per_mm2']:.2f}",
        ),
        ("largest false candidate", f"{result['largest_false_candidate_mm']:.2f} mm"),
        ("confirmed false deposits", str(result["confirmed_false_deposits"])),
        (
            "micro/macro deposits measured within one stride",
            f"{result['deposits_within_one_stride']}/{result['deposits']}"
            + ("" if err["mean"] is None else f" (mean error {err['mean']:+.2f} mm)"),
        ),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
