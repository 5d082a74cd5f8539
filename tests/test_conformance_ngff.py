"""F5: the .prob.zarr map read by the field's own OME-Zarr readers, installed from PyPI:
ome-zarr-py 0.18.0 (``ome_zarr.reader.Reader``) and napari-ome-zarr 0.10.0 (its npe2 reader's
layer data). A map pixel must land on the centre of its patch on the slide (µm, y/x)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.maps.store import save_zarr
from napari_metastasis.slides.grid import PatchGrid

pytestmark = pytest.mark.conformance

# cells of 80 µm (the bundled model's patch) on a 0.25 µm/px slide: centred on multiples of 80 µm
GRID = PatchGrid(4000, 3000, 0.25, 0.25, patch_px=160, spacing_um=0.5)
CELLS = np.array([[0, 0], [3, 7], [9, 12]])


def _expected_um(cells: np.ndarray) -> np.ndarray:
    """(N, 2) µm (y, x) of the cells' patch centres on the slide."""
    xy = GRID.cell_centres_level0(cells)
    return np.stack([xy[:, 1] * GRID.mpp_y, xy[:, 0] * GRID.mpp_x], axis=1)


@pytest.fixture
def zarr_map(tmp_path):
    prob = ProbabilityMap(GRID, np.random.default_rng(1).random(GRID.shape))
    return save_zarr(prob, tmp_path / "s.prob.zarr", ["normal", "tumor"])


def test_f5_ome_zarr_py_reader_places_the_map_on_its_slide(zarr_map):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    (node,) = list(Reader(parse_url(str(zarr_map)))())
    assert [a["unit"] for a in node.metadata["axes"]] == ["micrometer", "micrometer"]
    transforms = {t["type"]: t[t["type"]] for t in node.metadata["coordinateTransformations"][0]}
    scale = np.array(transforms["scale"])
    translation = np.array(transforms.get("translation", [0.0, 0.0]))
    placed = CELLS * scale + translation  # NGFF: pixel index -> physical coordinates
    assert np.allclose(placed, _expected_um(CELLS))
    assert node.data[0].shape == GRID.shape


def test_f5_napari_ome_zarr_places_the_map_on_its_slide(zarr_map):
    from napari_ome_zarr import napari_get_reader

    reader = napari_get_reader(str(zarr_map))
    assert reader is not None
    layers = reader(str(zarr_map))
    _data, kwargs, kind = layers[0]
    assert kind == "image"
    scale = np.asarray(kwargs["scale"])[-2:]
    affine = kwargs.get("affine")
    matrix = np.asarray(affine.affine_matrix if hasattr(affine, "affine_matrix") else np.eye(3))
    placed = np.array([(matrix @ np.r_[c * scale, 1.0])[:2] for c in CELLS])
    assert np.allclose(placed, _expected_um(CELLS))
