"""Camelyon16 FROC and slide metrics on toy examples whose answers are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Point, box

from napari_metastasis.evaluation.froc import (
    FP_RATES,
    LesionMask,
    froc,
    lesion_mask,
    rasterize,
    score_detections,
)
from napari_metastasis.evaluation.plots import plot_froc
from napari_metastasis.evaluation.slides import overlap, slide_hits
from napari_metastasis.maps.detections import detections_from_map
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.slides.grid import PatchGrid


def _toy_lesions() -> LesionMask:
    labels = np.zeros((10, 10), np.int32)
    labels[1:3, 1:3] = 1  # lesion 1
    labels[6:9, 6:9] = 2  # lesion 2
    labels[0, 9] = 3  # an isolated-tumour-cell cluster
    return LesionMask(labels, {3}, downsample=10.0)


def test_score_detections_best_hit_per_lesion_and_itc_ignored():
    lesions = _toy_lesions()
    detections = np.array(
        [
            [15, 15, 0.6],  # lesion 1
            [25, 25, 0.9],  # lesion 1 again: only the best (0.9) counts
            [95, 5, 0.99],  # inside the ITC: neither hit nor FP
            [50, 50, 0.7],  # background: FP
            [5, 95, 0.2],  # background: FP
        ]
    )
    hits = score_detections(detections, lesions)
    np.testing.assert_allclose(sorted(hits.fp_probs), [0.2, 0.7])
    np.testing.assert_allclose(hits.tp_probs, [0.9, 0.0])  # lesion 2 missed


def test_froc_hand_computed():
    lesions = _toy_lesions()
    tumour_slide = score_detections(
        np.array([[15, 15, 0.9], [50, 50, 0.7], [75, 75, 0.4]]), lesions
    )
    normal_slide = score_detections(np.array([[10, 10, 0.8], [20, 20, 0.3]]), None)
    result = froc([tumour_slide, normal_slide])
    # TPs: lesion1 0.9, lesion2 0.4; FPs: 0.7, 0.8, 0.3. Thresholds 0.3, 0.4, 0.7, 0.8, 0.9:
    # 0.3 -> FP 3, TP 2; 0.4 -> FP 2 (0.7, 0.8), TP 2; 0.7 -> FP 2, TP 1; 0.8 -> FP 1, TP 1;
    # 0.9 -> FP 0, TP 1; then the (0, 0) end point. Per slide (2 slides): FPs 1.5, 1, 1, .5, 0, 0.
    np.testing.assert_allclose(result.fps_per_slide, [1.5, 1.0, 1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(result.sensitivity, [1.0, 1.0, 0.5, 0.5, 0.5, 0.0])
    # np.interp over increasing FPs [0, 0, .5, 1, 1, 1.5] with sens [0, .5, .5, .5, 1, 1]:
    # 0.25 -> 0.5, 0.5 -> 0.5, 1 -> 1.0 (the last point at 1 FP), 2, 4, 8 -> 1.0
    assert result.sensitivity_at[0.25] == pytest.approx(0.5)
    assert result.sensitivity_at[1.0] == pytest.approx(1.0)
    assert result.score == pytest.approx((0.5 + 0.5 + 1 + 1 + 1 + 1) / 6)
    assert result.n_lesions == 2 and result.n_slides == 2
    assert set(result.sensitivity_at) == set(FP_RATES)


def test_lesion_mask_dilation_fill_connectivity_and_itc():
    mpp = 0.25  # level-5 pixel = 8 µm; dilation radius 37.5 µm = 4.7 px
    ds = 32.0
    big = box(1000, 1000, 1000 + 400 / mpp, 1000 + 400 / mpp)  # 400 µm square: a lesion
    near = box(1000 + 400 / mpp + 40 / mpp, 1000, 1000 + 500 / mpp, 1000 + 100 / mpp)  # 40 µm away
    small = Point(20000, 20000).buffer(20 / mpp)  # 40 µm across: ITC even after dilation
    ring_outer = box(12000, 1000, 12000 + 600 / mpp, 1000 + 600 / mpp)
    ring = ring_outer.difference(
        box(12000 + 100 / mpp, 1100 + 100 / mpp, 12000 + 500 / mpp, 1000 + 500 / mpp)
    )
    geometry = big.union(near).union(small).union(ring)
    lm = lesion_mask(geometry, (30000, 30000), mpp, downsample=ds)
    # big and near merge (gap 40 µm < 75 µm), the ring's hole is filled, the small one is an ITC
    assert lm.labels.max() == 3
    assert len(lm.itc) == 1
    assert lm.n_lesions == 2
    itc_label = next(iter(lm.itc))
    assert lm.labels[int(20000 / ds), int(20000 / ds)] == itc_label
    hole_centre = (int((1000 + 300 / mpp) / ds), int((12000 + 300 / mpp) / ds))
    assert lm.labels[hole_centre] > 0


def test_rasterize_respects_holes():
    # top-left sampling (level-0 pixels 0, 10, ..., 90): row and column 0 lie on the outline,
    # outside it as in ASAP's mask (pixels strictly inside the box); the hole holds 40, 50, 60
    shape = box(0, 0, 100, 100).difference(box(35, 35, 65, 65))
    mask = rasterize(shape, (10, 10), 10.0)
    assert mask.sum() == 81 - 9
    assert not mask[4:7, 4:7].any() and not mask[0].any() and not mask[:, 0].any()


def _toy_map() -> ProbabilityMap:
    grid = PatchGrid(width=1000, height=1000, mpp_x=1.0, mpp_y=1.0, patch_px=100, spacing_um=1.0)
    values = np.zeros(grid.shape, np.float32)
    values[1:3, 1:3] = 0.9
    values[2, 2] = 0.95
    values[7, 7] = 0.6
    values[9, 9] = np.nan
    return ProbabilityMap(grid, values)


def test_detections_from_map_one_per_region_at_its_maximum():
    det = detections_from_map(_toy_map(), 0.5)
    assert len(det) == 2
    best = det[np.argmax(det[:, 2])]
    np.testing.assert_allclose(best, [200, 200, 0.95])  # cell (2, 2) is centred on 200 px


def test_overlap_dice_iou_on_grid():
    pmap = _toy_map()
    reference = box(50, 50, 350, 250)  # cells (centred on 100, 200, ...) rows 1-2, cols 1-3
    ov = overlap(pmap, reference, threshold=0.5)
    # predicted: 4 cells (rows 1-2, cols 1-2) + (7,7) = 5; reference 6; intersection 4
    assert (ov.predicted_cells, ov.reference_cells, ov.true_positive_cells) == (5, 6, 4)
    assert ov.dice == pytest.approx(8 / 11)
    assert ov.iou == pytest.approx(4 / 7)
    assert ov.analysed_cells == 11 * 11 - 1
    normal = overlap(ProbabilityMap(pmap.grid, np.zeros(pmap.grid.shape)), None)
    assert normal.dice == 1.0 and normal.iou == 1.0


def test_slide_hits_and_plot(tmp_path):
    pmap = _toy_map()
    hits = slide_hits(pmap, box(100, 100, 400, 400), detection_threshold=0.5)
    assert hits.tp_probs.tolist() == pytest.approx([0.95])
    assert hits.fp_probs.tolist() == pytest.approx([0.6])
    result = froc([hits])
    out = plot_froc(result, tmp_path / "froc.png")
    assert out.stat().st_size > 1000


def test_the_detection_file_counts_the_regions_the_outlines_and_summary_count():
    """Issue 22: one region finder. Two cells touching only at a corner are two outlines (and two
    summary regions), so they are two Camelyon16 detections, not one 8-connected blob."""
    from napari_metastasis.maps.contours import probability_contours

    grid = PatchGrid(width=1000, height=1000, mpp_x=1.0, mpp_y=1.0, patch_px=100, spacing_um=1.0)
    prob = ProbabilityMap.empty(grid, model_name="synthetic")
    prob.values[:] = 0.1
    prob.values[2, 2], prob.values[3, 3] = 0.9, 0.8  # diagonal neighbours
    prob.values[6, 6:8] = 0.7  # an edge-sharing pair: one region
    regions = probability_contours(prob, 0.5)
    detections = detections_from_map(prob, 0.5)
    assert len(regions) == len(detections) == 3
    assert sorted(detections[:, 2].tolist()) == pytest.approx([0.7, 0.8, 0.9])
