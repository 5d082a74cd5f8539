"""Issue 21: one analysis per slide, in a real napari viewer with two slides open.

Each test failed before its fix: a run that finished while another slide was selected showed a
stale verdict (D1), a refused *Load analysis* had already changed the slide's µm/px (D2), a
reopened uncalibrated slide lost its µm/px (D3), the status line kept another slide's run (D4),
slides lay on top of each other and a hidden one left its overlay on screen (D5), and File › Open
of a map placed it by its own reader, without contours or verdict (D6).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_widget_regions import synthetic_map
from widget_helpers import (
    PATCH_PX,
    SPACING_UM,
    Gate,
    add_sample_slide,
    docked_widget,
    write_test_model,
)

from napari_metastasis._napari.helpers import is_calibrated, user_mpp
from napari_metastasis._napari.slide_reader import slide_layer_data
from napari_metastasis.clinical.staging import measure_regions, slide_verdict
from napari_metastasis.errors import MetastasisError
from napari_metastasis.maps.contours import probability_contours
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.maps.store import save_zarr
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Slide
from napari_metastasis.widgets.detection import WHOLE
from napari_metastasis.widgets.frame import SlideFrame

pytestmark = pytest.mark.gui
RUN_TIMEOUT_MS = 30_000
#: The darkness model scores H&E tissue around 0.3 and glass under 0.1.
THRESHOLD = 0.2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_test_model(tmp_path_factory.mktemp("models"))


@pytest.fixture
def env(make_napari_viewer, tmp_path, monkeypatch, model_dir):
    viewer, widget, _ = docked_widget(make_napari_viewer, tmp_path, monkeypatch, sample=False)
    widget.add_model_folder(model_dir)
    widget.source.device.value = "cpu"
    widget.source.batch_size.value = 16
    widget.source.tissue_min.value = 0.0
    return viewer, widget


def world_extent(layer) -> tuple[float, float, float, float]:
    """(y0, x0, y1, x1) of a slide layer in world units, from napari's own transform."""
    height, width = layer.data[0].shape[:2]
    y0, x0 = layer.data_to_world((0, 0))[-2:]
    y1, x1 = layer.data_to_world((height, width))[-2:]
    return float(y0), float(x0), float(y1), float(x1)


def add_slide(viewer, path):
    data, kwargs, _ = slide_layer_data(Slide(path), warn_uncalibrated=False)
    return viewer.add_image(data, **kwargs)


def two_slides(viewer, widget, uncalibrated):
    """The sample and the shared uncalibrated slide (given 0.5 µm/px), the sample selected."""
    sample = add_sample_slide(viewer)
    other = add_slide(viewer, uncalibrated)
    assert widget.set_slide_mpp(other, 0.5)
    widget.select_slide_layer(sample)
    return sample, other


def start_gated_run(widget, qtbot, monkeypatch) -> Gate:
    """A whole-slide run of the selected slide whose batches wait for the test's permits."""
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
    return gates[0]


def finish(gate: Gate, widget, qtbot) -> None:
    gate.restore()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)
    qtbot.wait(100)


# --- D1 -----------------------------------------------------------------------------------------
def test_d1_a_run_that_ends_while_another_slide_is_selected_gives_its_own_slide_the_verdict(
    env, qtbot, monkeypatch, tmp_path, six_level_tiff
):
    viewer, widget = env
    sample, other = two_slides(viewer, widget, six_level_tiff)
    widget.display.threshold.value = THRESHOLD
    gate = start_gated_run(widget, qtbot, monkeypatch)
    gate.release(2)
    qtbot.waitUntil(
        lambda: (
            widget.current_analysis is not None
            and widget.current_analysis.prob_map.n_analysed >= 16
        ),
        timeout=RUN_TIMEOUT_MS,
    )
    widget.select_slide_layer(other)  # the pathologist looks at the other slide meanwhile
    finish(gate, widget, qtbot)
    assert widget.verdict_panel.verdict is None  # the other slide has no analysis

    widget.select_slide_layer(sample)
    view = widget.current_analysis
    assert view.prob_map.n_analysed == view.prob_map.values.size
    regions = probability_contours(
        view.prob_map, THRESHOLD, min_area_um2=widget.display.min_area_um2
    )
    expected = slide_verdict(measure_regions(regions, view.prob_map.grid))
    assert expected.category != "negative"  # the run found deposits
    shown = widget.verdict_panel.verdict
    assert shown is not None and shown.category == expected.category
    assert shown.greatest_dimension_mm == pytest.approx(expected.greatest_dimension_mm)
    assert widget.navigator.table.rowCount() == len(regions)
    # the report is of the whole run too
    state = widget.state_of(sample.metadata["slide_path"])
    assert state.verdict.category == expected.category and len(state.candidates) == len(regions)


