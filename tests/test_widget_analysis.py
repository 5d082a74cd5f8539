"""The dock widget on the sample slide with a tiny pixel-driven model, in a real napari viewer."""

from __future__ import annotations

import numpy as np
import pytest
from widget_helpers import (
    PATCH_PX,
    Gate,
    analysed_cells,
    docked_widget,
    write_test_model,
)

from napari_metastasis.models.transforms import resize_patch
from napari_metastasis.slides.slide import Slide
from napari_metastasis.widgets import selection
from napari_metastasis.widgets.detection import CLICK, VISIBLE, WHOLE, MetastasisWidget
from napari_metastasis.widgets.frame import SlideFrame

pytestmark = pytest.mark.gui
RUN_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_test_model(tmp_path_factory.mktemp("models"))


@pytest.fixture
def env(make_napari_viewer, qtbot, tmp_path, monkeypatch, model_dir):
    """A viewer with the sample slide and the widget set to the test model on the CPU."""
    viewer, widget, layer = docked_widget(make_napari_viewer, tmp_path, monkeypatch)
    widget.add_model_folder(model_dir)
    widget.source.device.value = "cpu"
    widget.source.tissue_min.value = 0.0  # classify every cell: exact expectations
    widget.source.batch_size.value = 8
    return viewer, widget, layer


def wait_done(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)


def run_and_wait(qtbot, widget):
    widget.run()
    wait_done(qtbot, widget)
    return widget.current_analysis


def test_visible_region_classifies_exactly_the_cells_in_view(env, qtbot):
    viewer, widget, layer = env
    camera = viewer.scene.camera
    camera.center = (900.0, 400.0)  # µm (y, x) on a 1480 × 1108 µm slide
    camera.zoom = 2.0  # screen px per µm: a few hundred µm in view
    qtbot.wait(50)  # let the canvas draw with the new camera

    # my visible rectangle agrees with napari's own canvas corners
    corners = viewer.window._qt_viewer.canvas._viewbox_corners_in_world[:, -2:]
    y0, x0, y1, x1 = selection.visible_world_rect(viewer)
    np.testing.assert_allclose([y0, x0], corners[0], atol=1.0)
    np.testing.assert_allclose([y1, x1], corners[1], atol=1.0)

    widget.set_mode(VISIBLE)
    analysis = run_and_wait(qtbot, widget)
    assert analysis is not None, widget.status.text()
    grid = analysis.prob_map.grid
    rect = selection.visible_region(viewer, SlideFrame.from_layer(layer))
    expected = {tuple(c) for c in grid.cells_in_rect(*rect.as_tuple()).tolist()}
    got = analysed_cells(analysis.prob_map)
    assert got == expected
    assert 0 < len(got) < grid.shape[0] * grid.shape[1] / 2
    # every analysed patch overlaps the view, and no patch overlapping the view is missing
    boxes = grid.cell_boxes(np.array(sorted(got)))
    assert np.all(boxes[:, 0] < rect.x + rect.width) and np.all(boxes[:, 0] + boxes[:, 2] > rect.x)
    assert np.all(boxes[:, 1] < rect.y + rect.height) and np.all(boxes[:, 1] + boxes[:, 3] > rect.y)
    assert widget.status.text().startswith("Done: visible region")


