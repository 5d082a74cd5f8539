"""The npe2 reader and sample data, without a viewer: what napari receives, and what users see."""

from __future__ import annotations

import hashlib

import dask.array as da
import numpy as np
import pytest
import tifffile
from napari.utils.notifications import notification_manager
from shared_data import DICOM_DIR, DICOM_VOLUME, FIXTURES, SVS, TIFF_6_LEVELS

from napari_metastasis._napari import slide_reader as _reader
from napari_metastasis._napari.sample_data import SAMPLE_SLIDE, cmu1_small_region
from napari_metastasis._napari.slide_reader import (
    NO_LAYERS,
    get_slide_reader,
    read_slide,
    read_slide_layers,
    slide_layer_data,
)
from napari_metastasis.errors import SlideError
from napari_metastasis.slides.slide import Slide


@pytest.fixture
def notes():
    """Notifications napari received during the test, as (severity, message)."""
    start = len(notification_manager.records)
    return lambda: [(str(n.severity), n.message) for n in notification_manager.records[start:]]


@pytest.mark.parametrize(
    "path",
    [SVS, DICOM_DIR, DICOM_VOLUME, TIFF_6_LEVELS, FIXTURES / "boxes.tiff", FIXTURES / "small.svs"],
    ids=lambda p: p.name[:30],
)
def test_reader_claims_slides(path):
    assert get_slide_reader(str(path)) is read_slide_layers
    assert get_slide_reader([str(path)]) is read_slide_layers


def test_reader_declines_what_is_not_a_slide(format_fixtures, svs_file, tmp_path):
    assert get_slide_reader(str(format_fixtures / "boxes.png")) is None
    plain = tmp_path / "plain.tif"  # a striped, single-image TIFF: for napari's own reader
    tifffile.imwrite(plain, np.zeros((64, 64, 3), np.uint8))
    assert get_slide_reader(str(plain)) is None
    (tmp_path / "notes.txt").write_text("x")
    assert get_slide_reader(str(tmp_path)) is None  # a folder without DICOM files
    assert get_slide_reader([str(svs_file), str(svs_file)]) is None  # stacks are not slides


def test_reader_claims_a_broken_file_with_a_slide_extension(tmp_path):
    garbage = tmp_path / "scan.svs"
    garbage.write_bytes(b"\x00" * 1000)
    assert get_slide_reader(str(garbage)) is read_slide_layers


def test_svs_layer_data(svs_file):
    [(levels, kwargs, layer_type)] = read_slide(svs_file)
    assert layer_type == "image"
    assert isinstance(levels, list) and all(isinstance(a, da.Array) for a in levels)
    assert levels[0].shape == (2967, 2220, 3)
    assert kwargs["rgb"] and kwargs["multiscale"]
    assert kwargs["scale"] == (0.499, 0.499) and kwargs["units"] == "µm"
    assert kwargs["contrast_limits"] == (0, 255)  # napari must not scan a level for limits
    assert kwargs["name"] == "CMU-1-Small-Region"
    meta = kwargs["metadata"]["slide"]
    assert meta["path"] == str(svs_file) and meta["vendor"] == "aperio"
    assert meta["mpp"] == [0.499, 0.499] and meta["objective_power"] == 20
    assert meta["level_dimensions"] == [[2220, 2967]] and meta["level_downsamples"] == [1.0]
    assert meta["calibrated"] is True
    assert kwargs["metadata"]["slide_path"] == str(svs_file)


@pytest.mark.parametrize("path", [DICOM_DIR, DICOM_VOLUME], ids=["folder", "instance"])
def test_dicom_layer_data(path):
    [(levels, kwargs, _)] = read_slide(path)
    assert levels[0].shape == (2967, 2220, 3)
    assert kwargs["scale"] == pytest.approx((0.499, 0.499))
    assert kwargs["metadata"]["slide"]["vendor"] == "dicom"
    assert kwargs["metadata"]["slide_path"] == str(path)


@pytest.mark.parametrize("path", [TIFF_6_LEVELS, FIXTURES / "boxes.tiff"], ids=lambda p: p.name)
def test_uncalibrated_slide_gets_pixel_scale_and_a_warning(path, notes):
    [(_, kwargs, _)] = read_slide(path)
    assert kwargs["scale"] == (1.0, 1.0) and "units" not in kwargs
    assert kwargs["metadata"]["slide"]["calibrated"] is False
    assert kwargs["metadata"]["slide"]["mpp"] is None
    [(severity, message)] = notes()
    assert severity == "warning"
    assert path.stem in message and "implausible" in message and "in pixels" in message