# --- D2 -----------------------------------------------------------------------------------------
def test_d2_a_refused_load_leaves_the_slides_um_per_px_as_it_was(
    svs_file, six_level_tiff, env, tmp_path
):
    viewer, widget = env
    other = add_slide(viewer, six_level_tiff)  # states no µm/px
    of_another_slide = synthetic_map(svs_file).save(tmp_path / "CMU-1-Small-Region.probability.tif")
    with pytest.raises(MetastasisError, match="not of the selected"):
        widget.load_analysis(of_another_slide, other)
    assert tuple(other.scale) == (1.0, 1.0)
    assert user_mpp(other) is None and not is_calibrated(other)
    assert widget.source.mpp_value is None


# --- D3 -----------------------------------------------------------------------------------------
def test_d3_a_reopened_uncalibrated_slide_keeps_its_um_per_px_and_its_overlay_in_place(
    six_level_tiff, env, qtbot, tmp_path
):
    viewer, widget = env
    widget.remember = False  # what brings 0.5 back is the session, not a file on disk
    layer = add_slide(viewer, six_level_tiff)
    widget.source.mpp.value = 0.5
    assert tuple(layer.scale) == (0.5, 0.5)
    with Slide(six_level_tiff) as slide:
        width, height = slide.dimensions
    grid = PatchGrid(width, height, 0.5, 0.5, PATCH_PX, SPACING_UM)
    prob = ProbabilityMap.empty(grid, model_name="darkness", slide_path=str(six_level_tiff))
    prob.values[:] = 0.05
    prob.values[2:5, 2:5] = 0.9
    widget.load_analysis(prob.save(tmp_path / "crop.probability.tif"), layer)
    placed = widget.current_analysis.overlay.layer
    scale, translate = np.array(placed.scale), np.array(placed.translate)

    viewer.layers.remove(layer)
    reopened = add_slide(viewer, six_level_tiff)
    qtbot.waitUntil(
        lambda: widget.current_analysis is not None and widget.current_analysis.overlay.is_shown(),
        timeout=5000,
    )
    qtbot.wait(100)
    assert tuple(reopened.scale) == (0.5, 0.5)
    assert widget.source.mpp_value == 0.5 and "given" in widget.source.mpp_source.value
    overlay = widget.current_analysis.overlay.layer
    np.testing.assert_allclose(overlay.scale, scale)
    np.testing.assert_allclose(overlay.translate, translate)
    expected = SlideFrame.from_layer(reopened).raster_kwargs(widget.current_analysis.overlay.raster)
    np.testing.assert_allclose(overlay.translate, expected["translate"])


# --- D4 -----------------------------------------------------------------------------------------
def test_d4_the_status_line_is_the_selected_slides(env, qtbot, monkeypatch, six_level_tiff):
    viewer, widget = env
    sample, other = two_slides(viewer, widget, six_level_tiff)
    gate = start_gated_run(widget, qtbot, monkeypatch)
    gate.release(1)
    qtbot.waitUntil(lambda: "patches" in widget.status.text(), timeout=RUN_TIMEOUT_MS)
    widget.select_slide_layer(other)
    assert widget.status.text() == "Ready." and widget.progress.text() == "no run yet"
    finish(gate, widget, qtbot)
    assert widget.status.text() == "Ready." and widget.progress.text() == "no run yet"
    widget.select_slide_layer(sample)
    assert widget.status.text().startswith("Done: whole slide"), widget.status.text()
    widget.select_slide_layer(other)
    assert widget.status.text() == "Ready."


