"""The clinical answer in a real viewer: region sizes and categories, the slide verdict, the Measure
tool, Report…, the Overlap choice and the case list (slides analysed in the background)."""

from __future__ import annotations

import math

import numpy as np
import pypdfium2 as pdfium
import pytest
from engine_helpers import write_pyramid_tiff
from napari.utils._proxies import ReadOnlyWrapper
from napari.utils.colormaps.standardize_color import transform_color
from napari.utils.interactions import (
    mouse_move_callbacks,
    mouse_press_callbacks,
    mouse_release_callbacks,
)
from qtpy.QtCore import Qt
from widget_helpers import (
    PATCH_PX,
    SPACING_UM,
    confirm_every_candidate,
    docked_widget,
    threads_calling,
    write_test_model,
)

from napari_metastasis.clinical.staging import CATEGORY_TINTS
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Slide
from napari_metastasis.widgets.detection import WHOLE
from napari_metastasis.widgets.navigator import RegionNavigator
from napari_metastasis.widgets.ruler import format_length, line_length

pytestmark = pytest.mark.gui
RUN_TIMEOUT_MS = 60_000
CELL_UM = PATCH_PX * SPACING_UM  # 128 µm cells


def synthetic_map(slide_path) -> ProbabilityMap:
    """Three deposits on the sample slide's 128 µm grid: a 6 x 6 cell block with a hole (a 768 µm
    square: 1.086 mm diagonal, micro), a 2 x 3 cell block (256 x 384 µm: 0.461 mm, micro) and a
    single cell (181 µm: ITC)."""
    with Slide(slide_path) as slide:
        width, height = slide.dimensions
        res = slide.require_resolution()
    grid = PatchGrid(width, height, res.mpp_x, res.mpp_y, PATCH_PX, SPACING_UM)
    prob = ProbabilityMap.empty(grid, model_name="darkness", slide_path=str(slide_path))
    prob.values[:, :] = 0.05
    prob.values[1:7, 1:7] = 0.9
    prob.values[3, 3] = 0.2
    prob.values[9:11, 5:8] = 0.6
    prob.values[10, 1] = 0.95
    return confirm_every_candidate(prob)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_test_model(tmp_path_factory.mktemp("models"))


@pytest.fixture
def env(make_napari_viewer, tmp_path, monkeypatch, model_dir):
    viewer, widget, layer = docked_widget(make_napari_viewer, tmp_path, monkeypatch)
    widget.add_model_folder(model_dir)
    widget.source.device.value = "cpu"
    widget.source.batch_size.value = 16
    return viewer, widget, layer


def _load_synthetic(widget, layer, tmp_path):
    saved = synthetic_map(layer.metadata["slide_path"]).save(tmp_path / "synthetic.tif")
    widget.load_analysis(saved, quiet=True)
    widget.display.threshold.value = 0.5
    widget.update_contours()
    return widget.current_analysis


