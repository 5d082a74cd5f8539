"""The reader in a real, shown napari viewer (Qt under Xvfb): layers, pixels on screen, errors."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image as ImageLayer
from napari.utils.notifications import notification_manager
from PIL import Image
from shared_data import DICOM_DIR, DICOM_VOLUME
from synthetic_slides import write_tiled_tiff

from napari_metastasis.slides.slide import Slide

pytestmark = pytest.mark.gui
PLUGIN = "napari-metastasis"


@pytest.fixture
def notes():
    start = len(notification_manager.records)
    return lambda: [(str(n.severity), n.message) for n in notification_manager.records[start:]]


def _on_screen(viewer) -> np.ndarray:
    viewer.reset_view()
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3]


def _assert_shows_slide(viewer, path):
    """The canvas shows this slide's tissue: H&E colours, in the slide's place and shape."""
    shot = _on_screen(viewer)
    rgb = shot.astype(int)
    drawn = rgb.sum(axis=2) > 30  # the canvas background is black
    rows, cols = np.nonzero(drawn)
    crop = rgb[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    r, g, b = crop[..., 0], crop[..., 1], crop[..., 2]
    assert ((r - g > 25) & (b - g > 15)).mean() > 0.1  # eosin pink / haematoxylin purple
    with Slide(path) as slide:
        w, h = slide.dimensions
        thumb = Image.fromarray(slide.thumbnail(512)).resize((crop.shape[1], crop.shape[0]))
    assert crop.shape[1] / crop.shape[0] == pytest.approx(w / h, rel=0.02)
    expected = np.asarray(thumb, dtype=float).mean(axis=2).ravel()
    assert np.corrcoef(crop.mean(axis=2).ravel(), expected)[0, 1] > 0.9


def test_svs_opens_as_one_multiscale_rgb_layer_in_um(svs_file, make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(svs_file, plugin=PLUGIN)
    assert len(layers) == 1 and len(viewer.layers) == 1
    layer = layers[0]
    assert isinstance(layer, ImageLayer) and layer.multiscale and layer.rgb
    assert tuple(layer.scale) == (0.499, 0.499)
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    assert layer.metadata["slide"]["mpp"] == [0.499, 0.499]
    assert layer.metadata["slide"]["vendor"] == "aperio"
    # World extent is the slide in µm.
    assert layer.extent.world[1] == pytest.approx([2967 * 0.499, 2220 * 0.499], rel=1e-3)
    _assert_shows_slide(viewer, svs_file)


@pytest.mark.parametrize("path", [DICOM_DIR, DICOM_VOLUME], ids=["folder", "instance"])
def test_dicom_opens_in_viewer(dicom_volume, make_napari_viewer, path):
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(path, plugin=PLUGIN)
    assert tuple(layer.scale) == pytest.approx((0.499, 0.499))
    assert layer.metadata["slide"]["vendor"] == "dicom"
    _assert_shows_slide(viewer, dicom_volume)


def test_uncalibrated_slide_opens_in_pixels_with_a_visible_warning(
    six_level_tiff, make_napari_viewer, notes, qtbot
):
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(six_level_tiff, plugin=PLUGIN)
    assert tuple(layer.scale) == (1.0, 1.0)
    assert len(layer.data) == 6 and layer.metadata["slide"]["calibrated"] is False
    [(severity, message)] = notes()
    assert severity == "warning" and "CropBreastSlide" in message and "in pixels" in message
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.waitUntil(
        lambda: any(
            "CropBreastSlide" in toast.message.text() and toast.isVisible()
            for toast in canvas.findChildren(NapariQtNotification)
        ),
        timeout=3000,
    )
    _assert_shows_slide(viewer, six_level_tiff)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("unreadable.svs", "cannot be decoded"), ("unopenable.tiff", "Unsupported TIFF compression")],
)
def test_broken_slide_shows_an_error_and_the_viewer_carries_on(
    format_fixtures, svs_file, make_napari_viewer, notes, qtbot, name, reason
):
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    viewer = make_napari_viewer(show=True)
    path = format_fixtures / name
    # The way File > Open and drag-and-drop open files: no exception, no reader dialog.
    viewer.window._qt_viewer._qt_open([str(path)], stack=False, plugin=PLUGIN)
    assert viewer.open(path, plugin=PLUGIN) == []
    assert len(viewer.layers) == 0
    errors = [m for s, m in notes() if s == "error"]
    assert len(errors) == 2 and all(name in m and reason in m for m in errors)
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.waitUntil(
        lambda: any(
            name in toast.message.text() and toast.isVisible()
            for toast in canvas.findChildren(NapariQtNotification)
        ),
        timeout=3000,
    )
    # Still usable: a good slide opens and draws.
    [layer] = viewer.open(svs_file, plugin=PLUGIN)
    assert tuple(layer.scale) == (0.499, 0.499)
    _assert_shows_slide(viewer, svs_file)


def test_broken_svs_through_the_remembered_reader(
    format_fixtures, svs_file, make_napari_viewer, notes, monkeypatch
):
    """File > Open once napari-metastasis is the remembered reader for .svs: one clean error.

    (napari's builtins claim every file, so napari asks the first time which reader to use.)
    """
    from napari.settings import get_settings

    viewer = make_napari_viewer(show=True)
    plugins = get_settings().plugins
    monkeypatch.setattr(plugins, "extension2reader", {"*.svs": PLUGIN})
    viewer.window._qt_viewer._qt_open([str(format_fixtures / "unreadable.svs")], stack=False)
    assert len(viewer.layers) == 0
    assert [s for s, _ in notes()] == ["error"]
    viewer.window._qt_viewer._qt_open([str(svs_file)], stack=False)
    assert len(viewer.layers) == 1


def test_sample_data_opens(svs_file, make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "CMU-1-Small-Region")
    [layer] = viewer.layers
    assert layer.multiscale and layer.rgb and tuple(layer.scale) == (0.499, 0.499)
    _assert_shows_slide(viewer, svs_file)


def test_corrupt_tile_is_drawn_white_and_reported(make_napari_viewer, notes, qtbot, tmp_path):
    # Level 1 (what the zoomed-out view draws) has a corrupt last tile; its first tile, which
    # opening checks, is fine.
    path = write_tiled_tiff(
        tmp_path / "corrupt.tif", [(2048, 2048), (1024, 1024)], corrupt_tiles={1: {15}}, mpp=0.5
    )
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(path, plugin=PLUGIN)
    shot = _on_screen(viewer).reshape(-1, 3)
    assert layer.data_level == 1
    drawn = shot[shot.sum(axis=1) > 30]
    assert (drawn == 255).all()  # level 1 is one block, and it could not be decoded
    qtbot.waitUntil(
        lambda: any(s == "warning" and "shown white" in m for s, m in notes()), timeout=3000
    )
    assert not [m for s, m in notes() if s == "error"]
