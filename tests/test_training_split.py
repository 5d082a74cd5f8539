"""Validation split by slide: no slide on both sides, both classes where possible."""

from __future__ import annotations

import numpy as np
import pytest

from napari_metastasis.errors import DatasetError
from napari_metastasis.training.split import split_by_slide

SLIDES = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 10 + ["d"] * 10)
LABELS = np.array([0] * 5 + [1] * 5 + [0] * 10 + [0] * 7 + [1] * 3 + [1] * 10)


def test_split_keeps_slides_whole_and_classes_present():
    train, val = split_by_slide(SLIDES, LABELS, val_fraction=0.25, seed=1)
    assert set(SLIDES[train]).isdisjoint(SLIDES[val])
    assert len(train) + len(val) == len(SLIDES)
    assert set(LABELS[val]) == {0, 1} and set(LABELS[train]) == {0, 1}
    assert len(val) == 10


def test_named_validation_slides_and_errors():
    _train, val = split_by_slide(SLIDES, LABELS, val_slides=["b", "d"])
    assert set(SLIDES[val]) == {"b", "d"}
    with pytest.raises(DatasetError, match="not in the dataset: z"):
        split_by_slide(SLIDES, LABELS, val_slides=["z"])
    with pytest.raises(DatasetError, match="at least two slides"):
        split_by_slide(np.array(["a", "a"]), np.array([0, 1]))
