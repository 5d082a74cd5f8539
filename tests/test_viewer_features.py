"""What pathologists expect and napari does not give them (issue 12), in a real napari viewer:
a legend with the threshold, the scale bar, keyboard shortcuts, previous / next region, and the
comparison with a reference annotation scored by the evaluation code."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from shapely.geometry import box
from test_widget_regions import synthetic_map
from widget_helpers import docked_widget

from napari_metastasis.annotations import Annotation, write_annotations
from napari_metastasis.evaluation.froc import lesion_mask
from napari_metastasis.evaluation.slides import overlap
from napari_metastasis.widgets.comparison import STATUS_COLORS
from napari_metastasis.widgets.detection import SHORTCUTS, MetastasisWidget

pytestmark = pytest.mark.gui


@pytest.fixture
def env(make_napari_viewer, tmp_path, monkeypatch):
    viewer, widget, layer = docked_widget(make_napari_viewer, tmp_path, monkeypatch)
    prob = synthetic_map(layer.metadata["slide_path"])
    widget.load_analysis(prob.save(tmp_path / "synthetic.probability.tif"))
    widget.display.threshold.value = 0.5
    widget.update_contours()
    return viewer, widget, layer, prob


def camera_centre(viewer):
    return np.array(viewer.scene.camera.center[-2:])


def region_centre_um(widget, index):
    view = widget.current_analysis
    minx, miny, maxx, maxy = view.regions[index].polygon.bounds
    (y0, x0), (y1, x1) = view.frame.to_world([[minx, miny], [maxx, maxy]])
    return np.array([(y0 + y1) / 2, (x0 + x1) / 2])


# --- legend -------------------------------------------------------------------------------------
def test_the_legend_shows_the_colormap_and_marks_the_threshold(env, qtbot):
    _viewer, widget, _layer, _prob = env
    legend = widget.legend
    assert legend.isVisible()
    widget.display.threshold.value = 0.3
    assert legend.threshold == pytest.approx(0.3)
    image = legend.grab().toImage()
    rect = legend.bar_rect()
    y = int(rect.center().y())

    def rgb(x):
        c = image.pixelColor(int(x), y)
        return np.array([c.red(), c.green(), c.blue()])

    x = legend.x_of(0.3)
    around = np.array([rgb(x + dx) for dx in range(-2, 3)])
    neutral = (around.max(axis=1) - around.min(axis=1)) < 10  # black / white / grey: the line,
    assert neutral.any() and np.ptp(rgb(legend.x_of(0.2))) >= 10  # not the coloured bar
    low, high = rgb(legend.x_of(0.05)), rgb(legend.x_of(0.97))
    assert np.abs(low - high).sum() > 100  # a real colour ramp
    widget.display.colormap.value = "viridis"
    assert legend.colormap == "viridis"
    widget.display.floor.value = 0.2
    assert legend.floor == pytest.approx(0.2)


# --- scale bar ----------------------------------------------------------------------------------
def test_the_scale_bar_comes_on_for_a_calibrated_slide_only(
    svs_file, six_level_tiff, make_napari_viewer
):
    viewer = make_napari_viewer(show=True)
    widget = MetastasisWidget(viewer)
    viewer.open(str(six_level_tiff), plugin="napari-metastasis")  # no µm/px: no scale bar
    uncalibrated = viewer.layers[-1]
    assert not viewer.scale_bar.visible
    viewer.open(str(svs_file), plugin="napari-metastasis")
    # beside a slide in pixels the bar's unitless number would read as µm: still off
    assert not viewer.scale_bar.visible
    assert widget.set_slide_mpp(uncalibrated, 0.5)  # every slide in µm now
    assert viewer.scale_bar.visible
    assert str(viewer.layers[-1].units[-1]) in ("µm", "micrometer")


# --- keyboard shortcuts and previous / next -----------------------------------------------------
def test_shortcuts_are_napari_key_bindings_listed_in_the_help(env):
    from napari.utils.action_manager import action_manager

    viewer, widget, _layer, _prob = env
    taken = {str(s).replace("+", "-") for sc in action_manager._shortcuts.values() for s in sc}
    assert not taken & set(SHORTCUTS)  # no layer's own key (Shapes: Shift-P is the lasso)
    help_text = widget.help.text()
    for key, (method, what) in SHORTCUTS.items():
        assert key in help_text and what in help_text
        assert callable(getattr(widget, method))
    bound = {str(k) for k in viewer.keymap}
    assert len(bound) >= len(SHORTCUTS)


def test_keys_step_through_regions_and_toggle_layers(env, qtbot):
    viewer, widget, _layer, _prob = env
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key_N, Qt.ShiftModifier)
    first = widget.current_analysis.selected
    assert first is not None
    np.testing.assert_allclose(camera_centre(viewer), region_centre_um(widget, first), atol=1)
    qtbot.keyClick(canvas, Qt.Key_N, Qt.ShiftModifier)
    second = widget.current_analysis.selected
    assert second != first
    qtbot.keyClick(canvas, Qt.Key_B, Qt.ShiftModifier)
    assert widget.current_analysis.selected == first, (
        first,
        second,
        widget.navigator.table.currentRow(),
    )
    overlay = widget.current_analysis.overlay.layer
    qtbot.keyClick(canvas, Qt.Key_O, Qt.ShiftModifier)
    assert not overlay.visible and not widget.display.show_overlay.value
    qtbot.keyClick(canvas, Qt.Key_C, Qt.ShiftModifier)
    assert not widget.current_analysis.regions_layer.layer.visible


def test_previous_and_next_buttons_follow_the_list_order(env, qtbot):
    viewer, widget, _layer, _prob = env
    panel = widget.regions_panel
    table = widget.navigator.table
    order = [widget.navigator.index_at_row(r) for r in range(table.rowCount())]
    assert len(order) == 4
    visited = []
    for _ in range(5):
        qtbot.mouseClick(panel.next_button, Qt.LeftButton)
        visited.append(widget.current_analysis.selected)
    assert visited == [*order, order[0]]  # wraps round
    qtbot.mouseClick(panel.previous_button, Qt.LeftButton)
    assert widget.current_analysis.selected == order[-1]
    np.testing.assert_allclose(camera_centre(viewer), region_centre_um(widget, order[-1]), atol=1)


# --- compare with a reference -------------------------------------------------------------------
def cells_box(grid, rows, cols):
    """Level-0 box of a block of cells (rows/cols: inclusive-exclusive)."""
    sx, sy = grid.step_level0
    return box(cols[0] * sx, rows[0] * sy, cols[1] * sx, rows[1] * sy)


def test_compare_with_a_reference_colours_regions_and_lists_missed_lesions(env, tmp_path, qtbot):
    viewer, widget, _layer, prob = env
    grid = prob.grid
    found = cells_box(grid, (1, 7), (1, 7))  # the 6 × 6 block the map calls tumour
    missed = cells_box(grid, (9, 12), (2, 4))  # a lesion where the map says 0.05
    reference = write_annotations(
        tmp_path / "reference.geojson",
        [Annotation(found, "Tumor", id="a"), Annotation(missed, "Tumor", id="b")],
    )
    (ref_layer,) = widget.annotation_io.import_file(reference)
    widget.comparison.set_reference(ref_layer)
    result = widget.last_comparison
    view = widget.current_analysis
    status = dict(zip([r.id for r in view.regions], result.region_status, strict=True))
    big = max(view.regions, key=lambda r: r.area_um2)
    assert status[big.id] == "hit"
    assert sorted(s for i, s in status.items() if i != big.id) == ["false positive"] * 3
    # the evaluation code's own numbers
    geometry = found.union(missed)
    assert result.dice == pytest.approx(overlap(prob, geometry, 0.5).dice)
    lesions = lesion_mask(geometry, (grid.width, grid.height), grid.mpp_x)
    assert len(result.lesions) == lesions.n_lesions == 2
    assert result.sensitivity == pytest.approx(0.5) and result.false_positives == 3
    text = widget.comparison.summary.text()
    assert "Dice" in text and "1 of 2 lesions" in text and "3 false positive" in text
    # outlines coloured by status
    colors = view.regions_layer.layer.edge_color
    rows = view.regions_layer.rows_of(big.uid)
    expected = np.array([int(STATUS_COLORS["hit"][i : i + 2], 16) / 255 for i in (1, 3, 5)])
    np.testing.assert_allclose(colors[rows[0]][:3], expected, atol=0.01)
    # the missed lesion is listed; clicking it takes the camera there
    assert widget.comparison.missed_list.count() == 1
    item = widget.comparison.missed_list.item(0)
    widget.comparison.missed_list.itemClicked.emit(item)
    minx, miny, maxx, maxy = missed.intersection(box(0, 0, grid.width, grid.height)).bounds
    centre = np.array([(miny + maxy) / 2 * grid.mpp_y, (minx + maxx) / 2 * grid.mpp_x])
    np.testing.assert_allclose(camera_centre(viewer), centre, atol=40)  # the 75 µm margin
    # off again: the plain colours come back
    widget.comparison.enabled_check.setChecked(False)
    assert not view.regions_layer.region_colors


def test_a_measure_ruler_is_not_offered_as_a_reference(env):
    viewer, widget, _layer, _prob = env
    widget.measure.button.click()  # makes the Measure layer (a Shapes layer, but not annotations)
    viewer.add_shapes(name="drawn reference")
    widget.comparison.refresh_layers()
    offered = [
        widget.comparison.layer_combo.itemText(i)
        for i in range(widget.comparison.layer_combo.count())
    ]
    assert "drawn reference" in offered
    assert widget.measure.layer.name not in offered


@pytest.mark.parametrize("picked", [".zattrs", "0/.zarray", ""])
def test_load_analysis_opens_an_ome_zarr_map_picked_by_a_file_inside_it(
    make_napari_viewer, tmp_path, monkeypatch, picked
):
    """A Qt file dialog picks files, not folders: a file inside a ``.prob.zarr`` folder (or the
    folder itself, where the dialog allows it) loads the whole map."""
    from napari_metastasis.maps.store import save_zarr
    from napari_metastasis.widgets import analysis_files

    _viewer, widget, layer = docked_widget(make_napari_viewer, tmp_path, monkeypatch)
    prob = synthetic_map(layer.metadata["slide_path"])
    folder = save_zarr(prob, tmp_path / "sample.prob.zarr", ["normal", "tumor"])
    choice = str(folder / picked) if picked else str(folder)
    monkeypatch.setattr(analysis_files.QFileDialog, "getOpenFileName", lambda *a, **k: (choice, ""))
    widget.files.load_button.click()
    view = widget.current_analysis
    assert view is not None and view.prob_map.n_analysed == prob.n_analysed
    np.testing.assert_allclose(view.prob_map.values, prob.values, equal_nan=True, atol=1e-6)


def test_load_analysis_refuses_a_map_of_a_broken_predict_set(
    make_napari_viewer, tmp_path, monkeypatch
):
    """Issue 25, R2: a map whose predict set is not complete (here: outputs beside it, no
    manifest, as a Ctrl-C during the move-in used to leave) is refused in one notification."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    from napari_metastasis.outputs.output_set import OutputSet
    from napari_metastasis.widgets import analysis_files

    _viewer, widget, layer = docked_widget(make_napari_viewer, tmp_path, monkeypatch)
    prob = synthetic_map(layer.metadata["slide_path"])
    out = tmp_path / "out"
    with OutputSet(out, "sample") as outputs:
        prob.save(outputs.path("sample.prob.tiff"))
        outputs.path("sample.summary.json").write_text("{}")
    (out / "sample.outputs.json").unlink()
    start = len(notification_manager.records)
    choice = str(out / "sample.prob.tiff")
    monkeypatch.setattr(analysis_files.QFileDialog, "getOpenFileName", lambda *a, **k: (choice, ""))
    widget.files.load_button.click()
    errors = [
        str(n.message)
        for n in notification_manager.records[start:]
        if n.severity >= NotificationSeverity.ERROR
    ]
    assert len(errors) == 1 and "sample.outputs.json" in errors[0] and "missing" in errors[0]
    assert widget.current_analysis is None
