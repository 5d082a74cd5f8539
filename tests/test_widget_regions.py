"""Threshold -> contours -> navigator -> save/restore, on a synthetic map over the sample slide.

The map is written by the test, so what the contours must be is known exactly: a 6 × 6 block of
high probability with a low cell in it (a region with a hole), a 2 × 3 block just above 0.5, two
single cells at 0.95 and a large untouched (NaN) area.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from widget_helpers import (
    PATCH_PX,
    SPACING_UM,
    add_sample_slide,
    confirm_every_candidate,
    docked_widget,
    threads_calling,
    write_test_model,
)

from napari_metastasis.annotations.layers import layer_to_annotations
from napari_metastasis.errors import MetastasisError
from napari_metastasis.maps.contours import REGION_MEASUREMENTS
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Slide
from napari_metastasis.widgets import selection
from napari_metastasis.widgets.detection import MetastasisWidget
from napari_metastasis.widgets.session import remembered_for

pytestmark = pytest.mark.gui
MODEL = "darkness"


def synthetic_map(slide_path) -> ProbabilityMap:
    with Slide(slide_path) as slide:
        width, height = slide.dimensions
        res = slide.require_resolution()
    grid = PatchGrid(width, height, res.mpp_x, res.mpp_y, PATCH_PX, SPACING_UM)
    prob = ProbabilityMap.empty(grid, model_name=MODEL, slide_path=str(slide_path))
    values = prob.values
    values[:, :] = 0.05  # analysed, negative
    values[0, :] = np.nan  # one row never analysed
    values[1:7, 1:7] = 0.9  # 36 cells ...
    values[3, 3] = 0.2  # ... one of them low: a hole
    values[9:11, 5:8] = 0.6  # 6 cells just above 0.5
    values[10, 1] = 0.95  # two single cells
    values[8, 3] = 0.95
    return confirm_every_candidate(prob)


@pytest.fixture
def env(make_napari_viewer, tmp_path, monkeypatch):
    viewer, widget, layer = docked_widget(make_napari_viewer, tmp_path, monkeypatch)
    prob = synthetic_map(layer.metadata["slide_path"])
    saved = prob.save(tmp_path / "synthetic.probability.tif")
    return viewer, widget, layer, prob, saved


def regions_layer(widget):
    return widget.current_analysis.regions_layer.layer


def exterior_rows(layer):
    return layer.features[layer.features["role"] == "exterior"]


def test_loading_a_map_shows_the_overlay_aligned_and_nan_transparent(env):
    viewer, widget, _layer, prob, saved = env
    analysis = widget.load_analysis(saved)
    overlay = analysis.overlay.layer
    # each cell is drawn as f × f pixels, cut at the slide's edges
    raster = analysis.overlay.raster
    f = raster.factor
    np.testing.assert_array_equal(overlay.data, raster.render(prob.values))
    scale, translate = np.array(overlay.scale), np.array(overlay.translate)
    np.testing.assert_allclose(scale * f, prob.grid.layer_scale)
    # the middle of cell (1, 1)'s pixels is its patch's centre
    middle = np.array([sum(raster.pixel_range(axis, 1, 2)[:2]) / 2 - 0.5 for axis in (0, 1)])
    np.testing.assert_allclose(
        translate + middle * scale, np.array(prob.grid.layer_translate) + prob.grid.layer_scale
    )
    # napari draws NaN cells transparent: the unanalysed top row shows the slide unchanged
    viewer.reset_view()
    with_overlay = viewer.screenshot(canvas_only=True, flash=False)
    overlay.visible = False
    analysis.regions_layer.layer.visible = False
    without = viewer.screenshot(canvas_only=True, flash=False)
    centre_nan = _screen_point(viewer, prob.grid, row=0, col=4)
    centre_low = _screen_point(viewer, prob.grid, row=8, col=4)
    np.testing.assert_array_equal(with_overlay[centre_nan][:3], without[centre_nan][:3])
    assert np.any(with_overlay[centre_low][:3] != without[centre_low][:3])  # 0.05 is tinted


def _screen_point(viewer, grid, row, col):
    """Canvas (row, col) pixel of a grid cell's centre, from the camera."""
    (x, y) = grid.cell_centres_level0([[row, col]])[0]
    world = np.array([y * grid.mpp_y, x * grid.mpp_x])
    camera = viewer.scene.camera
    height, width = selection.canvas_size(viewer)
    screen = (world - np.array(camera.center[-2:])) * camera.zoom + np.array([height, width]) / 2
    return int(screen[0]), int(screen[1])