# --- D5 -----------------------------------------------------------------------------------------
def test_d5_slides_lie_side_by_side_and_take_their_layers_when_hidden_or_closed(
    svs_file, env, qtbot, tmp_path
):
    viewer, widget = env
    sample = add_sample_slide(viewer)
    copy = shutil.copy(svs_file, tmp_path / "second.svs")
    second = add_slide(viewer, copy)
    first_box, second_box = world_extent(sample), world_extent(second)
    assert second_box[1] > first_box[3]  # to the right of the first, not over it
    view = widget.load_analysis(synthetic_map(copy).save(tmp_path / "second.tif"), second)
    widget.display.threshold.value = 0.5
    widget.update_contours()
    overlay, regions = view.overlay.layer, view.regions_layer.layer
    assert len(regions.data) > 0
    # the overlay and the regions lie on the second slide
    assert overlay.data_to_world((0, 0))[-1] > first_box[3]
    assert np.min(np.concatenate(regions.data)[:, -1]) + regions.translate[-1] > first_box[3]

    second.visible = False
    assert not overlay.visible and not regions.visible
    second.visible = True
    assert overlay.visible and regions.visible

    viewer.layers.remove(second)
    assert overlay not in viewer.layers and regions not in viewer.layers
    # reopened: back in its place, with its analysis
    again = add_slide(viewer, copy)
    qtbot.waitUntil(lambda: view.overlay.is_shown(), timeout=5000)
    assert world_extent(again) == pytest.approx(second_box)


# --- D6 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("plugin", ["napari-metastasis", "napari-ome-zarr"])
def test_d6_file_open_of_a_map_shows_it_placed_as_a_run_with_regions_and_verdict(
    env, qtbot, tmp_path, plugin
):
    viewer, widget = env
    sample = add_sample_slide(viewer)
    prob = synthetic_map(sample.metadata["slide_path"])
    path = save_zarr(prob, tmp_path / "CMU-1-Small-Region.prob.zarr", ["normal", "tumor"])
    viewer.open(str(path), plugin=plugin)
    qtbot.waitUntil(
        lambda: widget.current_analysis is not None and widget.current_analysis.overlay.is_shown(),
        timeout=5000,
    )
    qtbot.wait(100)
    view = widget.current_analysis
    maps = [layer for layer in viewer.layers if layer.metadata.get("probability_map") is not None]
    assert maps == [view.overlay.layer]  # the reader's own layer made way for the analysis
    expected = SlideFrame.from_layer(sample).raster_kwargs(view.overlay.raster)
    np.testing.assert_allclose(view.overlay.layer.translate, expected["translate"])
    np.testing.assert_allclose(view.overlay.layer.scale, expected["scale"])
    # cell (1, 1) is drawn centred on its patch's centre on the slide
    raster = view.overlay.raster
    middle = [sum(raster.pixel_range(axis, 1, 2)[:2]) / 2 - 0.5 for axis in (0, 1)]
    centre = view.overlay.layer.data_to_world(middle)
    ((x, y),) = prob.grid.cell_centres_level0(np.array([[1, 1]]))
    np.testing.assert_allclose(centre, sample.data_to_world((y, x)), atol=1e-6)
    assert widget.navigator.table.rowCount() > 0
    assert widget.verdict_panel.verdict is not None


# --- D8 -----------------------------------------------------------------------------------------
def test_d8_the_h_and_e_shows_through_the_overlay_of_a_likely_tumour(env, tmp_path):
    from test_viewer_review import _cell_pixels

    viewer, widget = env
    layer = add_sample_slide(viewer)
    prob = synthetic_map(layer.metadata["slide_path"])
    view = widget.load_analysis(prob.save(tmp_path / "m.tif"))
    view.regions_layer.set_visible(False)
    viewer.reset_view()
    with_overlay = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    view.overlay.set_visible(False)
    bare = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    high = _cell_pixels(viewer, prob.grid, rows=range(1, 7), cols=[1, 2, 4, 5, 6])  # p = 0.9
    # the tissue's own contrast under a confident cell: at least 40 % of it still shows
    assert with_overlay[high].std(axis=0).mean() > 0.4 * bare[high].std(axis=0).mean()


