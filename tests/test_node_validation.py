"""The node validation in small (issue 20): node slides of held-out PCam patches, their truth, their
read-back, and `predict` scored against them. Asserts the validation's own machinery, not the
model's quality (benchmarks/bench_nodes.py and `make validate` measure that)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import openslide
import pytest
import shapely

from napari_metastasis.clinical.staging import greatest_dimension_um
from napari_metastasis.datasets.pcam_splits import pcam_part
from napari_metastasis.evaluation.node_scores import (
    load_node_maps,
    markdown_table,
    score_node,
    score_run,
)
from napari_metastasis.evaluation.node_slides import (
    BUILDING_FILE,
    TRUTH_FILE,
    build_node_set,
    read_truth,
    render_node,
    set_key,
)
from napari_metastasis.evaluation.nodes import (
    CELL_UM,
    OFF_GRID_UM,
    ON_GRID_UM,
    SCAN_40X_MPP,
    NodeSpec,
    plan_nodes,
    truth_stages,
)
from napari_metastasis.slides.slide import Slide

SPECS = [
    NodeSpec("patient_000_node_0", "patient_000", "negative", None, node_cells=10, index=0),
    NodeSpec(
        "patient_000_node_1",
        "patient_000",
        "itc",
        "cell2",
        offset_um=OFF_GRID_UM,
        node_cells=10,
        index=1,
    ),
    NodeSpec(
        "patient_000_node_2", "patient_000", "micro", "block8x8", mpp=0.25, node_cells=10, index=2
    ),
    NodeSpec(
        "patient_000_node_3",
        "patient_000",
        "micro",
        "ell10",
        offset_um=OFF_GRID_UM,
        node_cells=10,
        index=3,
    ),
]


@pytest.fixture(scope="module")
def held_out(shared_data_dir):
    return pcam_part(shared_data_dir, "test")


@pytest.fixture(scope="module")
def node_set(tmp_path_factory, held_out):
    folder = tmp_path_factory.mktemp("nodes")
    return folder, build_node_set(SPECS, held_out, folder, seed=7, part="test")


@pytest.fixture(scope="module")
def predicted(project_root, tmp_path_factory, node_set):
    folder, truths = node_set
    out = tmp_path_factory.mktemp("predict")
    env = {**os.environ, "PYTHONPATH": str(project_root)}
    slides = [str(folder / f"{t.name}.tif") for t in truths]
    proc = subprocess.run(
        [sys.executable, "-m", "napari_metastasis.cli", "predict", *slides, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,  # a hang guard; a loaded 2-core machine needs minutes
    )
    assert proc.returncode == 0, proc.stderr
    (out / TRUTH_FILE).write_bytes((folder / TRUTH_FILE).read_bytes())
    return out, truths


@pytest.mark.slow
def test_truth_geometry_is_the_max_feret_of_the_tumour_cells(node_set):
    _, truths = node_set
    by_shape = {t.shape: t for t in truths}
    # An 8 x 8 block of 80-µm cells: 0.64 mm side, measured as its diagonal (max Feret).
    assert by_shape["block8x8"].greatest_dimension_mm == pytest.approx(0.64 * math.sqrt(2))
    assert by_shape["block8x8"].category == "micro"
    assert by_shape["cell2"].greatest_dimension_mm == pytest.approx(math.hypot(0.16, 0.08))
    assert by_shape["cell2"].category == "itc"
    assert by_shape["ell10"].greatest_dimension_mm == pytest.approx(0.8 * math.sqrt(2))
    assert len(by_shape["ell10"].tumour_cells) == 10 * 3 + 7 * 3
    assert by_shape[None].category == "negative" and not by_shape[None].tumour_cells
    # The same size in the slide's own pixels, measured as `predict` measures regions.
    for t in truths:
        assert greatest_dimension_um(t.deposit_px(), t.mpp) / 1000 == pytest.approx(
            t.greatest_dimension_mm
        )
    assert truth_stages(truths) == {"patient_000": "pN1mi"}


@pytest.mark.slow
def test_tissue_sits_on_and_off_the_model_grid(node_set):
    _, truths = node_set
    for t in truths:
        assert t.tissue_origin_um == 3 * CELL_UM + t.offset_um
        assert t.on_grid == (t.offset_um == ON_GRID_UM)
    assert {t.offset_um for t in truths} == {ON_GRID_UM, OFF_GRID_UM}


@pytest.mark.slow
def test_slides_read_back_at_the_written_resolution(node_set):
    folder, truths = node_set
    for t in truths:
        path = folder / f"{t.name}.tif"
        with openslide.OpenSlide(str(path)) as osr:
            assert float(osr.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(t.mpp)
        with Slide(path) as slide:
            assert slide.mpp == pytest.approx(t.mpp)
            assert slide.dimensions == t.size_px
            assert slide.level_count >= 3
            level = slide.best_level_for_downsample(1.0 / t.mpp)  # the model's 1 µm/px
            assert slide.level_downsamples[level] == pytest.approx(1.0 / t.mpp)
            # glass in the margin, tissue in the middle of the square
            corner = slide.read_region(0, 0, 0, 16, 16)
            assert corner.min() >= 230
    fortyx = next(t for t in truths if t.mpp == SCAN_40X_MPP)
    with Slide(folder / f"{fortyx.name}.tif") as slide:
        assert slide.best_level_for_downsample(4.0) == 2


def test_nodes_are_deterministic_and_turn_their_patches(held_out):
    a, truth_a = render_node(SPECS[1], held_out, seed=7)
    b, truth_b = render_node(SPECS[1], held_out, seed=7)
    np.testing.assert_array_equal(a, b)
    assert truth_a.tumour_cells == truth_b.tumour_cells and truth_a.patches == truth_b.patches
    _, truth_c = render_node(SPECS[1], held_out, seed=8)
    assert truth_c.patches != truth_a.patches
    # every patch of the node comes from the held-out part, tumour cells from its positives
    stems = {p.stem: int(lab) for p, lab in zip(held_out.paths, held_out.labels, strict=True)}
    n = SPECS[1].node_cells
    for k, stem in enumerate(truth_a.patches):
        assert stems[stem] == int((k // n, k % n) in truth_a.tumour_cells)


def test_the_default_set_covers_every_stage_and_both_scans():
    specs = plan_nodes(40)
    assert len(specs) == 40 and len({s.patient for s in specs}) == 8
    stages = set()
    for p in sorted({s.patient for s in specs}):
        cats = [s.category for s in specs if s.patient == p]
        from napari_metastasis.clinical.staging import pn_stage

        stages.add(pn_stage(cats))
    assert stages == {"pN0", "pN0(i+)", "pN1mi", "pN1", "pN2"}
    assert {s.mpp for s in specs} == {1.0, 0.25}
    assert {s.offset_um for s in specs} == {ON_GRID_UM, OFF_GRID_UM}
    assert len({s.shape for s in specs if s.category == "micro"}) >= 4
    assert len({s.shape for s in specs if s.category == "macro"}) >= 3


@pytest.mark.slow
def test_scoring_sorts_regions_into_true_and_false(node_set):
    _, truths = node_set
    t = next(t for t in truths if t.shape == "block8x8")
    deposit = t.deposit_px()
    far = shapely.box(0, 0, 80 / t.mpp, 80 / t.mpp)  # a false region on the glass corner
    summary = {
        "verdict": "micro",
        "stride_um": 80.0,
        "patches": 100,
        "decision": {"name": "hysteresis"},
        "regions": [
            {"uid": "a", "greatest_dimension_mm": 0.95, "confirmed": True},
            {"uid": "b", "greatest_dimension_mm": 0.11, "confirmed": False},
            {"uid": "c", "greatest_dimension_mm": 0.3, "confirmed": True},
        ],
    }
    outlines = {"a": deposit, "b": far, "c": shapely.box(1, 1, 5, 5)}
    r = score_node(t, summary, outlines)
    assert (r.candidates, r.confirmed, r.false_candidates, r.false_confirmed) == (3, 2, 2, 1)
    assert r.correct and r.measured_dimension_mm == 0.95 and r.within_stride
    assert r.largest_false_confirmed_mm == 0.3 and r.largest_false_candidate_mm == 0.3
    # a summary without decision fields: every region counts as confirmed
    for region in summary["regions"]:
        region.pop("confirmed")
    del summary["decision"]
    assert score_node(t, summary, outlines).false_confirmed == 2


@pytest.mark.slow
def test_predict_on_the_nodes_is_scored(predicted):
    out, truths = predicted
    result = score_run(truths, out)
    assert [n["name"] for n in result["nodes"]] == [t.name for t in truths]
    assert not result["missing_nodes"]
    for n in result["nodes"]:
        assert n["verdict"] in ("negative", "itc", "micro", "macro")
        assert n["patches"] > 0 and n["normal_area_mm2"] > 0
        assert n["false_candidates"] <= n["candidates"]
    assert result["patients"] == [
        {
            "patient": "patient_000",
            "truth": "pN1mi",
            "predicted": result["patients"][0]["predicted"],
            "correct": result["patients"][0]["predicted"] == "pN1mi",
        }
    ]
    assert result["patients"][0]["predicted"] in ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")
    assert isinstance(result["kappa"], float)
    assert len(result["goals"]) == 6 and all(isinstance(g["pass"], bool) for g in result["goals"])
    assert result["normal_tissue_mm2"] == pytest.approx(
        sum(t.normal_cells for t in truths) * 0.0064
    )
    json.dumps(result)  # the bench writes it as JSON
    assert f"| nodes right | {result['nodes_right']}/4 |" in markdown_table(result)


@pytest.mark.slow
def test_maps_reload_with_their_truth_for_offline_rules(predicted):
    out, truths = predicted
    maps = load_node_maps(out)
    assert [m.truth.name for m in maps] == [t.name for t in truths]
    for m in maps:
        assert m.prob_map.values.shape == m.deposit_cells.shape == m.tissue_cells.shape
        on_grid = m.truth.on_grid
        side = m.truth.node_cells + (0 if on_grid else 1)
        assert m.tissue_cells.sum() == side * side
        if m.truth.category == "negative":
            assert not m.deposit_cells.any()
        elif on_grid:
            assert m.deposit_cells.sum() == len(m.truth.tumour_cells)
        else:
            assert m.deposit_cells.sum() > len(m.truth.tumour_cells)
    _, info = read_truth(out)
    assert info["part"] == "test" and info["seed"] == 7


@pytest.mark.slow
def test_an_interrupted_run_is_scored_on_the_nodes_that_finished(predicted, tmp_path):
    out, truths = predicted
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    full = score_run(truths, out)
    # predict stopped before staging (a set of fewer than five nodes a patient has none: F8)
    (partial / "stages.csv").unlink(missing_ok=True)
    staged = score_run(truths, partial)
    assert staged["stages_source"].startswith("summaries")
    assert staged["patients"] == full["patients"]  # the same stage, from the verdicts
    (partial / f"{truths[0].name}.summary.json").unlink()
    result = score_run(truths, partial)
    assert result["missing_nodes"] == [truths[0].name]
    assert result["patients"][0]["predicted"] is None and result["kappa"] is None
    assert result["nodes_scored"] == len(truths) - 1


def test_an_interrupted_build_keeps_its_finished_slides(held_out, tmp_path):
    specs = [
        NodeSpec(f"patient_000_node_{i}", "patient_000", "negative", None, node_cells=4, index=i)
        for i in range(3)
    ]
    first = build_node_set(specs, held_out, tmp_path, seed=1)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.tif")}
    # as if stopped while writing the last slide: the build marker and two slides are left
    (tmp_path / TRUTH_FILE).unlink()
    (tmp_path / "patient_000_node_2.tif").unlink()
    (tmp_path / BUILDING_FILE).write_text(json.dumps({"key": set_key(specs, held_out, 1)}))
    again = build_node_set(specs, held_out, tmp_path, seed=1)
    assert [t.to_dict() for t in again] == [t.to_dict() for t in first]
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.tif")}
    assert after["patient_000_node_0.tif"] == stamps["patient_000_node_0.tif"]
    assert after["patient_000_node_1.tif"] == stamps["patient_000_node_1.tif"]
    assert not (tmp_path / BUILDING_FILE).exists()
    # another seed is another set: every slide is written again
    build_node_set(specs, held_out, tmp_path, seed=2)
    assert all(p.stat().st_mtime_ns != after[p.name] for p in tmp_path.glob("*.tif"))