def test_threshold_changes_number_and_area_of_contours(env, qtbot):
    _viewer, widget, _layer, prob, saved = env
    widget.load_analysis(saved)
    cell_um2 = prob.grid.step_um**2

    widget.display.threshold.value = 0.5
    widget.update_contours()
    shapes = regions_layer(widget)
    rows = exterior_rows(shapes)
    assert len(rows) == 4
    areas = sorted(rows["area_um2"].round(3))
    assert areas == pytest.approx(sorted([35 * cell_um2, 6 * cell_um2, cell_um2, cell_um2]))
    assert set(shapes.features.columns) >= {"id", "area_um2", "max_prob", "mean_prob"}
    assert shapes.shape_type[0] == "path" and np.all(np.array(shapes.face_color)[:, 3] == 0)

    widget.display.threshold.value = 0.7  # the 0.6 block goes, the others stay
    qtbot.waitUntil(lambda: len(exterior_rows(regions_layer(widget))) == 3, timeout=5000)
    rows = exterior_rows(regions_layer(widget))
    assert rows["max_prob"].max() == pytest.approx(0.95)
    assert rows["area_um2"].sum() == pytest.approx(37 * cell_um2)

    widget.display.threshold.value = 0.15  # the hole (0.2) fills in
    qtbot.waitUntil(lambda: len(exterior_rows(regions_layer(widget))) == 4, timeout=5000)
    rows = exterior_rows(regions_layer(widget))
    assert rows["area_um2"].max() == pytest.approx(36 * cell_um2)
    assert "hole" not in set(regions_layer(widget).features["role"])

    widget.display.threshold.value = 0.04  # every analysed cell joins one region
    qtbot.waitUntil(lambda: len(exterior_rows(regions_layer(widget))) == 1, timeout=5000)
    rows = exterior_rows(regions_layer(widget))
    grid = prob.grid
    analysed = ~np.isnan(prob.values)
    # the edge cells stick out of the slide and are clipped to it; row 0 (centred on the top
    # edge) is not analysed, so the region starts half a step below it
    rows_in = grid.height / grid.step_level0[1] - 0.5
    cols_in = grid.width / grid.step_level0[0]
    assert rows["area_um2"].iloc[0] == pytest.approx(rows_in * cols_in * cell_um2, rel=1e-6)
    assert analysed.sum() > rows_in * cols_in
    assert widget.navigator.table.rowCount() == 1


def test_holes_survive_into_the_layer_and_its_export(env):
    _viewer, widget, _layer, prob, saved = env
    widget.load_analysis(saved)
    widget.display.threshold.value = 0.5
    widget.update_contours()
    shapes = regions_layer(widget)
    big = exterior_rows(shapes).sort_values("area_um2").iloc[-1]
    roles = shapes.features.loc[shapes.features["id"] == big["id"], "role"].tolist()
    assert sorted(roles) == ["exterior", "hole"]
    # the annotation convention reads it back as one polygon with one hole, in level-0 px
    annotations = {a.id: a for a in layer_to_annotations(shapes)}
    polygon = annotations[big["id"]].geometry
    assert len(polygon.interiors) == 1
    hole = polygon.interiors[0]
    step_x, step_y = prob.grid.step_level0
    # cell (3, 3)'s square, centred on 3 steps
    assert hole.bounds == pytest.approx((2.5 * step_x, 2.5 * step_y, 3.5 * step_x, 3.5 * step_y))
    assert polygon.area * prob.grid.mpp_x * prob.grid.mpp_y == pytest.approx(big["area_um2"])


