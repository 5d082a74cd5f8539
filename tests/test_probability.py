"""ProbabilityMap: NaN-aware filling, reuse of analysed cells, and lossless save/load."""

from __future__ import annotations

import numpy as np
import pytest

from napari_metastasis.errors import MetastasisError
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.slides.grid import PatchGrid

GRID = PatchGrid(width=900, height=500, mpp_x=0.5, mpp_y=0.5, patch_px=100, spacing_um=1.0)


def test_empty_map_is_all_unanalysed():
    pm = ProbabilityMap.empty(GRID)
    assert pm.values.shape == GRID.shape == (3, 5)
    assert pm.n_analysed == 0
    assert np.isnan(pm.max_probability())


def test_update_missing_and_merge():
    pm = ProbabilityMap.empty(GRID)
    pm.update(np.array([[0, 0], [2, 4]]), np.array([0.2, 0.9]))
    assert pm.n_analysed == 2
    wanted = np.array([[0, 0], [0, 1], [2, 4]])
    assert pm.missing(wanted).tolist() == [[0, 1]]
    other = ProbabilityMap.empty(GRID)
    other.update(np.array([[0, 1]]), np.array([0.5]))
    pm.merge(other)
    assert pm.n_analysed == 3
    assert pm.max_probability() == pytest.approx(0.9)


def test_merge_refuses_other_grids():
    other = ProbabilityMap.empty(PatchGrid(900, 500, 0.5, 0.5, 50, 1.0))
    with pytest.raises(ValueError):
        ProbabilityMap.empty(GRID).merge(other)


def test_save_load_round_trip_keeps_nan_and_geometry(tmp_path):
    pm = ProbabilityMap.empty(GRID, model_name="test", slide_path="/x/slide.svs")
    pm.update(np.array([[1, 2]]), np.array([0.75]))
    path = pm.save(tmp_path / "slide.prob.tiff")
    loaded = ProbabilityMap.load(path)
    assert loaded.grid == GRID
    assert loaded.model_name == "test"
    assert np.array_equal(np.isnan(loaded.values), np.isnan(pm.values))
    assert loaded.values[1, 2] == pytest.approx(0.75)
    assert not list(tmp_path.glob("*.part"))


def test_loading_a_foreign_tiff_is_a_clear_error(tmp_path):
    import tifffile

    path = tmp_path / "other.tiff"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8))
    with pytest.raises(MetastasisError, match="not a probability map"):
        ProbabilityMap.load(path)


@pytest.mark.conformance
def test_f4_prob_tiff_carries_its_pixel_size_and_origin(tmp_path):
    """F4: the .prob.tiff said resolution 1/1, unit NONE, so QuPath, Fiji and OpenSlide-style
    readers placed it in pixels. Read back with tifffile (2026.3; TIFF 6.0 tags XResolution,
    YResolution, ResolutionUnit, XPosition, YPosition): one pixel is one grid step in µm. A map on
    an older corner grid says where its first pixel's square starts (half a step before the first
    patch's centre); a centred grid's first square starts before the slide's edge, which TIFF's
    unsigned XPosition cannot say, so it is left out rather than written wrong. (OpenSlide 4.0
    does not open an untiled TIFF, so it has nothing to misplace.)"""
    import tifffile

    for anchor in ("centre", "corner"):
        grid = PatchGrid(5000, 4000, 0.25, 0.25, 224, 0.5, stride_um=56, anchor=anchor)
        path = ProbabilityMap(grid, np.random.default_rng(0).random(grid.shape)).save(
            tmp_path / f"{anchor}.tif"
        )
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            px_per_um = page.get_resolution(tifffile.RESUNIT.MICROMETER)
            x_cm = page.tags.valueof("XPosition")
            y_cm = page.tags.valueof("YPosition")
        assert px_per_um == pytest.approx((1 / 56, 1 / 56))
        if anchor == "centre":
            assert x_cm is None and y_cm is None
            assert grid.layer_translate == (0.0, 0.0)
            continue
        assert x_cm[0] / x_cm[1] * 1e4 == pytest.approx(28.0) == y_cm[0] / y_cm[1] * 1e4
        # the first pixel's centre, in µm, is the first patch's centre (what napari's layer uses)
        assert x_cm[0] / x_cm[1] * 1e4 + 56 / 2 == pytest.approx(grid.layer_translate[1])
