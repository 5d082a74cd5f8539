"""Patch extraction from a real slide with a reference geometry we construct (exact truth)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from shapely.geometry import box

from napari_metastasis.datasets.annotations_source import load_tumour_geometry
from napari_metastasis.datasets.extract import extract_from_slide
from napari_metastasis.datasets.labels import LabelRule
from napari_metastasis.errors import DatasetError, ResolutionError

TUMOUR = box(700, 900, 1500, 1900)  # level-0 px of CMU-1-Small-Region (0.499 µm/px)


@pytest.fixture(scope="module")
def extracted(svs_file):
    return extract_from_slide(svs_file, TUMOUR, spacing_um=4.0, patch_size=24, min_tissue=0.2)


def test_labels_and_masks_follow_the_geometry(extracted):
    p = extracted
    assert len(p) > 20 and 0 < p.labels.sum() < len(p)
    assert set(p.slides) == {"CMU-1-Small-Region"}
    for i in range(len(p)):
        x0, y0, side = p.x[i], p.y[i], p.size_level0[i]
        # PCam rule: positive iff the centre third of the patch touches the tumour box
        third = side / 3
        centre = box(x0 + third, y0 + third, x0 + 2 * third, y0 + 2 * third)
        assert p.labels[i] == int(centre.intersection(TUMOUR).area > (side / 24) ** 2 * 0.25), i
        expected = box(x0, y0, x0 + side, y0 + side).intersection(TUMOUR).area / side**2
        assert abs(p.tumour_fraction[i] - expected) < 0.1
    assert p.images.shape[1:] == (24, 24, 3)


def test_fraction_rule_and_negative_cap(svs_file):
    p = extract_from_slide(
        svs_file,
        TUMOUR,
        spacing_um=4.0,
        patch_size=24,
        rule=LabelRule("fraction", 0.99),
        max_negatives=5,
    )
    assert (p.tumour_fraction[p.labels == 1] >= 0.99).all()
    assert (p.labels == 0).sum() == 5


def test_annotation_of_another_slide_is_refused(annotations_dir, svs_file):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        camelyon = load_tumour_geometry(annotations_dir / "camelyon16_ncrf_json" / "Tumor_001.json")
    with pytest.raises(DatasetError, match="do not match this slide"):
        extract_from_slide(svs_file, camelyon, spacing_um=4.0, patch_size=24)


def test_slide_without_resolution_needs_mpp(six_level_tiff):
    with pytest.raises(ResolutionError):
        extract_from_slide(six_level_tiff, None, spacing_um=4.0, patch_size=24)
    p = extract_from_slide(six_level_tiff, None, spacing_um=4.0, patch_size=24, mpp=0.5)
    assert len(p) > 10 and p.labels.sum() == 0
    assert np.all(p.size_level0 == 192)
