"""Ingest of existing patch sets: Camelyon16 patches labelled from the polygons, Kaggle/PCam TIFFs,
PCam HDF5, and clear errors for corrupt patches and slide/annotation mismatches."""

from __future__ import annotations

import csv
import re
import shutil
import warnings

import h5py
import numpy as np
import pytest
from PIL import Image

from napari_metastasis.datasets.annotations_source import geometries_by_slide
from napari_metastasis.datasets.ingest import (
    ingest_kaggle_pcam,
    ingest_labelled_folder,
    ingest_pcam_hdf5,
)
from napari_metastasis.datasets.labels import LabelRule
from napari_metastasis.datasets.patchset import load_patchset, save_patchset
from napari_metastasis.errors import DatasetError


@pytest.fixture(scope="module")
def camelyon(patches_dir):
    """Camelyon16 patches, 256 px at 0.243 µm/px, with their labels.csv."""
    return patches_dir / "camelyon16_256"


@pytest.fixture(scope="module")
def geometries(ncrf_dir):
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # the official polygons self-intersect; repairs are reported
        return geometries_by_slide(sorted(ncrf_dir.glob("*.json")))


def _csv_rows(folder):
    with (folder / "labels.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_camelyon16_labels_agree_with_polygons(camelyon, geometries):
    # whole 256-px patches (62 µm) at their own 0.243 µm/px, downsampled to 64 px
    patches = ingest_labelled_folder(
        camelyon, spacing_um=0.243 * 4, patch_size=64, source_mpp=0.243, geometries=geometries
    )
    rows = _csv_rows(camelyon)
    assert len(patches) == len(rows) == 57
    assert patches.has_mask.all()
    assert patches.labels.tolist() == [int(r["label"]) for r in rows]
    assert patches.meta["label_disagreements_with_csv"] == []
    # the exact masks reproduce the independent 16x16-point check stored in the CSV
    expected = np.array([float(r["tumor_area_fraction_from_ncrf_json"]) for r in rows])
    np.testing.assert_allclose(patches.tumour_fraction, expected, atol=0.08)
    assert set(patches.slides) == {"tumor_001", "tumor_004", "tumor_064"}
    assert (patches.x == [int(r["x_level0"]) for r in rows]).all()


@pytest.mark.slow
def test_centre_crop_masks_and_round_trip(camelyon, tmp_path, geometries):
    patches = ingest_labelled_folder(
        camelyon,
        spacing_um=1.0,
        patch_size=48,
        source_mpp=0.243,
        geometries=geometries,
        rule=LabelRule("centre"),
    )
    assert patches.images.shape == (57, 48, 48, 3)
    # the 48 µm centre crop of a tumour patch is still mostly tumour
    assert np.nanmean(patches.tumour_fraction[patches.labels == 1]) > 0.7
    save_patchset(patches, tmp_path / "ds")
    again = load_patchset(tmp_path / "ds")
    np.testing.assert_array_equal(again.images, patches.images)
    np.testing.assert_array_equal(again.masks, patches.masks)
    assert again.labels.tolist() == patches.labels.tolist()
    assert again.slides.tolist() == patches.slides.tolist()


def test_slide_annotation_mismatch_is_a_clear_error(camelyon, geometries):
    swapped = {"tumor_001": geometries["tumor_004"], "tumor_004": geometries["tumor_001"]}
    with pytest.raises(DatasetError, match="annotations of slide tumor_001 do not match"):
        ingest_labelled_folder(
            camelyon, spacing_um=1.0, patch_size=48, source_mpp=0.243, geometries=swapped
        )


@pytest.mark.slow
def test_corrupt_patch_is_a_clear_error(camelyon, tmp_path):
    folder = tmp_path / "patches"
    (folder / "tumor").mkdir(parents=True)
    good = next((camelyon / "tumor").glob("*.png"))
    shutil.copy(good, folder / "tumor" / good.name)
    (folder / "tumor" / "tumor_001_1_2.png").write_bytes(good.read_bytes()[:300])  # truncated
    (folder / "labels.csv").write_text(
        f"file,label\ntumor/{good.name},1\ntumor/tumor_001_1_2.png,1\n"
    )
    with pytest.raises(DatasetError, match=r"tumor_001_1_2\.png: patch image is corrupt"):
        ingest_labelled_folder(folder, spacing_um=1.0, patch_size=48, source_mpp=0.243)
    (folder / "labels.csv").write_text("file,label\ntumor/missing.png,1\n")
    with pytest.raises(DatasetError, match=r"missing\.png: patch file is missing"):
        ingest_labelled_folder(folder, spacing_um=1.0, patch_size=48, source_mpp=0.243)
    # a dataset folder whose image went bad after extraction
    patches = ingest_labelled_folder(
        camelyon, spacing_um=1.0, patch_size=48, source_mpp=0.243
    ).subset(np.arange(3))
    save_patchset(patches, tmp_path / "ds")
    victim = sorted((tmp_path / "ds" / "images").glob("*.png"))[1]
    victim.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=re.escape(victim.name)):
        load_patchset(tmp_path / "ds")


def test_patch_too_small_for_request(camelyon):
    with pytest.raises(DatasetError, match="covers 62 µm"):
        ingest_labelled_folder(camelyon, spacing_um=1.0, patch_size=96, source_mpp=0.243)


def test_kaggle_pcam_tiffs(patches_dir):
    folder = patches_dir / "pcam_kaggle_96" / "train"
    patches = ingest_kaggle_pcam(folder)
    assert len(patches) == 8 and patches.labels.sum() == 3
    assert patches.images.shape == (8, 96, 96, 3)
    raw = np.asarray(
        Image.open(folder / "068aba587a4950175d04c680d38943fd488d6a9d.tif").convert("RGB")
    )
    np.testing.assert_array_equal(patches.images[0], raw)
    assert len(set(patches.slides)) == 8  # each its own group: Kaggle has no slide ids
    small = ingest_kaggle_pcam(folder, spacing_um=1.0, patch_size=48)
    assert small.images.shape == (8, 48, 48, 3)


def test_pcam_hdf5(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
    y = np.array([0, 1, 1, 0, 1], np.uint8).reshape(5, 1, 1, 1)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = x
    with h5py.File(tmp_path / "y.h5", "w") as f:
        f["y"] = y
    (tmp_path / "meta.csv").write_text(
        "coord_y,coord_x,tumor_patch,center_tumor_patch,wsi\n"
        + "".join(f"{10 * i},{20 * i},True,True,tumor_{i % 2:03d}\n" for i in range(5))
    )
    patches = ingest_pcam_hdf5(tmp_path / "x.h5", tmp_path / "y.h5", tmp_path / "meta.csv")
    assert patches.labels.tolist() == [0, 1, 1, 0, 1]
    np.testing.assert_array_equal(patches.images, x)
    assert patches.slides.tolist() == ["tumor_000", "tumor_001"] * 2 + ["tumor_000"]
    assert patches.x.tolist() == [0, 20, 40, 60, 80]
    limited = ingest_pcam_hdf5(tmp_path / "x.h5", tmp_path / "y.h5", limit=2)
    assert len(limited) == 2
    (tmp_path / "bad.h5").write_bytes(b"junk")
    with pytest.raises(DatasetError, match=r"bad\.h5"):
        ingest_pcam_hdf5(tmp_path / "bad.h5", tmp_path / "y.h5")