def test_region_list_has_sizes_and_categories_and_the_verdict_line(env, tmp_path):
    _viewer, widget, layer = env
    view = _load_synthetic(widget, layer, tmp_path)
    assert len(view.regions) == 3
    table = widget.navigator.table
    size_col, cat_col = RegionNavigator.SIZE_COLUMN, RegionNavigator.CATEGORY_COLUMN
    assert table.horizontalHeaderItem(size_col).text() == "Size mm"
    assert table.horizontalHeaderItem(cat_col).text() == "Category"
    rows = {
        table.item(r, 0).text(): (table.item(r, size_col), table.item(r, cat_col))
        for r in range(table.rowCount())
    }
    by_size = sorted(
        ((float(size.text()), cat.text()) for size, cat in rows.values()), reverse=True
    )
    big = 6 * CELL_UM * math.sqrt(2) / 1000
    assert by_size[0][0] == pytest.approx(big, abs=1e-3) and by_size[0][1] == "Micro"
    assert by_size[1][0] == pytest.approx(math.hypot(2, 3) * CELL_UM / 1000, abs=1e-3)
    assert by_size[2] == (pytest.approx(CELL_UM * math.sqrt(2) / 1000, abs=1e-3), "ITC")
    for size, cat in rows.values():  # coloured by category
        key = "itc" if cat.text() == "ITC" else "micro"
        assert cat.background().color().name() == CATEGORY_TINTS[key]
        assert size.background().color().name() == CATEGORY_TINTS[key]
    # sortable by size: ascending puts the ITC first
    table.sortItems(size_col, Qt.SortOrder.AscendingOrder)
    assert table.item(0, cat_col).text() == "ITC"
    widget.update_contours()  # new regions keep the user's sort
    assert table.item(0, cat_col).text() == "ITC"
    table.sortItems(cat_col, Qt.SortOrder.DescendingOrder)  # by severity
    assert table.item(0, cat_col).text() == "Micro"

    verdict = widget.verdict_panel
    assert verdict.text == "Micrometastasis — largest deposit 1.1 mm"
    assert "± 128 µm" in verdict.label.toolTip()
    assert verdict.report_button.isEnabled()
    # the pathologist deletes the big region: the verdict follows
    big_row = next(r for r in range(table.rowCount()) if float(table.item(r, size_col).text()) > 1)
    widget.delete_regions([widget.navigator.index_at_row(big_row)])
    assert verdict.text == "Micrometastasis — largest deposit 0.46 mm"
    widget.display.threshold.value = 0.92  # only the single cell is left
    widget.update_contours()
    assert verdict.text == "Isolated tumour cells — largest deposit 0.18 mm"
    widget.display.threshold.value = 0.99
    widget.update_contours()
    assert verdict.text.startswith("Negative")


