"""What a pathologist tripped over in a real session (issue 12), each in a real napari viewer.

Every test here failed before its fix: a slide without µm/px could not be analysed, a reopened
slide covered its restored analysis, annotations from another slide landed silently far away, New
drew white rectangles, thresholds disagreed, status texts went stale, the selected region did not
show, contours vanished on some colormaps and the tint hid the H&E, the overlay and the CSV ran
past the slide's edge, and napari repeated its units notice.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from napari.utils.notifications import notification_manager
from test_widget_regions import synthetic_map
from widget_helpers import add_sample_slide, docked_widget, write_test_model

from napari_metastasis._napari import colormaps as overlay_module
from napari_metastasis._napari.slide_reader import slide_layer_data
from napari_metastasis.models import DEFAULT_MODEL, resolve_threshold
from napari_metastasis.models.registry import resolve_model
from napari_metastasis.models.threshold import MODEL_CARD_FILE
from napari_metastasis.slides.slide import Slide
from napari_metastasis.widgets.detection import SHAPES, WHOLE, MetastasisWidget

pytestmark = pytest.mark.gui
RUN_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_test_model(tmp_path_factory.mktemp("models"))


@pytest.fixture
def notes():
    start = len(notification_manager.records)
    return lambda: [(str(n.severity), str(n.message)) for n in notification_manager.records[start:]]


@pytest.fixture
def env(make_napari_viewer, tmp_path, monkeypatch, model_dir):
    viewer, widget, _ = docked_widget(make_napari_viewer, tmp_path, monkeypatch, sample=False)
    widget.add_model_folder(model_dir)
    widget.source.device.value = "cpu"
    widget.source.batch_size.value = 16
    return viewer, widget


def add_slide(viewer, path):
    data, kwargs, _ = slide_layer_data(Slide(path), warn_uncalibrated=False)
    return viewer.add_image(data, **kwargs)


def run_and_wait(qtbot, widget):
    widget.run()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)
    return widget.current_analysis


def reopen(viewer, qtbot, widget, path):
    """Close every slide layer of ``path`` and open it again, as a user would."""
    for layer in [lyr for lyr in viewer.layers if lyr.metadata.get("slide_path") == str(path)]:
        viewer.layers.remove(layer)
    layer = add_slide(viewer, path)
    qtbot.waitUntil(lambda: widget.current_analysis is not None, timeout=5000)
    qtbot.wait(100)  # the restore runs once the layer is fully inserted
    return layer


# --- 1. µm/px for slides that state none ------------------------------------------------------
def test_an_uncalibrated_slide_is_analysed_with_the_um_per_px_given_and_remembers_it(
    six_level_tiff, env, qtbot, notes, make_napari_viewer
):
    viewer, widget = env
    layer = add_slide(viewer, six_level_tiff)  # CropBreastSlide: 96 dpi tag, no objective power
    assert tuple(layer.scale) == (1.0, 1.0)
    field = widget.source.mpp
    assert field.enabled and widget.source.mpp_value is None
    assert "enter it" in widget.source.mpp_source.value
    widget.set_mode(WHOLE)
    widget.run()  # refused in words a GUI user can act on: no "--mpp"
    assert not widget.is_running and widget.current_analysis is None
    warnings = [m for s, m in notes() if s == "warning"]
    assert any("µm/px field" in m for m in warnings) and not any("--mpp" in m for m in warnings)

    assert not viewer.scale_bar.visible
    field.value = 0.5
    assert tuple(layer.scale) == (0.5, 0.5)  # the layer is in µm now
    assert viewer.scale_bar.visible
    assert tuple(str(u) for u in layer.units) in {("µm", "µm"), ("micrometer", "micrometer")}
    analysis = run_and_wait(qtbot, widget)
    assert analysis is not None, widget.status.text()
    grid = analysis.prob_map.grid
    assert (grid.mpp_x, grid.mpp_y) == (0.5, 0.5)
    assert analysis.prob_map.n_analysed > 0 and widget.status.text().startswith("Done")

    # a new session: the slide opens in pixels again, and the remembered analysis brings 0.5 back
    viewer2 = make_napari_viewer(show=True)
    widget2 = MetastasisWidget(viewer2)
    viewer2.window.add_dock_widget(widget2, name="Metastasis detection")
    layer2 = add_slide(viewer2, six_level_tiff)
    qtbot.waitUntil(lambda: widget2.current_analysis is not None, timeout=5000)
    assert tuple(layer2.scale) == (0.5, 0.5)
    assert widget2.source.mpp_value == 0.5 and "given" in widget2.source.mpp_source.value


def test_a_calibrated_slide_shows_its_own_um_per_px_read_only(env):
    viewer, widget = env
    add_sample_slide(viewer)
    assert widget.source.mpp_value == pytest.approx(0.499, abs=1e-3)
    assert not widget.source.mpp.enabled and "file" in widget.source.mpp_source.value


# --- 2. a reopened slide lies under its analysis ------------------------------------------------
def test_a_reopened_slide_lies_under_its_restored_overlay_and_regions(env, qtbot, tmp_path):
    viewer, widget = env
    layer = add_sample_slide(viewer)
    prob = synthetic_map(layer.metadata["slide_path"])
    widget.load_analysis(prob.save(tmp_path / "map.tif"))
    widget.files.remember(widget.current_analysis)
    layer = reopen(viewer, qtbot, widget, layer.metadata["slide_path"])
    view = widget.current_analysis
    names = [lyr.name for lyr in viewer.layers]
    assert (
        names.index(layer.name)
        < names.index(view.overlay.name)
        < names.index(view.regions_layer.name)
    )
    assert widget.navigator.table.rowCount() > 0
    # and the screen shows the overlay: a high-probability cell is tinted, not bare tissue
    viewer.reset_view()
    with_overlay = viewer.screenshot(canvas_only=True, flash=False)
    view.overlay.set_visible(False)
    without = viewer.screenshot(canvas_only=True, flash=False)
    assert np.abs(with_overlay.astype(int) - without.astype(int)).sum() > 0


# --- 3. annotations from another slide ----------------------------------------------------------
def test_annotations_outside_the_slide_are_warned_once_and_repairs_summarised(
    ncrf_dir, svs_file, make_napari_viewer, notes
):
    viewer = make_napari_viewer()
    viewer.open(str(svs_file), plugin="napari-metastasis")
    start = len(notes())
    viewer.open(str(ncrf_dir / "Tumor_064.json"), plugin="napari-metastasis")
    new = [m for s, m in notes()[start:] if s == "warning"]
    outside = [m for m in new if "outside" in m]
    assert len(outside) == 1, new
    assert "35 of 35" in outside[0] and "mm away" in outside[0] and "another slide" in outside[0]
    assert not any("invalid polygon" in m for m in new)  # six repair toasts before
    assert len([m for m in new if "needed repair" in m]) == 1
    assert len(new) == 2, new  # and no "Inconsistent units": the layers are in µm like the slide


def test_convert_with_a_slide_warns_about_annotations_outside_it(
    ncrf_dir, svs_file, tmp_path, capsys
):
    from napari_metastasis.cli import main

    code = main(
        [
            "convert",
            str(ncrf_dir / "Tumor_064.json"),
            str(tmp_path / "t.geojson"),
            "--slide",
            str(svs_file),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("outside CMU-1-Small-Region") == 1 and "another slide" in err
    assert err.count("needed repair") == 1 and "invalid polygon" not in err


# --- 4. New draws see-through rectangles --------------------------------------------------------
def test_new_shapes_layer_draws_rectangles_that_do_not_hide_the_tissue(env, qtbot):
    viewer, widget = env
    add_sample_slide(viewer)
    viewer.reset_view()
    layer = widget.new_shapes_layer()
    assert layer.mode == "add_rectangle"
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    height, width = viewer.window._qt_viewer.canvas.size
    start, end = (width / 2 - 60, height / 2 - 60), (width / 2 + 60, height / 2 + 60)
    canvas.events.mouse_press(pos=start, modifiers=(), button=1)
    canvas.events.mouse_move(pos=end, modifiers=(), button=1, press_event=None)
    canvas.events.mouse_release(pos=end, modifiers=(), button=1)
    if not len(layer.data):  # some napari versions need the drag as a real event sequence
        layer.add_rectangles(np.array([[400.0, 400.0], [600.0, 600.0]]))
    assert len(layer.data) == 1
    assert layer.face_color[0][3] == 0.0  # transparent: before, white
    viewer.layers.selection.active = layer
    layer.mode = "pan_zoom"
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    centre = shot[shot.shape[0] // 2 - 5 : shot.shape[0] // 2 + 5, shot.shape[1] // 2]
    assert not np.all(centre >= 250)  # tissue, not a white fill


# --- 5. one threshold ---------------------------------------------------------------------------
def test_the_slider_starts_at_the_models_threshold_and_says_where_it_comes_from(env):
    _viewer, widget = env
    card = resolve_threshold(None, DEFAULT_MODEL)
    card_file = json.loads((resolve_model(DEFAULT_MODEL) / MODEL_CARD_FILE).read_text())
    assert card.source == "model card" and card.value == pytest.approx(card_file["threshold"])
    widget.source.select_model(DEFAULT_MODEL)
    assert widget.display.threshold.value == pytest.approx(card.value, abs=0.005)
    assert f"{card.value:.3g}" in widget.display.threshold_source.value
    assert "model card" in widget.display.threshold_source.value
    widget.source.select_model("darkness")  # no card: 0.5, and it says so
    assert widget.display.threshold.value == pytest.approx(0.5)
    assert "default" in widget.display.threshold_source.value
    widget.display.threshold.value = 0.3
    assert "now 0.3" in widget.display.threshold_source.value
    widget.display.reset_threshold.changed.emit(True)
    assert widget.display.threshold.value == pytest.approx(0.5)


# --- 6. status texts ----------------------------------------------------------------------------
def test_status_is_never_stale_nor_unclear(six_level_tiff, env, qtbot):
    viewer, widget = env
    sample = add_sample_slide(viewer)
    assert widget.progress.text() == "no run yet"  # not "0 / 1"
    widget.source.tissue_min.value = 0.0
    widget.set_mode(WHOLE)
    run_and_wait(qtbot, widget)
    first = widget.status.text()
    assert first.startswith("Done")
    run_and_wait(qtbot, widget)  # everything reused
    assert "nothing new to classify" in widget.status.text(), widget.status.text()
    assert widget.progress.text() != "1 / 1"
    # a shape over glass: it says there is no tissue there
    widget.source.tissue_min.value = 0.25
    shapes = viewer.add_shapes(
        np.array([[[10.0, 10.0], [10.0, 120.0], [120.0, 120.0], [120.0, 10.0]]]),
        shape_type="rectangle",
        face_color="transparent",
        name="glass",
    )
    widget.source.model.value = widget.source.model.get_choice("darkness")
    widget.set_mode(SHAPES)
    widget.run_controls.select_shapes_layer(shapes.name)
    widget.store._maps.clear()  # forget the first run so the shape's cells are new
    run_and_wait(qtbot, widget)
    assert widget.status.text().startswith("No tissue under the 1 drawn shape"), (
        widget.status.text()
    )
    # another slide: the first slide's message does not stay
    other = add_slide(viewer, six_level_tiff)
    widget.select_slide_layer(other)
    assert widget.status.text() == "Ready." and widget.progress.text() == "no run yet"
    widget.select_slide_layer(sample)  # back: the sample's own last message (issue 21, D4)
    assert widget.status.text().startswith("No tissue under the 1 drawn shape")


# --- 7. the selected region stands out in pan/zoom mode ----------------------------------------
def test_the_region_clicked_in_the_list_is_highlighted_in_pan_zoom_mode(env, qtbot, tmp_path):
    viewer, widget = env
    layer = add_sample_slide(viewer)
    widget.load_analysis(synthetic_map(layer.metadata["slide_path"]).save(tmp_path / "m.tif"))
    widget.display.threshold.value = 0.5
    widget.update_contours()
    regions = widget.current_analysis.regions_layer
    assert regions.layer.mode == "pan_zoom"
    widget.go_to_region(0)
    qtbot.wait(50)
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3]
    regions.highlight(None)
    plain = viewer.screenshot(canvas_only=True, flash=False)[..., :3]
    lit = _count_color(shot, regions.highlight_color)
    assert lit > 100 and lit > 3 * _count_color(plain, regions.highlight_color), lit
    widget.go_to_region(0)
    rows = regions.rows_of(widget.current_analysis.regions[0].uid)
    widths = np.asarray(regions.layer.edge_width)
    others = np.setdiff1d(np.arange(len(widths)), rows)
    assert widths[rows].min() > 2 * widths[others].max()


def _count_color(shot, hex_color, tolerance=40):
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(shot.astype(int) - rgb).max(axis=-1) < tolerance).sum())


# --- 8. contours contrast, low probabilities leave the H&E readable ----------------------------
@pytest.mark.parametrize("colormap", overlay_module.COLORMAPS)
def test_contours_contrast_with_every_colormap(colormap):
    for threshold in (0.3, 0.5, 0.65, 0.735):
        color = overlay_module.contour_color(colormap, threshold)
        rgb = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        values = np.linspace(threshold, 1.0, 32)
        behind = overlay_module.base_colors(colormap, values)[:, :3]
        assert np.linalg.norm(behind - rgb, axis=1).min() > 0.5, (colormap, threshold, color)


def test_low_probabilities_leave_the_tissue_readable_and_a_floor_hides_them(env, tmp_path):
    viewer, widget = env
    layer = add_sample_slide(viewer)
    prob = synthetic_map(layer.metadata["slide_path"])
    widget.load_analysis(prob.save(tmp_path / "m.tif"))
    view = widget.current_analysis
    view.regions_layer.set_visible(False)
    viewer.reset_view()
    for colormap in ("metastasis", "inferno"):
        widget.display.colormap.value = colormap
        with_overlay = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
        view.overlay.set_visible(False)
        bare = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
        view.overlay.set_visible(True)
        low = _cell_pixels(viewer, prob.grid, rows=range(11, 12), cols=range(9))  # p = 0.05
        change = np.abs(with_overlay[low] - bare[low]).mean()
        assert 0 < change < 30, (colormap, change)  # tinted, yet the H&E shows through
    widget.display.floor.value = 0.1
    floored = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    assert np.abs(floored[low] - bare[low]).max() <= 2  # below the floor: nothing drawn
    high = _cell_pixels(viewer, prob.grid, rows=range(2, 3), cols=range(4, 6))  # p = 0.9
    assert np.abs(floored[high] - bare[high]).mean() > 25  # at 50 % opacity (issue 21, D8)


def _cell_pixels(viewer, grid, rows, cols):
    """Boolean canvas mask of the centres of some grid cells."""
    from napari_metastasis.widgets.selection import canvas_size

    height, width = canvas_size(viewer)
    camera = viewer.scene.camera
    mask = np.zeros((int(height), int(width)), bool)
    for r in rows:
        for c in cols:
            x, y = grid.cell_centres_level0([[r, c]])[0]
            world = np.array([y * grid.mpp_y, x * grid.mpp_x])
            sy, sx = (world - np.array(camera.center[-2:])) * camera.zoom + np.array(
                [height, width]
            ) / 2
            mask[int(sy) - 2 : int(sy) + 3, int(sx) - 2 : int(sx) + 3] = True
    return mask


# --- 9. the overlay and the CSV end at the slide's edge ----------------------------------------
def test_the_overlay_ends_at_the_slide_edge(env, qtbot):
    viewer, widget = env
    layer = add_sample_slide(viewer)
    widget.source.tissue_min.value = 0.0
    widget.set_mode(WHOLE)
    analysis = run_and_wait(qtbot, widget)
    image = analysis.overlay.layer
    slide_h, slide_w = np.array(layer.data[0].shape[:2]) * np.array(layer.scale)
    scale, translate = np.array(image.scale), np.array(image.translate)
    end = translate - scale / 2 + np.array(image.data.shape) * scale
    grid = analysis.prob_map.grid
    assert grid.shape[1] * grid.step_um > slide_w + 10  # the last patches do reach past it
    np.testing.assert_allclose(end, [slide_h, slide_w], atol=scale.max() / 2 + 1e-6)


def test_predict_csv_rows_end_at_the_slide_edge(svs_file, tmp_path, model_dir):
    import pandas as pd

    from napari_metastasis.cli import main

    out = tmp_path / "out"
    args = ["--model", str(model_dir), "--device", "cpu", "--tissue-min-fraction", "0"]
    assert main(["predict", str(svs_file), "--out", str(out), *args]) == 0
    table = pd.read_csv(out / f"{svs_file.stem}.csv")
    with Slide(svs_file) as slide:
        width, height = slide.dimensions
    assert (table["minx"] + table["width"]).max() == width
    assert (table["miny"] + table["height"]).max() == height


# --- 10. napari's units notice, once ------------------------------------------------------------
def test_a_px_slide_next_to_a_um_slide_gives_one_units_notice(
    svs_file, six_level_tiff, make_napari_viewer, notes, qtbot
):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(svs_file), plugin="napari-metastasis")
    viewer.open(str(six_level_tiff), plugin="napari-metastasis")
    for i in range(3):  # every layer change makes napari re-check units
        viewer.add_points(np.array([[10.0 * i, 10.0]]), name=f"p{i}")
        qtbot.wait(30)
    units = [m for _, m in notes() if "Inconsistent units" in m]
    assert len(units) <= 1, units


def test_a_case_list_slide_is_checked_against_its_own_calibration(svs_file, six_level_tiff, env):
    """Analysing a case slide never borrows the selected slide's µm/px (nor its refusal)."""
    viewer, widget = env
    uncalibrated = add_slide(viewer, six_level_tiff)
    widget.source.mpp.value = 0.5  # given for the uncalibrated slide selected in the dock
    widget.select_slide_layer(uncalibrated)
    request = widget.cases.request_for(str(svs_file))  # the sample, closed: its file states 0.499
    assert request is not None and request.slide_path == str(svs_file) and request.mpp is None