# --- D11, D12: words and colours ------------------------------------------------------------------
def test_d11_a_slide_without_um_per_px_is_explained_in_the_viewers_words(six_level_tiff):
    from napari_metastasis.errors import ResolutionError
    from napari_metastasis.widgets.runner import error_message

    with Slide(six_level_tiff) as slide, pytest.raises(ResolutionError) as caught:
        slide.require_resolution()
    message = error_message(caught.value, 16)
    assert "--" not in message and "µm/px field" in message
    assert message.startswith("CropBreastSlide.tiff: no usable resolution")


@pytest.mark.parametrize("colormap", ["metastasis", "inferno", "viridis", "turbo", "magma"])
def test_d12_outlines_never_take_the_comparisons_colours(colormap):
    from napari_metastasis._napari import colormaps as overlay
    from napari_metastasis.widgets.comparison import STATUS_COLORS

    for threshold in (0.3, 0.5, 0.65, 0.735):
        contour, highlight = overlay.outline_colors(colormap, threshold)
        assert not {contour, highlight} & set(STATUS_COLORS.values()), (colormap, threshold)
        rgb = np.array([int(contour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        behind = overlay.base_colors(colormap, np.linspace(threshold, 1.0, 32))[:, :3]
        assert np.linalg.norm(behind - rgb, axis=1).min() > 0.45, (colormap, threshold, contour)


# --- D14 ----------------------------------------------------------------------------------------
def test_d14_annotations_just_outside_the_slide_are_not_said_to_be_0_mm_away():
    from napari_metastasis.annotations.placement import Placement, placement_warning

    near = placement_warning(Placement(4, 2, 0, 30.0), "a.xml", "slide", mpp=0.25)
    assert "0.0 mm" not in near and "up to 8 µm away" in near
    far = placement_warning(Placement(4, 4, 0, 40_000.0), "a.xml", "slide", mpp=0.25)
    assert "up to 10.0 mm away" in far


# --- D9 -----------------------------------------------------------------------------------------
def test_d9_region_outlines_are_thick_enough_to_see_at_whole_slide_zoom(env, tmp_path):
    viewer, widget = env
    layer = add_sample_slide(viewer)
    prob = synthetic_map(layer.metadata["slide_path"])
    view = widget.load_analysis(prob.save(tmp_path / "m.tif"))
    widget.display.threshold.value = 0.5
    widget.update_contours()
    view.overlay.set_visible(False)
    viewer.layers.selection.active = layer
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    colour = view.regions_layer.tumour_color
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    outline = np.abs(shot - rgb).sum(axis=-1) < 60
    zoom = viewer.scene.camera.zoom  # screen px per µm
    perimeter_px = sum(r.polygon.length for r in view.regions) * prob.grid.mpp_x * zoom
    assert perimeter_px > 100
    # the outline's pixels per pixel of perimeter: its thickness on screen (2 px was too thin)
    assert outline.sum() / perimeter_px >= 2.5, outline.sum() / perimeter_px


# --- D13 ----------------------------------------------------------------------------------------
def test_d13_the_dock_fits_a_laptop_with_the_verdict_run_and_progress_on_top(
    make_napari_viewer, tmp_path, monkeypatch, qtbot
):
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtWidgets import QGroupBox, QLabel, QScrollArea

    viewer, widget, _layer = docked_widget(make_napari_viewer, tmp_path, monkeypatch)
    viewer.window._qt_window.resize(1280, 800)
    qtbot.wait(300)
    assert widget.width() <= 360
    for section in widget.sections.values():  # every section open: nothing is cut off
        section.expand(animate=False)
    qtbot.wait(100)
    room = widget.scroll_area.viewport().width()
    too_wide = [t for t, s in widget.sections.items() if s.minimumSizeHint().width() > room]
    assert too_wide == [], too_wide  # nothing is cut off
    # the region table (seven columns side by side) scrolls sideways on its own
    table = widget.navigator.table
    assert table.isVisible() and table.minimumWidth() > room
    sideways = widget.sections["Regions"].content().findChild(QScrollArea)
    assert sideways is not None and sideways.horizontalScrollBarPolicy() != Qt.ScrollBarAlwaysOff
    assert viewer.window._qt_viewer.canvas.native.width() >= 500  # was 328 px
    for control in (
        widget.verdict_panel.label,
        widget.run_controls.run_button.native,
        widget.status.progress,
        widget.status.label,
    ):
        assert control.isVisible()
        bottom = control.mapTo(widget, QPoint(0, control.height())).y()
        assert bottom <= widget.height(), control
    titles = [label.text() for label in widget.findChildren(QLabel) if label.isVisible()]
    titles += [box.title() for box in widget.findChildren(QGroupBox) if box.isVisible()]
    titles += [section.text() for section in widget.sections.values()]
    assert [t for t in titles if t.strip().rstrip(":") == "Analyse"] == ["Analyse"], titles
    # nothing ran: no claim that there is no region
    assert "No region" not in widget.navigator.summary.text()


def test_d13_no_two_buttons_of_the_dock_share_a_label(make_napari_viewer, tmp_path, monkeypatch):
    """The case list's button said "Analyse" like the run section, and its "Cancel" was the run's:
    each button says what it does, shown or folded away in a section."""
    from collections import Counter

    from qtpy.QtWidgets import QPushButton

    _viewer, widget, _layer = docked_widget(make_napari_viewer, tmp_path, monkeypatch)
    labels = [b.text().strip() for b in widget.findChildren(QPushButton) if b.text().strip()]
    assert len(labels) > 15, labels  # every section's buttons, folded or not
    shared = {label: n for label, n in Counter(labels).items() if n > 1}
    assert shared == {}, shared
    assert widget.cases.analyse_button.text() == "Analyse all slides of the list"
    assert widget.run_controls.run_button.text == "Run"


# --- found by using the viewer at 1280 × 800 (issue 21, part 4) ---------------------------------
def test_every_wrapped_line_of_the_dock_shows_when_its_sections_are_open(
    make_napari_viewer, tmp_path, monkeypatch, qtbot
):
    """The sections open to their content's size hint, which a label that wraps in the narrow
    dock exceeds: the Help section's last shortcut (Shift-C) was cut off."""
    from qtpy.QtWidgets import QLabel

    viewer, widget, _layer = docked_widget(make_napari_viewer, tmp_path, monkeypatch)
    viewer.window._qt_window.resize(1280, 800)
    for section in widget.sections.values():
        section.expand(animate=False)

    def cut_lines() -> list[tuple]:
        cut = []
        for title, section in widget.sections.items():
            content = section.content()
            for label in content.findChildren(QLabel):
                if not label.isVisible() or not label.wordWrap() or not label.text():
                    continue
                needed = label.heightForWidth(label.width())
                bottom = label.mapTo(content, label.rect().bottomLeft()).y()
                if label.height() < needed or bottom > content.height():
                    cut.append((title, label.text()[:40], label.height(), needed))
        return cut

    def none_cut() -> None:
        assert cut_lines() == []

    # the layout settles over a few event-loop turns (longer on a busy machine); a line that
    # stays cut fails with the last list of cut lines
    qtbot.waitUntil(none_cut, timeout=5_000)
    help_label = widget.help
    assert "Shift-C" in help_label.text()


def test_the_scale_bar_hides_while_slides_in_um_and_in_pixels_lie_side_by_side(env, six_level_tiff):
    """With the sample (µm) open, opening a slide that states no µm/px left napari's scale bar
    on, reading a number of pixels without a unit beside a slide in µm."""
    viewer, widget = env
    add_sample_slide(viewer)
    assert viewer.scale_bar.visible
    other = add_slide(viewer, six_level_tiff)
    assert not is_calibrated(other) and not viewer.scale_bar.visible
    assert widget.set_slide_mpp(other, 0.5)
    assert viewer.scale_bar.visible  # every slide in µm again


def test_the_dock_and_the_layer_list_select_the_same_slide(env, qtbot, six_level_tiff):
    """Selecting a slide in napari's layer list left the dock on the other slide (its verdict,
    status and Run button), and the reverse."""
    viewer, widget = env
    sample, other = two_slides(viewer, widget, six_level_tiff)
    assert widget.slide_layer is sample
    viewer.layers.selection.active = other  # a click in the layer list
    assert widget.slide_layer is other
    widget.source.slide.value = sample  # the dock's Slide list
    assert viewer.layers.selection.active is sample