def test_verdict_counts_only_confirmed_deposits_and_candidates_are_styled_apart(env, tmp_path):
    """The synthetic map decided by a rule of 2 seeds >= 0.85 and 2 patches: the 6 x 6 block (35
    cells at 0.9) is confirmed; the 2 x 3 block at 0.6 (no seed) and the single 0.95 cell (one
    patch) are candidates, shown in grey, thinner, labelled apart, with the reason."""
    from napari_metastasis.annotations.model import BELOW_SEED_CLASS, CANDIDATE_CLASS, TUMOUR_CLASS
    from napari_metastasis.clinical.decision import stamp_rule
    from napari_metastasis.widgets.region_cells import CANDIDATE_TEXT_COLOR
    from napari_metastasis.widgets.region_shapes import CANDIDATE_DISPLAY_COLOR

    _viewer, widget, layer = env
    prob = synthetic_map(layer.metadata["slide_path"])
    rule = {"seed_threshold": 0.85, "min_seed_patches": 2, "min_patches": 2, "source": "test"}
    stamp_rule(prob, {"napari_metastasis_decision": rule})
    widget.load_analysis(prob.save(tmp_path / "decided.tif"), quiet=True)
    widget.display.threshold.value = 0.5
    widget.update_contours()
    view = widget.current_analysis
    assert len(view.regions) == 3
    confirmed = [r for r in view.regions if r.confirmed]
    assert [r.n_cells for r in confirmed] == [35]
    verdict = widget.verdict_panel
    assert verdict.text == "Micrometastasis — largest deposit 1.1 mm"
    # the single 0.95 cell holds a seed: a candidate; the 0.6 block holds none
    assert "1 candidate region not confirmed" in verdict.label.toolTip()
    assert "p >= 0.85" in verdict.label.toolTip()

    # the layer: candidates grey and thinner, classified apart, the decision in the features
    shapes = view.regions_layer.layer
    features = shapes.features
    colours = [np.asarray(c) for c in shapes.edge_color]
    widths = list(shapes.edge_width)
    grey = np.asarray(transform_color(CANDIDATE_DISPLAY_COLOR)[0])
    deposit_width = max(widths)
    for row, (uid, cls) in enumerate(zip(features["id"], features["classification"], strict=True)):
        is_deposit = uid == confirmed[0].uid
        seeded = next(r for r in view.regions if r.uid == uid).decision.seed_patches > 0
        assert cls == (
            TUMOUR_CLASS if is_deposit else CANDIDATE_CLASS if seeded else BELOW_SEED_CLASS
        )
        assert features["confirmed"][row] == float(is_deposit)
        assert np.allclose(colours[row], grey) != is_deposit
        assert (widths[row] < deposit_width) != is_deposit

    # the region list: candidates labelled and greyed, the reason in the tooltip
    table = widget.navigator.table
    by_id = {int(table.item(r, 0).text()): r for r in range(table.rowCount())}
    single = next(r for r in view.regions if r.n_cells == 1)
    label = table.item(by_id[single.id], 1)
    assert label.text() == CANDIDATE_CLASS
    assert label.toolTip() == (
        "Not confirmed: only 1 patch >= 0.85 (rule needs 2); only 1 patch in all (rule needs 2)"
    )
    assert label.foreground().color().name() == CANDIDATE_TEXT_COLOR
    deposit = table.item(by_id[confirmed[0].id], 1)
    assert deposit.text() == TUMOUR_CLASS and deposit.toolTip().startswith("Confirmed deposit: 35")
    # only the confirmed deposit's size and category are tinted; a candidate's category is what
    # its size would make it, bracketed, grey and untinted (issue 21: it looked like a deposit)
    size_col, cat_col = RegionNavigator.SIZE_COLUMN, RegionNavigator.CATEGORY_COLUMN
    cat, size = table.item(by_id[single.id], cat_col), table.item(by_id[single.id], size_col)
    assert cat.text() == "(ITC)" and "Not a confirmed deposit" in cat.toolTip()
    for item in (cat, size):
        assert item.background().style() == Qt.BrushStyle.NoBrush
        assert item.foreground().color().name() == CANDIDATE_TEXT_COLOR
    tinted = table.item(by_id[confirmed[0].id], cat_col)
    assert tinted.text() == "Micro"
    assert tinted.background().color().name() == CATEGORY_TINTS["micro"]
    assert "1 confirmed as deposit." in widget.navigator.summary.text()

    # without the deposit, the candidates alone make no verdict
    widget.delete_regions([view.regions.index(confirmed[0])])
    # (2 patches of 128 µm measure at least 0.2 mm: the rule cannot confirm an ITC, and says so)
    assert verdict.text == (
        "Negative — no confirmed deposit (1 candidate region not confirmed)\n"
        "Isolated tumour cells are not assessed."
    )
    assert verdict.report_button.isEnabled()  # a report can still be written
    widget.restore_regions()
    # the live threshold changes the candidates; the decision is made again on the new ones
    widget.display.threshold.value = 0.92
    widget.update_contours()
    assert [(r.n_cells, r.confirmed) for r in view.regions] == [(1, False)]
    assert verdict.text.startswith(
        "Negative — no confirmed deposit (1 candidate region not confirmed)\n"
    )
    widget.display.threshold.value = 0.7
    widget.update_contours()
    assert [(r.n_cells, r.confirmed) for r in view.regions] == [(1, False), (35, True)]
    assert verdict.text == "Micrometastasis — largest deposit 1.1 mm"


def _event(kind, position):
    class Event:
        pass

    event = Event()
    event.type = kind
    event.is_dragging = kind == "mouse_move"
    event.modifiers = []
    event.position = position
    event.pos = np.array(position)
    event.view_direction = None
    event.up_direction = None
    event.dims_displayed = [0, 1]
    event.button = 1
    event.handled = False
    return ReadOnlyWrapper(event, exceptions=("handled",))


