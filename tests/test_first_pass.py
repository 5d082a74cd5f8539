"""The first-pass shortcut (issue 24): two of the bundled model's eight views settle the plainly
normal patches; the full model classifies the rest, and the ring around every candidate region.

* the first pass is two of the ensemble's own views (each view's probability one the full model
  averages), and only the package's ensembles have one;
* which cells the full model must check (the cut, the candidates' rings, only first-pass cells);
* the mark of first-pass cells in the map, through updates, merges, the TIFF and the OME-Zarr
  (written batch by batch, so a killed run's resume knows them);
* on real tissue (a node slide of held-out PCam patches with a micrometastasis, and the sample):
  the shortcut's verdict, confirmed deposits and their sizes are the exhaustive run's, every patch
  the full model checked has the exhaustive probability (to 1e-6), and settled patches are under
  the cut; ``--exhaustive`` settles nothing, and an exhaustive run over a shortcut's map classifies
  the settled patches again;
* a run cancelled while the full model checks is reported as cancelled, not as finished.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from engine_helpers import write_darkness_model

from napari_metastasis.cli import main
from napari_metastasis.evaluation.node_slides import build_node_set
from napari_metastasis.evaluation.nodes import NodeSpec
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.maps.store import ZarrMapWriter, load_zarr, save_zarr
from napari_metastasis.models import load_model, resolve_threshold
from napari_metastasis.models.networks import DIHEDRAL_VIEWS, FIRST_PASS_VIEWS, first_pass_module
from napari_metastasis.pipeline import (
    Batch,
    CancelToken,
    FirstPass,
    Planned,
    Stage,
    cells_for_full_model,
    collect,
    predict_slide,
    run_slide,
)
from napari_metastasis.pipeline.first_pass import CUT_RATIO
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Slide

#: A part of the sample slide with tissue and glass (level-0 px: x, y, w, h).
REGION = (300, 500, 1300, 1500)


@pytest.fixture(scope="module")
def bundled():
    """The bundled model as torch runs it: these tests look inside its ensemble (ONNX Runtime,
    the default on the CPU, runs the same views: tests/test_onnx_backend.py)."""
    return load_model("default", device="cpu", backend="torch")


@pytest.fixture(scope="module")
def shortcut(bundled) -> FirstPass:
    """The shortcut the ``predict`` command takes with the bundled model."""
    return FirstPass.for_model(bundled.config.extra, resolve_threshold(None, bundled).value)


# --- the first pass ----------------------------------------------------------------------------------
def test_the_first_pass_averages_two_of_the_ensembles_own_views(bundled):
    ensemble = bundled.module
    first = bundled.first_pass
    assert first is not None and first.views == FIRST_PASS_VIEWS == (0, 1)
    torch.manual_seed(0)
    x = torch.rand(6, 3, 80, 80)
    with torch.inference_mode():
        views = []
        for i in range(8):  # view i by member i % 3, as the ensemble deals them out
            turns, flip = DIHEDRAL_VIEWS[i]
            xv = torch.flip(x, dims=[3]) if flip else x
            xv = torch.rot90(xv, turns, dims=[2, 3])
            views.append(torch.sigmoid(ensemble.members[i % 3].logit(xv)))
        per_view = torch.stack(views, 1)
        full = torch.softmax(ensemble(x), 1)[:, 1]
        cheap = torch.softmax(first(x), 1)[:, 1]
    torch.testing.assert_close(full, per_view.mean(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(cheap, per_view[:, :2].mean(1), atol=1e-6, rtol=0)
    assert not torch.allclose(cheap, full, atol=1e-4)  # a different, cheaper answer


def test_only_the_packages_ensembles_have_a_first_pass(tmp_path, bundled):
    darkness = load_model(write_darkness_model(tmp_path / "dark", 32, spacing=1.0), device="cpu")
    assert darkness.first_pass is None
    assert first_pass_module(bundled.module.members[0]) is None  # one network, no views
    with pytest.raises(ValueError, match="no first pass"):
        darkness.forward(torch.zeros(1, 3, 32, 32), first_pass=True)


# --- which cells the full model checks ---------------------------------------------------------------
def test_the_full_model_checks_uncertain_cells_and_the_ring_of_candidates():
    shortcut = FirstPass(threshold=0.5, seed=0.9)
    assert shortcut.cut == pytest.approx(CUT_RATIO * 0.5) == pytest.approx(0.25)
    values = np.full((9, 12), 0.1, np.float32)
    values[0, 0] = np.nan  # not analysed: never checked
    values[1, 1] = 0.3  # uncertain (>= the cut)
    values[4:6, 2:4] = [[0.95, 0.7], [0.6, 0.6]]  # a candidate: a region holding a seed
    values[4:6, 8:10] = 0.7  # a region without a seed
    marks = np.ones(values.shape, bool)
    marks[8, 11] = False
    values[8, 11] = 0.4  # the full model's answer already: never checked again
    cells = {tuple(c) for c in cells_for_full_model(values, marks, shortcut)}
    ring = {(r, c) for r in range(3, 7) for c in range(1, 5)}  # the candidate and its ring
    unseeded = {(r, c) for r in (4, 5) for c in (8, 9)}  # >= the cut; their ring is settled
    assert cells == {(1, 1)} | ring | unseeded
    # without a seed level, every region at the threshold is a candidate
    everything = {tuple(c) for c in cells_for_full_model(values, marks, FirstPass(0.5))}
    assert everything == cells | {(r, c) for r in range(3, 7) for c in range(7, 11)}


# --- the mark in the map and its files ---------------------------------------------------------------
def _grid() -> PatchGrid:
    return PatchGrid(800, 600, 1.0, 1.0, patch_px=80, spacing_um=1.0)


def test_first_pass_cells_are_marked_through_updates_merges_and_files(tmp_path):
    prob = ProbabilityMap.empty(_grid())
    prob.update(np.array([[0, 0], [0, 1], [2, 3]]), np.array([0.1, 0.2, 0.6]), first_pass=True)
    prob.update(np.array([[2, 3]]), np.array([0.7]))  # the full model's answer replaces it
    assert prob.n_first_pass == 2 and prob.first_pass_mask[0, :2].all()
    assert not prob.first_pass_mask[2, 3] and prob.values[2, 3] == pytest.approx(0.7)
    other = ProbabilityMap.empty(prob.grid)
    other.update(np.array([[0, 0]]), np.array([0.15]))
    prob.merge(other)
    assert prob.n_first_pass == 1 and not prob.first_pass_mask[0, 0]

    for reloaded in (
        ProbabilityMap.load(prob.save(tmp_path / "m.prob.tiff")),
        load_zarr(save_zarr(prob, tmp_path / "m.prob.zarr")),
    ):
        np.testing.assert_array_equal(reloaded.first_pass_mask, prob.first_pass_mask)
        np.testing.assert_array_equal(reloaded.values, prob.values)

    # the OME-Zarr a run grows: marked batch by batch, so a killed run's resume knows them
    live = tmp_path / "live.zarr"
    writer = ZarrMapWriter.create(live, ProbabilityMap.empty(prob.grid), ["normal", "tumor"])
    writer.write(np.array([[1, 1], [1, 2]]), np.array([[0.9, 0.1], [0.6, 0.4]]), first_pass=True)
    writer.write(np.array([[1, 2]]), np.array([[0.5, 0.5]]))
    resumed = ZarrMapWriter.resume(live).prob_map
    assert resumed.first_pass_mask[1, 1] and not resumed.first_pass_mask[1, 2]
    assert resumed.n_first_pass == 1 and resumed.values[1, 2] == pytest.approx(0.5)


# --- real tissue ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def micro_node(tmp_path_factory, shared_data_dir):
    """A node slide of held-out PCam patches: 20 x 20 cells with an 8 x 8-cell micrometastasis."""
    from napari_metastasis.datasets.pcam_splits import pcam_part

    folder = tmp_path_factory.mktemp("node")
    spec = NodeSpec("patient_009_node_0", "patient_009", "micro", "block8x8", node_cells=20)
    build_node_set([spec], pcam_part(shared_data_dir, "test"), folder, seed=11, part="test")
    return folder / f"{spec.name}.tif"


@pytest.mark.slow
def test_the_shortcut_gives_the_full_models_answer_on_a_node(tmp_path, micro_node):
    runs = {}
    for name, flags in (("shortcut", []), ("exhaustive", ["--exhaustive"])):
        out = tmp_path / name
        assert main(["predict", str(micro_node), "--out", str(out), "--device", "cpu", *flags]) == 0
        summary = json.loads((out / f"{micro_node.stem}.summary.json").read_text())
        runs[name] = (summary, load_zarr(out / f"{micro_node.stem}.prob.zarr"))
    (short, short_map), (full, full_map) = runs["shortcut"], runs["exhaustive"]
    settled = short_map.first_pass_mask
    assert full["patches_first_pass_only"] == 0 and not full_map.first_pass_mask.any()
    assert short["patches_first_pass_only"] == int(settled.sum()) > short["patches"] // 3
    assert short["verdict"] == full["verdict"] == "micro"
    assert short["greatest_dimension_mm"] == full["greatest_dimension_mm"]
    for a, b in zip(short["regions"], full["regions"], strict=True):
        assert (a["confirmed"], a["greatest_dimension_mm"]) == (
            b["confirmed"],
            b["greatest_dimension_mm"],
        )
        assert a["max_prob"] == pytest.approx(b["max_prob"], abs=1e-6)
    # every patch the full model checked holds the exhaustive probability (to float rounding: a
    # batch of other patches rounds a patch's last bit differently); settled ones are low
    checked = ~settled & ~np.isnan(full_map.values)
    np.testing.assert_allclose(short_map.values[checked], full_map.values[checked], atol=1e-6)
    assert (short_map.values[settled] < 0.25).all() and (full_map.values[settled] < 0.5).all()
    # the patch CSV lists each patch once, the full model's answer where it checked
    table = pd.read_csv(tmp_path / "shortcut" / f"{micro_node.stem}.csv")
    assert len(table) == short["patches"] == full["patches"]


def test_the_sample_in_the_viewers_way_and_an_exhaustive_run_over_it(bundled, shortcut, svs_file):
    with Slide(svs_file) as slide:
        quick = predict_slide(slide, bundled, region=REGION, shortcut=shortcut)
        assert quick.prob_map.n_first_pass > 0 and not quick.cancelled
        assert quick.prob_map.extra["first_pass"] == shortcut.to_dict()
        assert len(quick.table) == quick.prob_map.n_analysed  # each patch once
        settled = quick.prob_map.first_pass_mask.copy()
        exhaustive = predict_slide(slide, bundled, region=REGION)
        # an exhaustive run over the shortcut's map classifies exactly the settled cells again
        again = predict_slide(slide, bundled, region=REGION, prob_map=quick.prob_map)
    assert again.n_planned == int(settled.sum())
    assert not again.prob_map.first_pass_mask.any()
    np.testing.assert_allclose(again.prob_map.values, exhaustive.prob_map.values, atol=1e-6)


def test_a_run_cancelled_while_the_full_model_checks_is_not_finished(bundled, micro_node):
    """The micrometastasis is a candidate: after the first pass, the full model checks the settled
    patches around it; a run cancelled then has not finished."""
    token = CancelToken()
    shortcut = FirstPass.for_model(bundled.config.extra, 0.5)

    def cancel_at_the_check(events):
        for event in events:
            if isinstance(event, Stage) and event.message.startswith("Checking"):
                token.cancel()
            yield event

    with Slide(micro_node) as slide:
        events = list(
            cancel_at_the_check(run_slide(slide, bundled, cancel=token, shortcut=shortcut))
        )
        result = collect(iter(events))
    batches = [e for e in events if isinstance(e, Batch)]
    (planned,) = [e for e in events if isinstance(e, Planned)]
    assert any(isinstance(e, Stage) and e.message.startswith("Checking") for e in events)
    assert batches and not any(b.checking for b in batches)  # the check never started
    # the first pass classified every patch; the uncertain ones got the full model at once
    assert sum(len(b.cells) for b in batches) == planned.total
    marks = np.concatenate([np.broadcast_to(b.first_pass, len(b.cells)) for b in batches])
    assert marks.any() and not marks.all()
    assert result.cancelled


def test_uncertain_patches_get_the_full_model_in_their_batch(bundled, shortcut, svs_file):
    """A first-pass batch comes back with a per-patch mark: the settled patches hold the first
    pass's probability, the uncertain ones the rest of the views combined into the full model's."""
    from napari_metastasis.pipeline import make_grid, run_inference

    with Slide(svs_file) as slide:
        grid = make_grid(slide, bundled)
        cells = np.argwhere(np.ones(grid.shape, bool))[:64]
        results = list(
            run_inference(
                slide, bundled, cells, grid, first_pass=True, check=lambda p: p >= shortcut.cut
            )
        )
        full = {
            tuple(c): p
            for r in run_inference(slide, bundled, cells, grid)
            for c, p in zip(r.cells, r.positive, strict=True)
        }
    assert results[-1].done == 64
    settled = checked = 0
    for r in results:
        marks = np.broadcast_to(r.first_pass, len(r.cells))
        assert (r.positive[marks] < shortcut.cut).all()
        for c, p in zip(map(tuple, r.cells[~marks]), r.positive[~marks], strict=True):
            assert p == pytest.approx(full[c], abs=1e-6)
        settled, checked = settled + int(marks.sum()), checked + int((~marks).sum())
    assert settled and checked


def test_regions_below_the_shortcuts_threshold_come_with_a_caution():
    from napari_metastasis.pipeline.first_pass import first_pass_caution

    prob = ProbabilityMap.empty(_grid())
    prob.update(np.array([[0, 0], [0, 1]]), np.array([0.1, 0.2]), first_pass=True)
    prob.update(np.array([[1, 1]]), np.array([0.7]))
    assert first_pass_caution(prob, 0.3) == ""  # no record of the run's threshold: no claim
    prob.extra["first_pass"] = FirstPass(0.5, 0.9).to_dict()
    assert first_pass_caution(prob, 0.5) == first_pass_caution(prob, 0.7) == ""
    assert first_pass_caution(prob, 0.3).startswith("Below 0.50, 2 patches hold the first pass")
    prob.update(np.array([[0, 0], [0, 1]]), np.array([0.12, 0.22]))  # an exhaustive run since
    assert first_pass_caution(prob, 0.3) == ""
