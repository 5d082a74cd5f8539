"""Tissue detection: real slides lose their glass, synthetic ink and borders are not tissue."""

from __future__ import annotations

import numpy as np
import pytest
from engine_helpers import write_pyramid_tiff

from napari_metastasis.slides import tissue as tissue_module
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Slide
from napari_metastasis.slides.tissue import classify_pixels, tissue_mask


@pytest.fixture(scope="module")
def svs_mask(svs_file):
    with Slide(svs_file) as slide:
        return slide.dimensions, tissue_mask(slide)


def test_sample_slide_background_is_skipped(svs_mask):
    (width, height), mask = svs_mask
    # The sample slide is a strip of skin on glass: about 40 % tissue.
    assert 0.25 < mask.fraction < 0.6
    grid = PatchGrid(width, height, 0.499, 0.499, patch_px=224, spacing_um=0.5)
    fractions = mask.tissue_fraction(grid)
    assert fractions.shape == grid.shape
    # Glass in the top-left and the left edge, tissue in the bottom centre (seen on the thumbnail).
    for x, y in [(50, 50), (100, 1500), (150, 2800), (2100, 2900)]:
        row, col = round(y / grid.step_level0[1]), round(x / grid.step_level0[0])  # centred
        assert fractions[row, col] == 0.0, (x, y)
    for x, y in [(1000, 2500), (1100, 1600), (1200, 1000)]:
        row, col = round(y / grid.step_level0[1]), round(x / grid.step_level0[0])  # centred
        assert fractions[row, col] == 1.0, (x, y)
    kept = mask.cells_with_tissue(grid, grid.all_cells(), 0.5)
    assert 0.2 * grid.shape[0] * grid.shape[1] < len(kept) < 0.7 * grid.shape[0] * grid.shape[1]


def test_mask_geometry_covers_the_slide(svs_mask):
    (width, height), mask = svs_mask
    rows, cols = mask.mask.shape
    assert cols * mask.downsample_x == pytest.approx(width, abs=mask.downsample_x)
    assert rows * mask.downsample_y == pytest.approx(height, abs=mask.downsample_y)
    assert mask.layer_scale == pytest.approx((mask.downsample_y * 0.499, mask.downsample_x * 0.499))


def test_all_tissue_crop_is_not_split_by_otsu(six_level_tiff):
    # CropBreastSlide is stroma and a lobule wall to wall: a plain Otsu would cut it in two.
    with Slide(six_level_tiff) as slide:
        mask = tissue_mask(slide)
        assert mask.level > 0  # read from the pyramid, not level 0
    assert mask.fraction > 0.95


def test_block_reading_matches_single_read(svs_file, monkeypatch, svs_mask):
    _, whole = svs_mask
    monkeypatch.setattr(tissue_module, "_READ_BLOCK", 200)
    with Slide(svs_file) as slide:
        blocked = tissue_mask(slide)
    assert np.array_equal(blocked.mask, whole.mask)


def _synthetic_slide() -> np.ndarray:
    """White glass, pink/purple tissue, a black border, green, black and blue pen (at 2 µm/px, each
    mark is larger than the smallest tissue piece kept, so only the colour rules can drop it)."""
    image = np.full((1200, 1600, 3), 245, np.uint8)
    rng = np.random.default_rng(0)
    tissue = rng.normal((200, 120, 180), 15, size=(600, 700, 3)).clip(0, 255).astype(np.uint8)
    image[300:900, 200:900] = tissue
    image[:, 1500:] = (10, 10, 12)  # scanner border
    image[200:1000, 1100:1140] = (40, 150, 60)  # green pen
    image[1000:1100, 300:400] = (20, 20, 25)  # black pen
    image[100:160, 1200:1400] = (30, 60, 170)  # blue pen
    return image


def test_ink_borders_and_glass_are_not_tissue(tmp_path):
    path = write_pyramid_tiff(tmp_path / "ink.tiff", _synthetic_slide(), mpp=2.0, levels=3)
    with Slide(path) as slide:
        mask = tissue_mask(slide, mask_um=8.0)
    boxes = {
        "tissue": (250, 350, 600, 500),
        "glass": (950, 50, 100, 100),
        "border": (1510, 100, 80, 900),
        "green pen": (1100, 200, 40, 800),
        "black pen": (300, 1000, 100, 100),
        "blue pen": (1200, 100, 200, 60),
    }
    fractions = dict(
        zip(boxes, mask.fraction_in_boxes(np.array(list(boxes.values()))), strict=True)
    )
    assert fractions["tissue"] == 1.0
    for name in ("glass", "border", "green pen", "black pen", "blue pen"):
        assert fractions[name] < 0.1, (name, fractions[name])


def test_pen_kept_when_asked(tmp_path):
    image = _synthetic_slide()
    with_pen, _ = classify_pixels(image[200:1000, 1100:1140], exclude_pen=False)
    without_pen, _ = classify_pixels(image[200:1000, 1100:1140], exclude_pen=True)
    assert with_pen.all() and not without_pen.any()


def test_bad_method_is_refused(svs_file):
    with Slide(svs_file) as slide, pytest.raises(ValueError, match="unknown tissue method"):
        tissue_mask(slide, method="magic")


def test_dicom_copy_of_the_sample_gives_the_same_mask(dicom_folder, svs_mask):
    _, from_svs = svs_mask
    with Slide(dicom_folder) as slide:
        from_dicom = tissue_mask(slide)
    assert from_dicom.mask.shape == from_svs.mask.shape
    # Same tissue, re-encoded JPEG tiles: the masks agree almost everywhere.
    assert (from_dicom.mask == from_svs.mask).mean() > 0.98