def test_measure_tool_shows_the_length_while_drawing(env, qtbot):
    viewer, widget, _layer = env
    tool = widget.measure
    tool.button.click()
    measure = tool.layer
    assert measure.mode == "add_line" and viewer.layers.selection.active is measure
    # world units are µm on the calibrated sample: a 300 x 400 µm line is 500 µm long
    mouse_press_callbacks(measure, _event("mouse_press", (100.0, 100.0)))
    mouse_move_callbacks(measure, _event("mouse_move", (250.0, 300.0)))
    assert tool.label.text() == format_length(250.0)  # live, before the button is released
    mouse_move_callbacks(measure, _event("mouse_move", (400.0, 500.0)))
    assert tool.label.text() == "500.0 µm (0.500 mm)"
    mouse_release_callbacks(measure, _event("mouse_release", (400.0, 500.0)))
    assert tool.lengths() == [pytest.approx(500.0, abs=0.01)]
    assert list(measure.text.values) == ["500.0 µm (0.500 mm)"]
    measure.add_lines(np.array([[0.0, 0.0], [0.0, 2500.0]]))
    assert tool.label.text() == "2.50 mm (2500 µm)"
    tool.button.click()
    assert measure.mode == "pan_zoom"
    assert line_length([[0, 0], [3, 4], [3, 10]]) == 11


def test_report_button_writes_the_pdf(env, tmp_path):
    _viewer, widget, layer = env
    _load_synthetic(widget, layer, tmp_path)
    path = widget.write_report(tmp_path / "report")
    assert path.name == "CMU-1-Small-Region.report.pdf"
    pdf = pdfium.PdfDocument(str(path))
    try:
        assert len(pdf) == 2
        text = pdf[0].get_textpage().get_text_range()
        assert "pN1mi" in text and "not a diagnosis" in text
        page = np.asarray(pdf[1].render(scale=0.5).to_pil().convert("L"), float)
        assert page.std() > 20
    finally:
        pdf.close()
    summary = (tmp_path / "report" / "CMU-1-Small-Region.summary.json").read_text()
    assert '"verdict": "micro"' in summary


def test_overlap_half_a_patch_halves_the_grid_step(env, qtbot):
    _viewer, widget, _layer = env
    widget.source.overlap.value = "half a patch"
    widget.set_mode(WHOLE)
    widget.run()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)
    grid = widget.current_analysis.prob_map.grid
    assert grid.step_um == pytest.approx(CELL_UM / 2) and grid.patch_um == CELL_UM


def _node_slide(folder, name, deposit_um):
    """A 2 µm/px slide, white, with a black square deposit of ``deposit_um`` on the grid (whose
    cells are centred on multiples of 128 µm: an edge at 320 µm = 160 px)."""
    image = np.full((800, 800, 3), 255, np.uint8)
    if deposit_um:
        side = round(deposit_um / 2)
        image[160 : 160 + side, 160 : 160 + side] = 0
    return write_pyramid_tiff(folder / name, image, mpp=2.0)


def test_case_list_analyses_closed_slides_and_stages_the_patient(env, qtbot, tmp_path):
    viewer, widget, _layer = env
    widget.source.tissue_min.value = 0.0
    folder = tmp_path / "case"
    folder.mkdir()
    _node_slide(folder, "patient_001_node_0.tif", 0)
    _node_slide(folder, "patient_001_node_1.tif", 2 * CELL_UM)  # 256 µm square: micro
    _node_slide(folder, "patient_001_node_2.tif", CELL_UM)  # one cell: 181 µm, ITC
    _node_slide(folder, "patient_001_node_3.tif", 0)
    _node_slide(folder, "patient_001_node_4.tif", 0)
    cases = widget.cases
    assert cases.add_folder(folder) == 5
    assert cases.table.rowCount() == 5
    assert "0 of 5 slides analysed" in cases.stage_label.text()
    n_layers = len(viewer.layers)
    cases.analyse_button.click()
    assert cases.is_running
    qtbot.waitUntil(lambda: not cases.is_running, timeout=RUN_TIMEOUT_MS)
    assert len(viewer.layers) == n_layers  # analysed without opening anything
    assert [s.status for s in cases.slides] == ["done"] * 5
    table = cases.table
    assert [table.item(r, 2).text() for r in range(5)] == [
        "Negative",
        "Micrometastasis",
        "Isolated tumour cells",
        "Negative",
        "Negative",
    ]
    assert table.item(1, 3).text() == "0.36 mm"  # 2 cells: 256 µm side, 362 µm diagonal
    assert "patient_001: pN1mi" in cases.stage_label.text()
    # the list drawn again (after a run, a threshold move...) fills an emptied table: Qt's
    # replacement of an item searches the whole table (the square of the rows in all)
    set_item, replaced = table.setItem, []

    def checked_set_item(row, col, item):
        replaced.append(table.item(row, col) is not None)
        set_item(row, col, item)

    table.setItem = checked_set_item
    cases.remeasure()
    assert replaced and not any(replaced)
    del table.setItem

    # click a slide: it opens with its analysis
    cases.table.itemClicked.emit(cases.table.item(1, 0))
    qtbot.waitUntil(lambda: widget.slide_path and "node_1" in widget.slide_path, timeout=10_000)
    view = widget.current_analysis
    assert view is not None and view.prob_map is cases.slides[1].prob_map
    widget.update_contours()
    assert widget.verdict_panel.text == "Micrometastasis — largest deposit 0.36 mm"

    # the threshold re-measures the list; the report covers the whole patient
    path = widget.write_report(tmp_path / "out")
    assert path.name == "patient_001.report.pdf"
    pdf = pdfium.PdfDocument(str(path))
    assert len(pdf) == 6  # the patient's page, then one per slide
    pdf.close()
    widget.display.threshold.value = 1.0  # the darkness model never says 1: nothing is left
    qtbot.waitUntil(lambda: "patient_001: pN0" in cases.stage_label.text(), timeout=5_000)
    assert [table.item(r, 2).text() for r in range(5)] == ["Negative"] * 5


