"""Patch metrics against cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from napari_metastasis.evaluation.metrics import (
    calibration,
    confusion_matrix,
    patch_metrics,
    roc_auc,
    roc_curve,
    youden_threshold,
)


def test_roc_auc_hand_cases():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    # pairs (pos, neg): (0.35 vs 0.1 ✓, 0.35 vs 0.4 ✗, 0.8 vs both ✓) -> 3/4
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # a tie counts one half: (0.5 vs 0.5 = ½, 0.5 vs 0.1 ✓) -> 1.5/2
    assert roc_auc([0, 0, 1], [0.5, 0.1, 0.5]) == pytest.approx(0.75)
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_roc_curve_points():
    fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    # thresholds inf, .8, .4, .35, .1
    assert thr[0] == np.inf
    np.testing.assert_allclose(thr[1:], [0.8, 0.4, 0.35, 0.1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1.0, 1.0])
    # the trapezoid area under these points is the AUC
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)


def test_confusion_sensitivity_specificity():
    labels = [0, 0, 0, 1, 1]
    probs = [0.1, 0.6, 0.2, 0.7, 0.3]
    cm = confusion_matrix(labels, np.array(probs) >= 0.5)
    assert cm.tolist() == [[2, 1], [1, 1]]
    m = patch_metrics(labels, probs, threshold=0.5)
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.sensitivity == pytest.approx(1 / 2)
    assert m.specificity == pytest.approx(2 / 3)
    assert m.confusion == [[2, 1], [1, 1]]
    assert m.brier == pytest.approx(np.mean([0.01, 0.36, 0.04, 0.09, 0.49]))


def test_calibration_bins_and_ece():
    # two bins used: [0.1, 0.1] with 0 of 2 positive; [0.9, 0.9] with 1 of 2 positive
    cal = calibration([0, 0, 1, 0], [0.1, 0.1, 0.9, 0.9], bins=10)
    assert cal.bin_count[1] == 2 and cal.bin_count[9] == 2
    assert cal.ece == pytest.approx(0.5 * 0.1 + 0.5 * 0.4)


def test_youden_threshold_separates():
    t = youden_threshold([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.9])
    assert 0.3 < t < 0.6


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        roc_auc([0, 1], [0.1])
