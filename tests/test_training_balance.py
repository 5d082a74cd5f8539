"""Class-imbalance report and the three remedies."""

from __future__ import annotations

import numpy as np
import pytest

from napari_metastasis.training.balance import (
    class_weights,
    imbalance_report,
    oversample,
    sampling_weights,
    undersample,
)

LABELS = np.array([0] * 8 + [1] * 2)
SLIDES = np.array(["a"] * 5 + ["b"] * 5)


def test_report_counts_per_slide():
    report = imbalance_report(LABELS, SLIDES)
    assert (report.positives, report.negatives, report.ratio) == (2, 8, 4.0)
    assert report.per_slide == {"a": (5, 0), "b": (3, 2)}
    assert "2 tumour / 8 normal" in report.format()


def test_remedies_balance_the_classes():
    rng = np.random.default_rng(0)
    under = undersample(LABELS, rng)
    assert np.bincount(LABELS[under]).tolist() == [2, 2]
    over = oversample(LABELS, rng)
    assert np.bincount(LABELS[over]).tolist() == [8, 8]
    assert set(np.flatnonzero(LABELS == 0)) <= set(over)
    w = class_weights(LABELS)
    np.testing.assert_allclose(w, [10 / 16, 10 / 4])
    assert (w[LABELS] * 1).sum() == pytest.approx(10)  # both classes weigh 5 in total
    p = sampling_weights(LABELS, "oversample")
    assert p[LABELS == 1].sum() == pytest.approx(0.5)
    np.testing.assert_allclose(sampling_weights(LABELS, "none"), 0.1)


def test_within_class_weights_keep_class_shares():
    labels = np.array([0, 0, 0, 0, 1, 1])
    within = np.array([3.0, 1.0, 0.0, 0.0, 1.0, 1.0])  # e.g. favour one normal source
    p = sampling_weights(labels, "oversample", within)
    assert p[labels == 1].sum() == pytest.approx(0.5)
    np.testing.assert_allclose(p[:4], [0.375, 0.125, 0, 0])
    p_none = sampling_weights(labels, "none", within)
    assert p_none[labels == 1].sum() == pytest.approx(2 / 6)