def test_case_list_never_stages_a_patient_lacking_node_slides(env, qtbot, tmp_path):
    """Issue 23, F8: a Camelyon17 patient with two of its five node slides is not staged in the
    viewer (as in predict's stages.csv and the report): a stage from two nodes could understate it."""
    _viewer, widget, _layer = env
    widget.source.tissue_min.value = 0.0
    folder = tmp_path / "case"
    folder.mkdir()
    _node_slide(folder, "patient_002_node_0.tif", 2 * CELL_UM)  # micro
    _node_slide(folder, "patient_002_node_1.tif", 0)
    cases = widget.cases
    assert cases.add_folder(folder) == 2
    cases.analyse_button.click()
    qtbot.waitUntil(lambda: not cases.is_running, timeout=RUN_TIMEOUT_MS)
    assert [s.status for s in cases.slides] == ["done"] * 2
    text = cases.stage_label.text()
    assert cases.stages() == {"patient_002": None}
    assert "pN1mi" not in text
    assert "not staged" in text and "patient_002_node_2" in text and "patient_002_node_4" in text

    cases.table.itemClicked.emit(cases.table.item(0, 0))
    qtbot.waitUntil(lambda: widget.slide_path and "node_0" in widget.slide_path, timeout=10_000)
    widget.update_contours()
    path = widget.write_report(tmp_path / "out")
    pdf = pdfium.PdfDocument(str(path))
    first_page = pdf[0].get_textpage().get_text_range()
    pdf.close()
    assert "Not staged" in first_page and "patient_002_node_4" in first_page


def test_the_size_and_category_of_each_region_show_without_scrolling_sideways(env, tmp_path, qtbot):
    """At 1280 × 800 the 360 px dock shows four of the region table's seven columns; the size
    and AJCC category, what a pathologist reads first, were the last two, behind the sideways
    scroll, while the probabilities showed."""
    from napari_metastasis.widgets.dock import SidewaysScroll

    viewer, widget, layer = env
    viewer.window._qt_window.resize(1280, 800)
    _load_synthetic(widget, layer, tmp_path)
    qtbot.wait(200)
    table = widget.navigator.table
    sideways = widget.sections["Regions"].content().findChild(SidewaysScroll)
    assert sideways is not None and sideways.horizontalScrollBar().value() == 0
    header = table.horizontalHeader()
    seen = sideways.viewport().width() - table.frameWidth()
    for column in (RegionNavigator.SIZE_COLUMN, RegionNavigator.CATEGORY_COLUMN):
        right = header.sectionPosition(column) + header.sectionSize(column)
        assert right <= seen, (RegionNavigator.COLUMNS[column], right, seen)
    assert header.length() > seen  # the probabilities and the area scroll sideways