def test_click_analyses_the_field_around_the_clicked_point(env, qtbot):
    viewer, widget, _layer = env
    viewer.scene.camera.center = (700.0, 500.0)
    viewer.scene.camera.zoom = 1.0
    qtbot.wait(50)
    widget.set_mode(CLICK)
    widget.run_controls.field_size.value = 300.0
    assert not widget.run_controls.run_button.enabled

    canvas = viewer.window._qt_viewer.canvas
    height, width = selection.canvas_size(viewer)
    click_xy = (width / 2 + 100, height / 2 - 50)  # canvas px (x, y): 100 µm right, 50 µm up
    scene = canvas._scene_canvas
    scene.events.mouse_press(pos=click_xy, modifiers=(), button=1)
    scene.events.mouse_release(pos=click_xy, modifiers=(), button=1)
    wait_done(qtbot, widget)

    analysis = widget.current_analysis
    assert analysis is not None, widget.status.text()
    grid = analysis.prob_map.grid
    point_um = np.array([700.0 - 50, 500.0 + 100])  # world (y, x) under the click
    x_px, y_px = point_um[::-1] / (grid.mpp_x, grid.mpp_y)
    half = 150.0 / grid.mpp_x
    expected = grid.cells_in_rect(x_px - half, y_px - half, 2 * half, 2 * half)
    assert analysed_cells(analysis.prob_map) == {tuple(c) for c in expected.tolist()}
    # the clicked point's own cell is among them
    step_x, step_y = grid.step_level0
    assert (int(y_px // step_y), int(x_px // step_x)) in analysed_cells(analysis.prob_map)


def test_drag_in_click_mode_pans_without_analysing(env, qtbot):
    viewer, widget, _layer = env
    widget.set_mode(CLICK)
    scene = viewer.window._qt_viewer.canvas._scene_canvas
    scene.events.mouse_press(pos=(300, 300), modifiers=(), button=1)
    scene.events.mouse_move(pos=(360, 330), modifiers=(), button=1)
    scene.events.mouse_release(pos=(360, 330), modifiers=(), button=1)
    qtbot.wait(50)
    assert not widget.is_running
    assert widget.current_analysis is None


def test_whole_slide_fills_the_map_and_the_overlay_is_aligned(env, qtbot):
    _viewer, widget, layer = env
    widget.set_mode(WHOLE)
    analysis = run_and_wait(qtbot, widget)
    prob_map = analysis.prob_map
    assert prob_map.n_analysed == prob_map.values.size
    assert np.all((prob_map.values >= 0) & (prob_map.values <= 1))
    # the overlay shows the map, aligned exactly as the grid says
    overlay = analysis.overlay.layer
    # each cell is drawn as f × f pixels, cut at the slide's edges
    raster = analysis.overlay.raster
    f = raster.factor
    np.testing.assert_array_equal(overlay.data, raster.render(prob_map.values))
    np.testing.assert_array_equal(analysis.overlay.cell_values(), prob_map.values)
    scale, translate = np.array(overlay.scale), np.array(overlay.translate)
    np.testing.assert_allclose(scale * f, prob_map.grid.layer_scale)
    # the middle of cell (1, 1)'s pixels is its patch's centre
    middle = np.array([sum(raster.pixel_range(axis, 1, 2)[:2]) / 2 - 0.5 for axis in (0, 1)])
    np.testing.assert_allclose(
        translate + middle * scale,
        np.array(prob_map.grid.layer_translate) + prob_map.grid.layer_scale,
    )
    assert tuple(overlay.contrast_limits) == (0.0, 1.0)
    # each value is the model's known answer: the darkness of that cell's patch
    grid = prob_map.grid
    with Slide(layer.metadata["slide_path"]) as slide:
        for cell in [(0, 0), (5, 4), (11, 8)]:
            x, y, w, h = grid.read_boxes(np.array([cell]))[0]  # the whole patch read
            patch = resize_patch(slide.read_region(0, x, y, w, h), (PATCH_PX, PATCH_PX))
            expected = 1.0 - patch.mean() / 255.0
            assert prob_map.values[cell] == pytest.approx(expected, abs=2e-3)
    assert prob_map.values[5, 4] > prob_map.values[0, 0]  # tissue darker than the glass


def test_screenshot_with_overlay_differs_from_without(env, qtbot):
    viewer, widget, _layer = env
    widget.set_mode(WHOLE)
    analysis = run_and_wait(qtbot, widget)
    viewer.reset_view()
    with_overlay = viewer.screenshot(canvas_only=True, flash=False)
    widget.display.show_overlay.value = False
    widget.display.show_contours.value = False
    assert not analysis.overlay.layer.visible and not analysis.regions_layer.layer.visible
    without = viewer.screenshot(canvas_only=True, flash=False)
    assert with_overlay.shape == without.shape
    changed = np.any(with_overlay[..., :3] != without[..., :3], axis=-1)
    assert changed.mean() > 0.2  # the whole slide is tinted (it fills much of the canvas)
    # and the slide itself is drawn in both (not a black canvas)
    assert without[..., :3].mean() > 50
    widget.display.show_overlay.value = True
    again = viewer.screenshot(canvas_only=True, flash=False)
    assert np.any(again[..., :3] != without[..., :3], axis=-1).mean() > 0.2


def test_overlapping_analyses_reuse_earlier_patches(env, qtbot):
    viewer, widget, _layer = env
    viewer.scene.camera.center = (700.0, 500.0)
    viewer.scene.camera.zoom = 2.0
    qtbot.wait(50)
    widget.set_mode(VISIBLE)
    first = run_and_wait(qtbot, widget)
    n_first = first.prob_map.n_analysed
    values_first = first.prob_map.values.copy()
    widget.set_mode(WHOLE)
    second = run_and_wait(qtbot, widget)
    assert second is first and second.prob_map is first.prob_map  # same slide + model: same map
    assert f"{n_first} reused" in widget.status.text()
    assert second.prob_map.n_analysed == second.prob_map.values.size
    known = ~np.isnan(values_first)
    np.testing.assert_array_equal(second.prob_map.values[known], values_first[known])
    # only one overlay layer for this slide and model
    overlays = [lyr for lyr in viewer.layers if lyr.metadata.get("probability_map")]
    assert len(overlays) == 1


def test_cancel_whole_slide_stops_early_and_keeps_finished_patches(env, qtbot, monkeypatch):
    viewer, widget, _layer = env
    widget.source.batch_size.value = 4
    real_model = widget.resources.model
    gates: list[Gate] = []

    def gated_model(ref, device, sha256=None):
        model = real_model(ref, device, sha256)
        if not gates:
            gates.append(Gate(model))
        return model

    monkeypatch.setattr(widget.resources, "model", gated_model)
    widget.set_mode(WHOLE)
    widget.run()
    qtbot.waitUntil(lambda: bool(gates), timeout=RUN_TIMEOUT_MS)
    gate = gates[0]
    gate.release(2)
    qtbot.waitUntil(lambda: widget.progress.value() >= 8, timeout=RUN_TIMEOUT_MS)
    assert widget.is_running and widget.run_controls.cancel_button.enabled
    # mid-run, with the model busy: the overlay already shows the finished batches, the status
    # line counts them, and the viewer still pans and zooms
    overlay = widget.current_analysis.overlay

    def shown():
        return int(np.count_nonzero(~np.isnan(overlay.cell_values())))

    qtbot.waitUntil(lambda: shown() >= 8, timeout=RUN_TIMEOUT_MS)
    assert "8 / " in widget.status.text() and "patches/s" in widget.status.text()
    viewer.scene.camera.zoom = 3.0
    viewer.scene.camera.center = (500.0, 500.0)
    qtbot.wait(50)
    assert widget.is_running and viewer.scene.camera.zoom == 3.0
    widget.cancel()
    gate.restore()
    wait_done(qtbot, widget)

    prob_map = widget.current_analysis.prob_map
    total = prob_map.values.size
    assert gate.calls <= 3  # at most the batch that was already waiting at the gate
    assert 8 <= prob_map.n_analysed <= 12 < total
    assert widget.status.text().startswith("Cancelled")
    assert not widget.run_controls.cancel_button.enabled and widget.run_controls.run_button.enabled
    np.testing.assert_array_equal(widget.current_analysis.overlay.cell_values(), prob_map.values)
    # the viewer is usable: a new run finishes the slide, reusing what the cancelled run kept
    kept = prob_map.n_analysed
    run_and_wait(qtbot, widget)
    assert prob_map.n_analysed == total
    assert f"{kept} reused" in widget.status.text()


def test_the_plugin_menu_entry_opens_the_widget_on_the_sample(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-metastasis", "CMU-1-Small-Region")
    _dock, widget = viewer.window.add_plugin_dock_widget(
        "napari-metastasis", "Metastasis detection"
    )
    assert isinstance(widget, MetastasisWidget)
    assert widget.slide_layer is viewer.layers[0]
    assert widget.run_controls.run_button.enabled


def test_clicks_during_a_run_are_queued_and_all_analysed(env, qtbot):
    _viewer, widget, _layer = env
    widget.set_mode(CLICK)
    widget.run_controls.field_size.value = 200.0
    points = [(200.0, 200.0), (700.0, 800.0), (1300.0, 300.0)]
    for point in points:
        widget.analyse_field_at(point)
    assert widget.is_running and len(widget.runner.queue) == 2
    wait_done(qtbot, widget)
    prob_map = widget.current_analysis.prob_map
    grid = prob_map.grid
    expected = set()
    for y, x in points:
        half = 100.0 / grid.mpp_x
        cells = grid.cells_in_rect(x / grid.mpp_x - half, y / grid.mpp_y - half, 2 * half, 2 * half)
        expected |= {tuple(c) for c in cells.tolist()}
    assert analysed_cells(prob_map) == expected
    assert widget.analyse_field_at((-500.0, -500.0)) is None  # beside the slide: nothing
    assert not widget.is_running and "outside the slide" in widget.status.text()


def test_contours_finishing_after_the_widget_is_gone_touch_nothing(env, qtbot, monkeypatch):
    """D15: a contour worker that returns after its dock widget was deleted (the viewer closed
    mid-run, as at a test's teardown) must not touch the deleted Qt controls."""
    import threading

    from qtpy import sip

    from napari_metastasis.pipeline import answer

    viewer, widget, _layer = env
    widget.set_mode(VISIBLE)
    view = run_and_wait(qtbot, widget)
    real = answer.probability_contours  # the region finder of the finish step
    release, started = threading.Event(), threading.Event()

    def slow_contours(*args, **kwargs):
        started.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(answer, "probability_contours", slow_contours)
    widget.regions.start(view)
    worker = widget.regions.worker
    assert worker is not None and started.wait(10)
    finished: list[bool] = []
    worker.finished.connect(lambda: finished.append(True))
    viewer.window.remove_dock_widget(widget)
    sip.delete(widget)  # what closing the viewer does to the dock's controls
    assert sip.isdeleted(widget)
    release.set()
    qtbot.waitUntil(lambda: bool(finished), timeout=RUN_TIMEOUT_MS)
    qtbot.wait(50)  # the returned/finished slots have run (an exception in them fails the test)


def test_the_bundled_model_takes_the_first_pass_unless_exhaustive_is_ticked(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """The viewer's run takes the first-pass shortcut as ``predict`` does, says when the full model
    checks, and marks the settled patches; *Exhaustive* classifies them again with the full model."""
    _viewer, widget, _layer = docked_widget(make_napari_viewer, tmp_path, monkeypatch)
    widget.source.device.value = "cpu"  # the bundled model, the default choice
    assert widget.source.exhaustive.value is False
    stages: list[str] = []
    widget.runner.stage.connect(stages.append)
    widget.set_mode(WHOLE)
    prob = run_and_wait(qtbot, widget).prob_map
    settled = int(prob.n_first_pass)
    assert 0 < settled < prob.n_analysed
    assert not any(s.startswith("Checking") for s in stages)  # no candidate: nothing to check
    assert prob.extra["first_pass"]["cut"] == pytest.approx(0.25)
    # regions below the threshold the shortcut ran at may miss settled patches: the list says so
    caution = "hold the first pass's estimate: tick Exhaustive"
    summary = widget.navigator.summary
    assert caution not in summary.text()
    widget.display.threshold.value = 0.4
    qtbot.waitUntil(lambda: caution in summary.text(), timeout=RUN_TIMEOUT_MS)
    assert f"{settled} patches hold" in summary.text().replace(",", "")
    # run again at the slider's 0.4: the shortcut now runs there (the full model checks the
    # settled patches that 0.4 needs), and the regions at 0.4 are exact
    run_and_wait(qtbot, widget)
    assert prob.extra["first_pass"]["threshold"] == pytest.approx(0.4)
    still = int(prob.n_first_pass)
    assert 0 < still < settled
    qtbot.waitUntil(lambda: caution not in summary.text(), timeout=RUN_TIMEOUT_MS)

    widget.source.exhaustive.value = True
    again = run_and_wait(qtbot, widget)
    assert again.prob_map is prob  # the same map: only the settled patches were classified again
    assert prob.n_first_pass == 0
    status = widget.status.text().replace(",", "")
    assert "Done" in status and f"{still} patches classified" in status
    at_low = summary.text()
    widget.display.threshold.value = 0.3  # every patch is the full model's now: no caution
    qtbot.waitUntil(lambda: summary.text() != at_low, timeout=RUN_TIMEOUT_MS)
    assert caution not in summary.text()


def test_a_runs_progress_is_full_while_the_full_model_checks_around_candidates():
    from napari_metastasis.widgets.runner import Progress

    def progress(**kind) -> float:
        return Progress(None, None, 5, 10, 1.0, None, 0, **kind).fraction  # type: ignore[arg-type]

    assert progress() == 0.5
    assert progress(checking=True) == 1.0  # every patch was classified before the check