def test_min_area_filters_small_regions(env, qtbot):
    _viewer, widget, _layer, prob, saved = env
    widget.load_analysis(saved)
    cell_um2 = prob.grid.step_um**2
    widget.display.threshold.value = 0.5
    widget.display.min_area.value = 2 * cell_um2  # drops the single cells
    qtbot.waitUntil(lambda: len(exterior_rows(regions_layer(widget))) == 2, timeout=5000)
    assert exterior_rows(regions_layer(widget))["area_um2"].min() >= 2 * cell_um2
    widget.display.min_area.value = 10 * cell_um2  # and the 6-cell block
    qtbot.waitUntil(lambda: len(exterior_rows(regions_layer(widget))) == 1, timeout=5000)
    widget.display.min_area.value = 0
    qtbot.waitUntil(lambda: len(exterior_rows(regions_layer(widget))) == 4, timeout=5000)


def test_clicking_a_region_in_the_navigator_moves_the_camera_there(env, qtbot):
    viewer, widget, _layer, prob, saved = env
    widget.load_analysis(saved)
    widget.display.threshold.value = 0.5
    widget.update_contours()
    viewer.reset_view()
    table = widget.navigator.table
    assert table.rowCount() == 4
    # sorted by max probability: the 0.95 single cells come first
    max_col, mean_col = (widget.navigator.COLUMNS.index(c) for c in ("Max", "Mean"))
    assert float(table.item(0, max_col).text()) == pytest.approx(0.95, abs=1e-3)
    target_row = next(
        r for r in range(table.rowCount()) if table.item(r, mean_col).text() == "0.600"
    )
    zoom_before = viewer.scene.camera.zoom
    table.itemClicked.emit(table.item(target_row, 0))
    # the 0.6 block is cells rows 9-10, cols 5-7 (centred on multiples of the step): its centre
    step = prob.grid.step_um
    expected = ((9 + 10) / 2 * step, (5 + 7) / 2 * step)
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], expected, atol=1.0)
    assert viewer.scene.camera.zoom > zoom_before
    y0, x0, y1, x1 = selection.visible_world_rect(viewer)
    assert y0 <= 8.5 * step and y1 >= 10.5 * step and x0 <= 4.5 * step and x1 >= 7.5 * step
    # its shape is selected in the layer
    shapes = regions_layer(widget)
    index = widget.navigator.index_at_row(target_row)
    region_id = widget.current_analysis.regions[index].uid
    assert {shapes.features["id"][i] for i in shapes.selected_data} == {region_id}


def test_delete_and_relabel_survive_a_threshold_change(env, qtbot):
    _viewer, widget, _layer, _prob, saved = env
    widget.load_analysis(saved)
    widget.display.threshold.value = 0.5
    widget.update_contours()
    regions = widget.current_analysis.regions
    big = max(range(len(regions)), key=lambda i: regions[i].area_um2)
    single = next(i for i, r in enumerate(regions) if r.n_cells == 1)
    widget.relabel_regions([big], "Suspicious")
    widget.delete_regions([single])
    rows = exterior_rows(regions_layer(widget))
    assert len(rows) == 3
    assert "Suspicious" in set(rows["classification"])

    widget.display.threshold.value = 0.55
    widget.update_contours()
    rows = exterior_rows(regions_layer(widget))
    assert len(rows) == 3  # still without the deleted cell
    biggest = rows.sort_values("area_um2").iloc[-1]
    assert biggest["classification"] == "Suspicious"
    assert widget.navigator.restore_button.isEnabled()
    widget.restore_regions()
    assert len(exterior_rows(regions_layer(widget))) == 4


