"""The region navigator table and the edits that outlive a threshold change."""

from __future__ import annotations

import pytest
from qtpy.QtCore import Qt
from shapely.geometry import box

from napari_metastasis._napari.helpers import MIN_VIEW_UM, centre_camera_on
from napari_metastasis.maps.contours import Region
from napari_metastasis.widgets import selection
from napari_metastasis.widgets.navigator import RegionNavigator
from napari_metastasis.widgets.region_edits import RegionEdits

pytestmark = pytest.mark.gui


def region(i, x0, y0, x1, y1, max_prob, mean_prob=None):
    polygon = box(x0, y0, x1, y1)
    return Region(i, polygon, polygon.area * 0.25, max_prob, mean_prob or max_prob, 1)


REGIONS = [
    region(1, 0, 0, 100, 100, 0.7),
    region(2, 500, 500, 900, 900, 0.95),
    region(3, 200, 0, 300, 50, 0.8),
]


def test_edits_follow_regions_through_a_new_threshold():
    edits = RegionEdits()
    edits.delete(REGIONS[0])
    edits.relabel(REGIONS[1], "Suspicious")
    assert edits
    # the new threshold gives slightly different polygons in the same places
    grown = [
        region(1, -10, -10, 120, 120, 0.7),
        region(2, 450, 450, 950, 950, 0.95),
        region(3, 200, 0, 310, 60, 0.8),
        region(4, 1500, 1500, 1600, 1600, 0.6),
    ]
    kept, labels = edits.apply(grown)
    assert [r.id for r in kept] == [2, 3, 4]
    assert labels == ["Suspicious", "Tumor", "Tumor"]
    edits.relabel(grown[1], "Other")  # the latest relabel wins
    assert edits.apply(grown)[1][0] == "Other"
    edits.clear()
    assert not edits and len(edits.apply(grown)[0]) == 4


def test_table_lists_regions_by_max_probability_and_sorts_numerically(qtbot):
    navigator = RegionNavigator()
    qtbot.addWidget(navigator)
    navigator.set_regions(REGIONS, ["Tumor"] * 3)
    table = navigator.table
    assert [table.item(r, 0).text() for r in range(3)] == ["2", "3", "1"]
    assert "3 regions" in navigator.summary.text()
    area = RegionNavigator.COLUMNS.index("mm²")
    table.sortItems(area, Qt.SortOrder.AscendingOrder)  # by area: numeric, not text, order
    areas = [float(table.item(r, area).text()) for r in range(3)]
    assert areas == sorted(areas)
    assert [navigator.index_at_row(r) for r in range(3)] == [2, 0, 1]
    navigator.set_regions([], [])
    assert table.rowCount() == 0 and not navigator.delete_button.isEnabled()


def test_clicks_delete_and_relabel_emit_region_indices(qtbot):
    navigator = RegionNavigator()
    qtbot.addWidget(navigator)
    navigator.set_regions(REGIONS, ["Tumor"] * 3)
    with qtbot.waitSignal(navigator.activated) as activated:
        navigator.table.itemClicked.emit(navigator.table.item(0, 1))
    assert activated.args == [1]  # row 0 shows region index 1 (max prob 0.95)
    navigator.table.selectRow(2)
    with qtbot.waitSignal(navigator.delete_requested) as deleted:
        navigator.delete_button.click()
    assert deleted.args == [[0]]
    navigator.label_combo.setCurrentText("Suspicious")
    with qtbot.waitSignal(navigator.relabel_requested) as relabelled:
        navigator.relabel_button.click()
    assert relabelled.args == [[0], "Suspicious"]
    with qtbot.waitSignal(navigator.delete_requested):
        qtbot.keyClick(navigator, Qt.Key.Key_Delete)


def test_centre_camera_on_a_box_and_never_closer_than_the_minimum(make_napari_viewer):
    viewer = make_napari_viewer()
    centre_camera_on(viewer, (1000.0, 2000.0, 1400.0, 2600.0))
    assert tuple(viewer.scene.camera.center[-2:]) == pytest.approx((1200.0, 2300.0))
    y0, x0, y1, x1 = selection.visible_world_rect(viewer)
    assert y0 <= 1000 and y1 >= 1400 and x0 <= 2000 and x1 >= 2600
    assert min(y1 - y0, x1 - x0) < 2 * 600 * 2.0  # and zoomed in to fit, not far out
    centre_camera_on(viewer, (10.0, 10.0, 11.0, 11.0))  # one µm: clamp the zoom
    y0, x0, y1, x1 = selection.visible_world_rect(viewer)
    assert min(y1 - y0, x1 - x0) == pytest.approx(MIN_VIEW_UM, rel=1e-6)


def test_new_regions_fill_an_emptied_table_so_a_live_threshold_never_freezes_it(qtbot):
    """Each move of the threshold lists new regions. Qt replaces an item set over another by a
    linear search of the whole table, so refilling rows in place costs the square of the rows:
    800 regions (a Camelyon-size slide's exploring view) froze the viewer for 100 s. Every cell
    must be set into an empty table (what the square cost hangs on, checked without a clock)."""
    navigator = RegionNavigator()
    qtbot.addWidget(navigator)
    table = navigator.table
    many = [region(i + 1, 200 * i, 0, 200 * i + 100, 100, 0.6 + 1e-4 * i) for i in range(40)]
    navigator.set_regions(many, ["Tumor"] * 40)
    set_item = table.setItem
    replaced: list[tuple[int, int]] = []

    def checked_set_item(row, col, item):
        if table.item(row, col) is not None:
            replaced.append((row, col))
        set_item(row, col, item)

    table.setItem = checked_set_item
    moved = [
        region(r.id, *r.polygon.buffer(5).bounds, r.max_prob + 0.01) for r in many[:30]
    ]  # the threshold moved: fewer, larger regions
    navigator.set_regions(moved, ["Tumor"] * 30)
    assert table.rowCount() == 30 and not replaced
    assert sorted(int(table.item(r, 0).text()) for r in range(30)) == list(range(1, 31))


def test_new_regions_are_sorted_once_in_the_users_order(qtbot):
    """The rows were sorted twice per update (switching sorting on sorts, then sortItems sorted
    again): a Python comparison per pair of cells, on the GUI thread when a run ends with hundreds
    of regions. Once now, and still in the order the user chose by a header click."""
    navigator = RegionNavigator()
    qtbot.addWidget(navigator)
    table = navigator.table
    area = RegionNavigator.COLUMNS.index("mm²")
    table.sortItems(area, Qt.SortOrder.AscendingOrder)
    sorts: list[int] = []
    table.model().layoutChanged.connect(lambda *args: sorts.append(1))
    many = [region(i + 1, 0, 0, 100 + 37 * ((i * 7) % 40), 100, 0.6 + 1e-3 * i) for i in range(40)]
    navigator.set_regions(many, ["Tumor"] * 40)
    assert len(sorts) == 1
    areas = [float(table.item(r, area).text()) for r in range(40)]
    assert areas == sorted(areas) and len(set(areas)) > 1