def test_report_button_writes_on_a_worker_thread_and_says_where(env, tmp_path, qtbot, monkeypatch):
    """Report… drew every page on the GUI thread (about a second a slide: the viewer froze); it
    writes on a worker now, from copies of the maps, and says where the report went."""
    import threading

    from napari.utils.notifications import notification_manager

    from napari_metastasis.widgets import reporting

    _viewer, widget, layer = env
    _load_synthetic(widget, layer, tmp_path)
    monkeypatch.setattr(
        reporting.QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "out")
    )
    threads = threads_calling(
        monkeypatch, reporting.write_case_report, (reporting, "write_case_report")
    )
    seen = len(notification_manager.records)
    widget.reporting.ask_and_write()
    qtbot.waitUntil(
        lambda: any(
            "Report written to" in str(n.message) for n in notification_manager.records[seen:]
        ),
        timeout=30_000,
    )
    assert threads and threads[0] is not threading.main_thread()
    assert (tmp_path / "out" / "CMU-1-Small-Region.report.pdf").is_file()


@pytest.mark.parametrize("min_patches, blind", [(6, True), (1, False)])
def test_a_negative_verdict_says_when_the_rule_cannot_see_isolated_tumour_cells(
    env, tmp_path, min_patches, blind
):
    """A rule that needs 6 patches of 128 µm cannot confirm a deposit of 0.2 mm or less: under a
    negative verdict the panel says that isolated tumour cells were not assessed (the full reason
    in the tooltip); under a rule of one patch it says nothing more."""
    from napari_metastasis.clinical.decision import stamp_rule

    _viewer, widget, layer = env
    prob = synthetic_map(layer.metadata["slide_path"])
    prob.values[prob.values > 0.5] = 0.05
    prob.values[10, 1] = 0.95  # one seeded cell: a candidate at most
    rule = {"seed_threshold": 0.99, "min_seed_patches": 1, "min_patches": min_patches}
    stamp_rule(prob, {"napari_metastasis_decision": {**rule, "source": "test"}})
    widget.load_analysis(prob.save(tmp_path / f"rule{min_patches}.tif"), quiet=True)
    widget.display.threshold.value = 0.5
    widget.update_contours()
    verdict = widget.verdict_panel
    first, *rest = verdict.text.split("\n")
    assert first.startswith("Negative")
    if blind:
        assert rest == ["Isolated tumour cells are not assessed."]
        assert "at least 6 patches of 128 µm" in verdict.label.toolTip()
        assert "pN0 does not exclude pN0(i+)" in verdict.label.toolTip()
    else:
        assert rest == [] and "not assessed" not in verdict.label.toolTip()


def test_a_run_that_replaces_an_earlier_builds_analysis_says_so(env, qtbot, tmp_path):
    """An analysis saved by an earlier build (patches from the slide's corner) opens as it was
    made; a run of the same model then starts a map on today's grid. The earlier map leaves the
    screen, which a notification says, naming why; the file on disk is not touched."""
    from napari.utils.notifications import notification_manager

    _viewer, widget, layer = env
    current = synthetic_map(layer.metadata["slide_path"])
    stored = {k: v for k, v in current.grid.to_dict().items() if k != "anchor"}
    old = ProbabilityMap.empty(
        PatchGrid.from_dict(stored), model_name="darkness", slide_path=current.slide_path
    )
    old.values[:] = 0.05
    saved = old.save(tmp_path / "earlier.tif")
    before = saved.read_bytes()
    widget.load_analysis(saved, quiet=True)
    assert widget.current_analysis.prob_map.grid.anchor == "corner"
    start = len(notification_manager.records)
    widget.set_mode(WHOLE)
    widget.run()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)
    assert widget.current_analysis.prob_map.grid.anchor == "centre"
    said = [str(n.message) for n in notification_manager.records[start:]]
    assert any("earlier build, whose patches started at the slide's corner" in m for m in said)
    assert "replaced_grid" not in widget.current_analysis.prob_map.extra  # not saved with it
    assert saved.read_bytes() == before
