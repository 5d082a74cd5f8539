"""ProbabilityMap: NaN-aware filling, reuse of analysed cells, and lossless save/load."""

from __future__ import annotations

import numpy as np
import pytest

from napari_metastasis.errors import MetastasisError
from napari_metastasis.grid import PatchGrid
from napari_metastasis.probability import ProbabilityMap

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