def test_six_level_tiff_layer(six_level_tiff):
    [(levels, kwargs, _)] = read_slide(six_level_tiff)
    assert [a.shape[:2] for a in levels] == [
        (1525, 2033), (762, 1016), (381, 508), (190, 254), (95, 127), (47, 63)
    ]  # fmt: skip
    assert kwargs["metadata"]["slide"]["level_downsamples"][1] == pytest.approx(2.001148)


BROKEN = {
    "unreadable.svs": "cannot be decoded",
    "unopenable.tiff": "Unsupported TIFF compression",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_slide_gives_one_clear_error_notification(format_fixtures, name, notes):
    path = format_fixtures / name
    assert get_slide_reader(str(path)) is read_slide_layers  # claimed: it is a slide
    assert read_slide_layers(str(path)) == NO_LAYERS
    [(severity, message)] = notes()
    assert severity == "error" and name in message and BROKEN[name] in message
    assert "Traceback" not in message and "\n" not in message
    with pytest.raises(SlideError, match=BROKEN[name]):  # the programmatic API raises
        read_slide(path)


def test_garbage_with_a_slide_extension_is_explained(tmp_path, notes):
    garbage = tmp_path / "scan.svs"
    garbage.write_bytes(b"\x00" * 1000)
    assert read_slide_layers([str(garbage)]) == NO_LAYERS
    [(severity, message)] = notes()
    assert severity == "error" and "scan.svs" in message and "not a whole-slide image" in message


def test_unforeseen_failures_are_still_one_sentence(svs_file, monkeypatch, notes):
    def explode(*args, **kwargs):
        raise MemoryError("cannot allocate")

    monkeypatch.setattr(_reader, "Slide", explode)
    assert read_slide_layers(str(svs_file)) == NO_LAYERS
    [(severity, message)] = notes()
    assert severity == "error"
    assert message == (
        "CMU-1-Small-Region.svs: cannot open slide (out of memory: the input is too large for "
        "this computer's memory)"
    )


def test_npe2_finds_the_reader_and_sample(svs_file):
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-metastasis")
    patterns = manifest.contributions.readers[0].filename_patterns
    assert {"*.svs", "*.tiff", "*.ndpi", "*.mrxs", "*.dcm"} <= set(patterns)
    assert manifest.contributions.readers[0].accepts_directories
    readers = {r.plugin_name for r in pm.iter_compatible_readers([str(svs_file)])}
    assert "napari-metastasis" in readers
    layer_data = npe2.read([str(svs_file)], stack=False, plugin_name="napari-metastasis")
    assert layer_data[0][1]["scale"] == (0.499, 0.499)
    samples = dict(pm.iter_sample_data())["napari-metastasis"]
    assert [s.key for s in samples] == ["CMU-1-Small-Region"]


def test_sample_is_the_shipped_cc0_slide(svs_file):
    digest = hashlib.sha256(SAMPLE_SLIDE.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(svs_file.read_bytes()).hexdigest()
    [(levels, kwargs, layer_type)] = cmu1_small_region()
    assert layer_type == "image" and kwargs["scale"] == (0.499, 0.499)
    assert levels[0].shape == (2967, 2220, 3)
    tissue = np.asarray(levels[0][1000:1256, 1000:1256])
    assert tissue.std() > 10


@pytest.mark.gui
def test_layer_data_reports_a_corrupt_block_once(tmp_path, notes, qtbot):
    """Blocks fail in dask's threads; the one report reaches napari on the Qt main thread."""
    from synthetic_slides import write_tiled_tiff

    path = write_tiled_tiff(
        tmp_path / "corrupt.tif", [(2048, 2048), (512, 512)], corrupt_tiles={0: {0, 1, 20}}, mpp=0.5
    )
    with Slide(path) as slide:
        levels = slide_layer_data(slide)[0]
        pixels = np.asarray(levels[0])  # computed in dask's threads
    assert (pixels[:512, :512] == 255).all() and (pixels[1024:, 1024:] == (200, 120, 180)).all()
    qtbot.waitUntil(lambda: any(s == "warning" for s, _ in notes()), timeout=3000)
    qtbot.wait(50)
    warnings = [m for s, m in notes() if s == "warning"]
    assert len(warnings) == 1 and "corrupt.tif" in warnings[0] and "shown white" in warnings[0]
