"""Tumour masks from polygons and the labelling rules."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

from napari_metastasis.datasets.labels import (
    LabelRule,
    centre_fraction,
    centre_window,
    geometry_mask,
    label_from_mask,
)


def test_centre_window_is_pcam_32_of_96():
    assert centre_window(96) == slice(32, 64)
    assert centre_window(48) == slice(16, 32)


def test_geometry_mask_exact_with_hole():
    tumour = box(0, 0, 100, 100).difference(box(40, 40, 60, 60))
    mask = geometry_mask(tumour, 0, 0, 100, 100, (10, 10))  # 10 level-0 px per mask px
    assert mask.sum() == 96
    assert not mask[4:6, 4:6].any()
    # an offset box half over the tumour: left half inside
    half = geometry_mask(box(0, 0, 50, 1000), 0, 0, 100, 100, (4, 4))
    assert half[:, :2].all() and not half[:, 2:].any()
    assert not geometry_mask(None, 0, 0, 10, 10, (2, 2)).any()
    assert geometry_mask(box(-5, -5, 50, 50), 0, 0, 10, 10, (3, 3)).all()


def test_label_rules():
    mask = np.zeros((96, 96), bool)
    mask[0:10, 0:10] = True  # tumour in a corner only
    assert label_from_mask(mask, LabelRule("centre")) == 0
    mask[40, 40] = True  # one pixel in the centre 32x32
    assert label_from_mask(mask, LabelRule("centre")) == 1
    assert label_from_mask(mask, LabelRule("fraction", 0.5)) == 0
    assert label_from_mask(np.ones((96, 96), bool), LabelRule("fraction", 0.5)) == 1
    assert centre_fraction(mask) == pytest.approx(1 / (32 * 32))
    with pytest.raises(ValueError):
        LabelRule("majority")