def test_deleting_a_shape_in_the_layer_updates_the_navigator(env, qtbot):
    _viewer, widget, _layer, _prob, saved = env
    widget.load_analysis(saved)
    widget.display.threshold.value = 0.5
    widget.update_contours()
    shapes = regions_layer(widget)
    first_id = exterior_rows(shapes)["id"].iloc[0]
    rows = [i for i in range(shapes.nshapes) if shapes.features["id"][i] == first_id]
    shapes.selected_data = set(rows)
    shapes.remove_selected()
    qtbot.waitUntil(lambda: widget.navigator.table.rowCount() == 3, timeout=5000)
    assert first_id not in set(exterior_rows(regions_layer(widget))["id"])


def test_regions_export_through_the_annotation_panel(env, tmp_path):
    _viewer, widget, _layer, _prob, saved = env
    widget.load_analysis(saved)
    widget.display.threshold.value = 0.5
    widget.update_contours()
    assert widget.annotation_io.current_layer() is regions_layer(widget)
    written = widget.annotation_io.export(tmp_path / "regions.geojson")
    assert written is not None and written.is_file()
    text = written.read_text()
    assert text.count('"Tumor"') >= 4 and "max_prob" in text
    features = json.loads(text)["features"]
    for feature in features:  # UUID ids and predict's measurement names, as QuPath expects
        assert str(uuid.UUID(feature["id"])) == feature["id"]
        assert set(feature["properties"]["measurements"]) >= set(REGION_MEASUREMENTS)


def test_saved_analysis_is_restored_when_the_slide_is_reopened(env, qtbot, tmp_path):
    viewer, widget, layer, prob, saved = env
    widget.load_analysis(saved)
    widget._remember(widget.current_analysis)
    assert remembered_for(layer.metadata["slide_path"])
    # close everything, reopen the slide: the overlay comes back without running anything
    for lyr in list(viewer.layers):
        if lyr in viewer.layers:  # closing the slide removed its overlay and regions already
            viewer.layers.remove(lyr)
    assert len(widget.source.slide.choices) == 0
    reopened = add_sample_slide(viewer)
    qtbot.waitUntil(
        lambda: widget.current_analysis is not None and widget.current_analysis.overlay.is_shown(),
        timeout=5000,
    )
    analysis = widget.current_analysis
    assert len(exterior_rows(analysis.regions_layer.layer)) == 4
    np.testing.assert_array_equal(analysis.overlay.cell_values(), prob.values)
    assert widget.slide_layer is reopened
    # and an explicit save + load round-trips too
    out = widget.save_analysis(tmp_path / "again.tif")
    assert np.array_equal(ProbabilityMap.load(out).values, prob.values, equal_nan=True)


def test_a_map_of_another_slide_is_refused(env, tmp_path):
    _viewer, widget, _layer, _prob, _saved = env
    grid = PatchGrid(1000, 1000, 0.5, 0.5, PATCH_PX, SPACING_UM)
    other = ProbabilityMap.empty(grid, model_name=MODEL)
    other.values[:] = 0.5
    path = other.save(tmp_path / "other.tif")
    with pytest.raises(MetastasisError, match="not of the selected"):
        widget.load_analysis(path)
    assert widget.current_analysis is None


def test_model_folder_is_offered_after_browsing(env, tmp_path):
    _viewer, widget, _layer, _prob, _saved = env
    folder = write_test_model(tmp_path / "models", name="mine")
    widget.add_model_folder(folder)
    assert widget.model_name == "mine" and widget.model_ref == str(folder)
    widget.add_model_folder(folder)  # not twice
    assert widget.source.model_names.count("mine") == 1


