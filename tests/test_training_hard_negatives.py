"""Hard-negative mining and the high-specificity operating points of the model card."""

from __future__ import annotations

import numpy as np
import pytest

from napari_metastasis.evaluation.metrics import sensitivity_at_specificity
from napari_metastasis.training.hard_negatives import hard_negative_weights
from napari_metastasis.training.trainer import TrainConfig, _mines


def test_half_the_normal_draws_go_to_the_hardest_fifth():
    labels = np.array([0] * 10 + [1] * 4)
    probs = np.r_[np.linspace(0.0, 0.9, 10), np.full(4, np.nan)]
    base = np.ones(14)
    w = hard_negative_weights(probs, labels, base, top=0.2, share=0.5)
    normal = w[:10]
    assert normal.sum() == pytest.approx(1.0)
    # the two highest-scoring normals (indices 8, 9) get the hard half on top of their plain share
    assert normal[8] == pytest.approx(0.5 / 10 + 0.5 / 2)
    assert normal[0] == pytest.approx(0.5 / 10)
    np.testing.assert_array_equal(w[10:], base[10:])  # tumour weights untouched


def test_the_source_mix_is_kept_within_the_hard_share():
    labels = np.zeros(4, int)
    probs = np.array([0.9, 0.8, 0.1, 0.0])
    base = np.array([3.0, 1.0, 3.0, 1.0])  # two sources weighted 3:1
    w = hard_negative_weights(probs, labels, base, top=0.5, share=1.0)
    np.testing.assert_allclose(w, [0.75, 0.25, 0.0, 0.0])


def test_mining_is_off_by_default_and_runs_every_other_epoch_from_its_start():
    assert not any(_mines(TrainConfig(), e) for e in range(30))
    config = TrainConfig(hard_negative_start=6, hard_negative_every=2)
    assert [e for e in range(12) if _mines(config, e)] == [6, 8, 10]


def test_sensitivity_at_specificity_counts_ties_against_the_detector():
    normal = np.arange(100) / 100.0  # 0.00 .. 0.99
    tumour = np.array([0.5, 0.985, 0.99, 0.995])
    labels = np.r_[np.zeros(100), np.ones(4)]
    probs = np.r_[normal, tumour]
    sens, threshold = sensitivity_at_specificity(labels, probs, 0.99)
    # one normal (0.99) may be above the threshold: the threshold sits just above 0.98
    assert 0.98 < threshold <= 0.981
    assert sens == pytest.approx(3 / 4)
    sens_strict, threshold_strict = sensitivity_at_specificity(labels, probs, 0.999)
    assert threshold_strict > 0.99 and sens_strict == pytest.approx(1 / 4)
