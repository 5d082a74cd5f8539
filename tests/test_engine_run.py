"""The one pipeline (engine.run_slide) and the one finish step (engine.answer_slide).

* The ``predict`` command, :func:`predict_slide` and the viewer's job (run by the real
  :class:`AnalysisRunner` in a Qt thread worker) give the same probabilities for the same region
  of a real slide with the bundled model: they all drive run_slide.
* Cancel and resume through run_slide, with the darkness model, whose tumour probability is the
  black fraction of the patch, so every value is known from the pixels.
* run_slide never writes the map (the viewer writes it on the GUI thread): a batch reaches the map
  only when its event is applied; the store gets every batch before it is yielded.
* answer_slide: one region list for the GeoJSON, the summary and the Camelyon16 detection file.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from engine_helpers import write_darkness_model, write_pyramid_tiff

from napari_metastasis.cli import main
from napari_metastasis.clinical.decision import DecisionRule
from napari_metastasis.maps.contours import probability_contours
from napari_metastasis.maps.detections import detections_from_map
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.maps.store import load_zarr
from napari_metastasis.models import load_model, resolve_threshold
from napari_metastasis.pipeline import (
    Batch,
    CancelToken,
    FirstPass,
    Planned,
    Stage,
    answer_slide,
    make_grid,
    predict_slide,
    run_slide,
)
from napari_metastasis.slides.slide import Slide

#: A part of the 2220 x 2967 px sample slide with tissue and glass (level-0 px: x, y, w, h).
REGION = (300, 500, 1300, 1500)


@pytest.fixture(scope="module")
def darkness(tmp_path_factory):
    folder = write_darkness_model(tmp_path_factory.mktemp("m") / "darkness", 32, spacing=1.0)
    return load_model(folder, device="cpu")


@pytest.fixture(scope="module")
def shapes_slide(tmp_path_factory):
    """White 1300 x 1000 px at 0.25 µm/px with a black square: 11 x 8 patches of 32 µm."""
    image = np.full((1000, 1300, 3), 255, np.uint8)
    image[200:600, 300:752] = 0
    return write_pyramid_tiff(tmp_path_factory.mktemp("s") / "shapes.tiff", image, mpp=0.25)


def _black_fraction(grid, cells) -> np.ndarray:
    """What the darkness model must say for ``cells`` of the shapes slide."""
    image = np.zeros((1000, 1300))
    image[200:600, 300:752] = 1.0
    return np.array([image[y : y + h, x : x + w].mean() for x, y, w, h in grid.cell_boxes(cells)])


# --- one pipeline: the three callers agree ---------------------------------------------------------
@pytest.mark.gui
def test_predict_command_predict_slide_and_viewer_job_give_the_same_probabilities(
    tmp_path, qtbot, svs_file
):
    from napari_metastasis.widgets.jobs import JobRequest, Resources
    from napari_metastasis.widgets.runner import AnalysisRunner
    from napari_metastasis.widgets.selection import Rect
    from napari_metastasis.widgets.session import AnalysisStore

    out = tmp_path / "out"
    region = ",".join(str(v) for v in REGION)
    assert (
        main(["predict", str(svs_file), "--out", str(out), "--region", region, "--device", "cpu"])
        == 0
    )
    command = load_zarr(out / "CMU-1-Small-Region.prob.zarr")
    command_csv = pd.read_csv(out / "CMU-1-Small-Region.csv")

    model = load_model("default", device="cpu")
    # the command and the viewer take the first-pass shortcut at the model's threshold by default
    shortcut = FirstPass.for_model(model.config.extra, resolve_threshold(None, model).value)
    with Slide(svs_file) as slide:
        library = predict_slide(slide, model, region=REGION, shortcut=shortcut)

    runner = AnalysisRunner(AnalysisStore(), Resources())
    ended = []
    runner.finished.connect(ended.append)
    request = JobRequest(
        slide_path=str(svs_file),
        model_ref="default",
        model_name="default",
        description="a rectangle",
        region=Rect(*REGION),
        device="cpu",
    )
    runner.submit(request)
    qtbot.waitUntil(lambda: bool(ended), timeout=60_000)
    (summary,) = ended
    assert summary.error is None and not summary.cancelled
    viewer = summary.prob_map

    # the same cells (tissue in the region), the same probabilities, bit for bit
    assert library.n_done == summary.done == len(command_csv) > 20
    assert summary.background > 0  # glass in the region, left out by the same tissue mask
    assert command.grid == library.grid == viewer.grid
    np.testing.assert_array_equal(command.values, library.prob_map.values)
    np.testing.assert_array_equal(viewer.values, library.prob_map.values)
    # the same patches settled by the first pass (and marked so), whoever ran it
    assert library.prob_map.n_first_pass > 0
    np.testing.assert_array_equal(command.first_pass_mask, library.prob_map.first_pass_mask)
    np.testing.assert_array_equal(viewer.first_pass_mask, library.prob_map.first_pass_mask)
    # the patch CSV is the table predict_slide returns (WSInfer's columns, 6 decimals)
    key = ["minx", "miny"]
    pd.testing.assert_frame_equal(
        command_csv.sort_values(key).reset_index(drop=True),
        library.table.drop(columns=["row", "col"]).sort_values(key).reset_index(drop=True),
        check_dtype=False,
        atol=5e-7,
    )
    # each stamped with the model's deposit rule, whoever applied the events
    rule = "napari_metastasis_decision"
    assert command.extra[rule] == library.prob_map.extra[rule] == viewer.extra[rule]


# --- cancel ------------------------------------------------------------------------------------------
def test_cancel_stops_before_the_next_batch_and_keeps_what_was_yielded(darkness, shapes_slide):
    token = CancelToken()
    stored: list[int] = []
    seen: list[object] = []
    with Slide(shapes_slide) as slide:
        events = run_slide(
            slide,
            darkness,
            tissue=False,
            batch_size=8,
            cancel=token,
            store=lambda batch: stored.append(batch.done),
        )
        for event in events:
            seen.append(event)
            if isinstance(event, Batch):
                # the pipeline itself never writes the map, and stores before it yields
                assert event.prob_map.n_analysed == event.done - len(event.cells)
                assert stored[-1] == event.done
                event.apply()
                if event.done == 16:
                    token.cancel()  # as the GUI's cancel button: from outside the loop
            else:
                event.apply()
    planned = seen[0]
    assert isinstance(planned, Planned) and planned.total == 99
    batches = [e for e in seen if isinstance(e, Batch)]
    assert [b.done for b in batches] == [8, 16] and stored == [8, 16]
    prob_map = planned.prob_map
    assert prob_map.n_analysed == 16
    cells = np.concatenate([b.cells for b in batches])
    np.testing.assert_allclose(
        prob_map.values[cells[:, 0], cells[:, 1]], _black_fraction(prob_map.grid, cells), atol=2e-3
    )


def test_a_run_cancelled_before_it_starts_classifies_nothing(darkness, shapes_slide):
    event = threading.Event()  # the viewer's cancel flag
    event.set()
    with Slide(shapes_slide) as slide:
        events = list(run_slide(slide, darkness, tissue=False, cancel=event))
    (planned,) = events  # planned, and not one batch
    assert isinstance(planned, Planned) and planned.total == 99
    planned.apply()
    assert planned.prob_map.n_analysed == 0


# --- resume ------------------------------------------------------------------------------------------
def test_resume_classifies_only_what_the_map_lacks(darkness, shapes_slide):
    token = CancelToken()
    with Slide(shapes_slide) as slide:
        first = predict_slide(
            slide,
            darkness,
            tissue=False,
            batch_size=8,
            cancel=token,
            store=lambda b: b.done >= 24 and token.cancel(),
        )
        assert first.cancelled and first.n_done == 24
        kept = first.prob_map.values.copy()

        events = list(run_slide(slide, darkness, tissue=False, prob_map=first.prob_map))
        planned = events[0]
        assert isinstance(planned, Planned) and planned.prob_map is first.prob_map
        assert (planned.reused, planned.total, planned.background) == (24, 99 - 24, 0)
        again = np.concatenate([e.cells for e in events if isinstance(e, Batch)])
        assert len(again) == 99 - 24 and not first.prob_map.analysed[again[:, 0], again[:, 1]].any()
        for event in events:
            event.apply()

        fresh = predict_slide(slide, darkness, tissue=False)
    resumed = first.prob_map
    assert resumed.n_analysed == 99
    done_first = ~np.isnan(kept)
    np.testing.assert_array_equal(resumed.values[done_first], kept[done_first])
    np.testing.assert_array_equal(resumed.values, fresh.prob_map.values)  # as if never stopped
    grid = resumed.grid
    np.testing.assert_allclose(
        resumed.values.ravel(), _black_fraction(grid, grid.all_cells()), atol=2e-3
    )


def test_a_finished_map_resumes_without_finding_tissue(darkness, shapes_slide):
    with Slide(shapes_slide) as slide:
        done = predict_slide(slide, darkness, tissue_min_fraction=0.0)
        asked = []
        events = list(
            run_slide(
                slide,
                darkness,
                tissue=lambda: asked.append(1) or pytest.fail("tissue found for nothing"),
                prob_map=done.prob_map,
            )
        )
    stage, planned = events  # the status line, then nothing to classify
    assert isinstance(stage, Stage) and isinstance(planned, Planned)
    assert planned.total == 0 and planned.reused == 99
    assert planned.tissue is None and not asked


# --- the finish step ---------------------------------------------------------------------------------
def _two_blobs_map() -> ProbabilityMap:
    """A map with a large region (12 cells) and a small one (1 cell) above 0.5."""
    from napari_metastasis.slides.grid import PatchGrid

    grid = PatchGrid(1000, 1000, 1.0, 1.0, patch_px=100, spacing_um=1.0)
    prob = ProbabilityMap.empty(grid, class_name="tumor", model_name="t")
    prob.values[:] = 0.1
    prob.values[1:4, 1:5] = 0.97
    prob.values[8, 8] = 0.99
    return prob


def test_answer_finds_the_regions_once_for_every_output():
    prob = _two_blobs_map()
    rule = DecisionRule(0.95, 2, 2)
    answer = answer_slide(prob, 0.5, 0.0, rule)
    assert all(r is c for r, c in zip(answer.regions, answer.candidates, strict=True))
    assert [r.n_cells for r in answer.regions] == [1, 12]
    assert [r.confirmed for r in answer.regions] == [False, True]
    np.testing.assert_array_equal(answer.detections(), detections_from_map(prob, 0.5))
    summary = answer.summary(slide="s.svs", stem="s", model="t")
    assert [d.uid for d in summary.deposits] == [r.uid for r in answer.regions]
    assert summary.decision == rule.to_dict()

    # a minimum area outlines, measures and stages only the large region, numbered 1 as the
    # finder numbers it; the detection file still ranks every candidate (a FROC submission)
    big = answer_slide(prob, 0.5, 50_000.0, rule)
    (only,) = big.regions
    (expected,) = probability_contours(prob, 0.5, 50_000.0)
    assert (only.id, only.n_cells, only.polygon.equals(expected.polygon)) == (1, 12, True)
    assert only.decision is not None and only.decision.region_id == 1
    assert len(big.detections()) == 2
    assert len(big.summary(slide="s.svs", stem="s", model="t").deposits) == 1


def test_answer_takes_the_rule_the_map_was_stamped_with(darkness, shapes_slide):
    with Slide(shapes_slide) as slide:
        grid = make_grid(slide, darkness)
        result = predict_slide(slide, darkness, tissue=False)
    assert result.grid == grid
    answer = answer_slide(result.prob_map, 0.5)
    assert answer.rule.source == "tests: every candidate confirmed"  # the darkness model's block
    assert answer.regions and all(r.confirmed for r in answer.regions)