def test_a_new_session_restores_the_remembered_analysis_from_disk(env, make_napari_viewer, qtbot):
    _viewer, widget, _layer, prob, saved = env
    widget.load_analysis(saved)
    widget._remember(widget.current_analysis)
    # a second napari session: new viewer, new widget, same slide file
    viewer2 = make_napari_viewer(show=True)
    widget2 = MetastasisWidget(viewer2)
    viewer2.window.add_dock_widget(widget2, name="Metastasis detection")
    add_sample_slide(viewer2)
    qtbot.waitUntil(lambda: widget2.current_analysis is not None, timeout=5000)
    analysis = widget2.current_analysis
    assert analysis.prob_map is not prob
    np.testing.assert_array_equal(analysis.overlay.cell_values(), prob.values)
    assert analysis.model_name == MODEL and widget2.model_name == MODEL
    assert widget2.navigator.table.rowCount() == 4


def test_remember_off_does_not_restore_from_disk(env, make_napari_viewer, qtbot):
    _viewer, widget, _layer, _prob, saved = env
    widget.load_analysis(saved)
    widget._remember(widget.current_analysis)
    viewer2 = make_napari_viewer(show=True)
    widget2 = MetastasisWidget(viewer2)
    widget2.remember = False
    add_sample_slide(viewer2)
    qtbot.wait(100)
    assert widget2.current_analysis is None
    assert not [lyr for lyr in viewer2.layers if lyr.metadata.get("probability_map")]


def test_a_deleted_regions_layer_does_not_come_back_on_slider_moves(env, qtbot):
    viewer, widget, _layer, _prob, saved = env
    widget.load_analysis(saved)
    shapes = regions_layer(widget)
    viewer.layers.remove(shapes)
    assert widget.navigator.table.rowCount() == 0  # the navigator follows the layer
    widget.display.threshold.value = 0.3
    widget.update_contours()
    assert shapes not in viewer.layers
    assert not [lyr for lyr in viewer.layers if lyr.metadata.get("metastasis_regions")]
    assert widget.navigator.table.rowCount() == 0


def test_every_region_table_cell_shows_its_whole_text_in_the_narrowest_dock(env, qtbot):
    """At the dock's minimum width the figures a pathologist reads (area, size, category) are
    not cut to "0.0…": columns take their contents' width, the table scrolls sideways if it must."""
    _viewer, widget, _layer, _prob, saved = env
    widget.load_analysis(saved)
    widget.display.threshold.value = 0.5
    widget.update_contours()
    dock = widget.parentWidget()
    dock.resize(widget.minimumWidth(), dock.height())
    qtbot.wait(50)
    table = widget.navigator.table
    assert table.rowCount() == 4
    header = table.horizontalHeader()
    metrics = table.fontMetrics()
    for col, name in enumerate(widget.navigator.COLUMNS):
        for row in range(table.rowCount()):
            text = table.item(row, col).text()
            assert header.sectionSize(col) >= metrics.horizontalAdvance(text) + 6, (name, text)
    # and side by side: the size and category columns are not behind a sideways scroll
    assert header.length() <= table.viewport().width(), (header.length(), table.viewport().width())


def analysis_of(prob_map):
    """What :func:`regions_control.in_background` reads of an analysis: its map."""
    from types import SimpleNamespace

    return SimpleNamespace(prob_map=prob_map)


def test_d7_the_contours_of_a_whole_nodes_map_are_computed_off_the_gui_thread(
    make_napari_viewer, tmp_path, monkeypatch, qtbot
):
    """D7: moving the threshold over a whole node's map (~25,000 cells here, 100,000 on a real
    node) computed its contours on the GUI thread, freezing the viewer for tenths of a second
    each time; a small map's are still computed at once."""
    import threading

    from napari_metastasis.pipeline import answer

    _viewer, widget, layer = docked_widget(make_napari_viewer, tmp_path, monkeypatch)
    with Slide(layer.metadata["slide_path"]) as slide:
        width, height = slide.dimensions
        res = slide.require_resolution()
    grid = PatchGrid(width, height, res.mpp_x, res.mpp_y, 16, 0.5)  # 8 µm cells
    prob = ProbabilityMap.empty(grid, model_name=MODEL, slide_path=layer.metadata["slide_path"])
    assert prob.values.size > 20_000
    prob.values[:] = 0.05
    prob.values[40:60, 40:70] = 0.9
    confirm_every_candidate(prob)
    from napari_metastasis.clinical.staging import measure_regions
    from napari_metastasis.widgets import analysis_view, panels, regions_control

    threads = threads_calling(
        monkeypatch,
        answer.answer_slide,
        (analysis_view, "answer_slide"),
        (regions_control, "answer_slide"),
    )
    # and the regions are measured there too, not on the GUI thread
    measured = threads_calling(
        monkeypatch, measure_regions, (answer, "measure_regions"), (panels, "measure_regions")
    )
    widget.load_analysis(prob.save(tmp_path / "node.probability.tif"))
    qtbot.waitUntil(lambda: widget.navigator.table.rowCount() == 1, timeout=10_000)
    threads.clear()
    widget.display.threshold.value = 0.95  # no region at 0.95
    widget.update_contours()
    assert widget.navigator.table.rowCount() == 1  # not yet: the worker computes them
    qtbot.waitUntil(lambda: widget.navigator.table.rowCount() == 0, timeout=10_000)
    assert threads and all(t is not threading.main_thread() for t in threads)
    measured.clear()
    widget.display.threshold.value = 0.5  # the region again: measured on the worker
    widget.update_contours()
    qtbot.waitUntil(lambda: widget.navigator.table.rowCount() == 1, timeout=10_000)
    assert not widget.verdict_panel.text.startswith("Negative")  # the list and the verdict
    assert measured and all(t is not threading.main_thread() for t in measured)

    # a Camelyon-size node's map (134 x 134 cells of 80 µm, ~800 regions at its threshold) too
    node = PatchGrid(134 * 320, 134 * 320, 0.25, 0.25, 80, 1.0)
    assert node.shape == (135, 135)  # cells centred on multiples of 80 µm: half ones at the edges
    assert regions_control.in_background(analysis_of(ProbabilityMap.empty(node)))
    small = synthetic_map(layer.metadata["slide_path"])  # 13 × 18 cells: at once
    assert not regions_control.in_background(analysis_of(small))
    widget.load_analysis(small.save(tmp_path / "small.probability.tif"))
    threads.clear()
    widget.display.threshold.value = 0.5
    widget.update_contours()
    assert threads == [threading.main_thread()]


def test_live_contours_take_at_most_a_tenth_of_a_run(monkeypatch):
    """During a run the contours were recomputed every 6 s whatever they cost: on a
    Camelyon-size node an update took 0.2-1.4 s to compute and 0.2-0.6 s to draw and list as its
    regions grew, most of what a viewer's run cost beyond predict_slide's. Now the next update
    waits until this one has cost at most a tenth of the time between (and at least 6 s)."""
    from napari_metastasis.widgets import regions_control
    from napari_metastasis.widgets.regions_control import (
        CONTOUR_RUN_S,
        CONTOUR_RUN_SHARE,
        RegionsControl,
    )

    clock = [100.0]
    monkeypatch.setattr(regions_control.time, "perf_counter", lambda: clock[0])
    control = RegionsControl.__new__(RegionsControl)  # only its pace is tried here

    clock[0] = 100.05  # a small map: computed and drawn in 50 ms
    control.pace(started=100.0)
    assert control.next_at == pytest.approx(100.0 + CONTOUR_RUN_S)

    clock[0] = 101.2  # a large one: 1.2 s to compute and draw ...
    control.pace(started=100.0)
    assert control.next_at == pytest.approx(100.0 + 1.2 / CONTOUR_RUN_SHARE)

    def listing():  # ... and 0.3 s to list at the next turn
        clock[0] += 0.3

    control.paced(listing)
    assert control.next_at == pytest.approx(100.0 + 1.5 / CONTOUR_RUN_SHARE)
    assert CONTOUR_RUN_SHARE <= 0.1
