"""Annotations in a real napari viewer: the npe2 reader and writers, and the import/export panel."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import shapely
from PIL import Image
from shapely.geometry import MultiPoint, Polygon
from shared_data import ANNOTATIONS

from napari_metastasis.annotations import Annotation, read_annotations, write_annotations
from napari_metastasis.widgets.annotation_buttons import AnnotationIOWidget

MPP = 0.499  # CMU-1-Small-Region
DONUT = Polygon(
    [(100.25, 200.5), (900, 200), (900, 1100), (100, 1100)],
    [[(300, 400), (500, 400), (500, 600), (300, 600)]],
)
ANNOTATIONS_PX = [
    Annotation(DONUT, "Tumor", "lesion", measurements={"max_prob": 0.93}, id="1"),
    Annotation(Polygon([(1500, 1500), (1700, 1500), (1600, 1800)]), "Stroma", id="2"),
    Annotation(MultiPoint([(50, 60), (70, 80)]), "Mitosis", id="3"),
]


@pytest.fixture
def geojson_file(tmp_path):
    return write_annotations(tmp_path / "regions.geojson", ANNOTATIONS_PX)


@pytest.fixture
def viewer_with_slide(svs_file, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open(str(svs_file), plugin="napari-metastasis")
    assert tuple(viewer.layers[0].scale) == (MPP, MPP)
    return viewer


def notifications(kind: str) -> list[str]:
    from napari.utils.notifications import notification_manager

    return [
        str(n.message)
        for n in notification_manager.records
        if kind in type(n).__name__.lower()
        or str(getattr(n, "severity", "")).lower().endswith(kind)
    ]


@pytest.mark.gui
def test_reader_places_annotations_on_the_slide_in_um(viewer_with_slide, geojson_file):
    viewer = viewer_with_slide
    layers = viewer.open(str(geojson_file), plugin="napari-metastasis")
    shapes, points = layers
    assert type(shapes).__name__ == "Shapes" and type(points).__name__ == "Points"
    assert shapes.name == "regions" and points.name == "regions points"
    assert tuple(shapes.scale) == (1.0, 1.0) and shapes.metadata["mpp"] == [MPP, MPP]
    # a hole is its own row, linked to its region by id and part
    assert shapes.features["role"].tolist() == ["exterior", "hole", "exterior"]
    assert shapes.features["id"].tolist() == ["1", "1", "2"]
    assert shapes.features["classification"].tolist() == ["Tumor", "Tumor", "Stroma"]
    assert shapes.features.loc[0, "max_prob"] == pytest.approx(0.93)
    # vertices in µm, (y, x): the first vertex (100.25, 200.5) px
    np.testing.assert_allclose(shapes.data[0][0], [200.5 * MPP, 100.25 * MPP], rtol=1e-6)
    np.testing.assert_allclose(points.data, [[60 * MPP, 50 * MPP], [80 * MPP, 70 * MPP]])
    # the world extent of the shapes sits inside the slide's
    slide_extent = viewer.layers[0].extent.world[1]
    assert (shapes.extent.world[1] <= slide_extent).all()


@pytest.mark.gui
def test_reader_without_a_slide_uses_pixels_and_says_so(make_napari_viewer, geojson_file):
    viewer = make_napari_viewer()
    (shapes, _) = viewer.open(str(geojson_file), plugin="napari-metastasis")
    assert shapes.metadata["mpp"] == [1.0, 1.0] and shapes.metadata["calibrated"] is False
    np.testing.assert_allclose(shapes.data[0][0], [200.5, 100.25])
    assert any("no slide is open" in m for m in notifications("warning"))


@pytest.mark.parametrize("path", sorted(ANNOTATIONS.rglob("*.*")), ids=lambda p: p.name)
def test_reader_claims_every_shared_annotation_file(path):
    from napari_metastasis._napari.annotation_files import get_annotation_reader

    assert get_annotation_reader(str(path)) is not None


def test_reader_declines_other_json_and_xml(svs_file, tmp_path):
    from napari_metastasis._napari.annotation_files import get_annotation_reader

    (tmp_path / "config.json").write_text('{"model": "x", "patch_size": 96}')
    (tmp_path / "other.xml").write_text("<svg/>")
    assert get_annotation_reader(str(tmp_path / "config.json")) is None
    assert get_annotation_reader(str(tmp_path / "other.xml")) is None
    assert get_annotation_reader(str(svs_file)) is None


@pytest.mark.gui
@pytest.mark.parametrize("suffix", [".geojson", ".xml", ".csv"])
def test_npe2_writers_export_a_shapes_layer_exactly(
    viewer_with_slide, geojson_file, tmp_path, suffix
):
    viewer = viewer_with_slide
    shapes, points = viewer.open(str(geojson_file), plugin="napari-metastasis")
    out = tmp_path / f"export{suffix}"
    viewer.layers.selection = {shapes, points}
    written = viewer.layers.save(str(out), selected=True, plugin="napari-metastasis")
    assert written == [str(out)]
    if suffix == ".csv":
        rows = list(csv.DictReader(out.open()))
        assert [r["id"] for r in rows] == ["1", "2", "3"]
        assert float(rows[0]["area_um2"]) == pytest.approx(DONUT.area * MPP**2)
        assert float(rows[0]["max_prob"]) == pytest.approx(0.93)
        return
    back = read_annotations(out)
    if suffix == ".geojson":
        assert len(back) == 3
        for a, b in zip(ANNOTATIONS_PX, back, strict=True):
            assert shapely.equals_exact(a.geometry, b.geometry, tolerance=0)
            assert (a.classification, a.id) == (b.classification, b.id)
        props = json.loads(out.read_text())["features"][0]["properties"]
        assert props["measurements"]["area_um2"] == pytest.approx(DONUT.area * MPP**2)
    else:  # ASAP: the hole becomes a _2 exclusion polygon
        groups = [a.classification for a in back]
        assert groups == ["_0", "_2", "Stroma", "Mitosis"]
        assert shapely.equals_exact(back[1].geometry, Polygon(DONUT.interiors[0]), 0)


@pytest.mark.gui
def test_user_drawn_shapes_export_in_slide_pixels(viewer_with_slide, tmp_path):
    viewer = viewer_with_slide
    drawn = viewer.add_shapes(
        [np.array([[100.0, 100.0], [100.0, 200.0], [150.0, 200.0]])], shape_type="polygon"
    )  # µm, no metadata: the slide's mpp converts it
    out = tmp_path / "drawn.geojson"
    viewer.layers.save(str(out), selected=True, plugin="napari-metastasis")
    (ann,) = read_annotations(out)
    assert ann.geometry.exterior.coords[1] == pytest.approx((200 / MPP, 100 / MPP))
    assert drawn.data[0].shape == (3, 2)


@pytest.mark.gui
def test_panel_buttons_import_export_and_crops(
    annotations_dir, viewer_with_slide, qtbot, geojson_file, tmp_path
):
    viewer = viewer_with_slide
    panel = AnnotationIOWidget(viewer)
    qtbot.addWidget(panel)
    assert panel.import_button.text() == "Import…" and panel.crops_button.text() == "Region crops…"

    added = panel.import_file(annotations_dir / "asap_xml" / "asap-polygon.xml")
    assert [type(layer).__name__ for layer in added] == ["Shapes"]
    assert panel.layer_combo.currentText() == "asap-polygon"
    panel.import_file(geojson_file)
    assert panel.layer_combo.currentText() == "regions"
    assert [panel.layer_combo.itemText(i) for i in range(panel.layer_combo.count())] == [
        "asap-polygon",
        "regions",
        "regions points",
    ]

    xml = panel.export(tmp_path / "out.xml")
    assert xml is not None and [a.classification for a in read_annotations(xml)] == [
        "_0",
        "_2",
        "Stroma",
    ]
    geo = panel.export(tmp_path / "out.json", "geojson")
    assert shapely.equals_exact(read_annotations(geo)[0].geometry, DONUT, 0)
    table = panel.export(tmp_path / "out.csv")
    assert float(next(csv.DictReader(table.open()))["area_um2"]) == pytest.approx(
        DONUT.area * MPP**2
    )

    crops = panel.export_crops(tmp_path / "crops")
    assert [p.name for p in crops] == ["001_Tumor_lesion.png", "002_Stroma_2.png"]
    assert Image.open(crops[0]).size == (800, 900)  # level 0 of the single-level slide


@pytest.mark.gui
def test_panel_reports_errors_and_keeps_going(annotations_dir, viewer_with_slide, qtbot, tmp_path):
    viewer = viewer_with_slide
    panel = AnnotationIOWidget(viewer)
    qtbot.addWidget(panel)
    bad = tmp_path / "broken.geojson"
    bad.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}]}'
    )
    assert panel.import_file(bad) == []
    assert len(viewer.layers) == 1
    assert panel.export(tmp_path / "nothing.geojson") is None  # no annotation layer yet
    panel.import_file(annotations_dir / "qupath_geojson" / "qupath-polyline.json")
    assert panel.export(tmp_path / "polyline.xml") is None  # ASAP cannot hold it
    assert not (tmp_path / "polyline.xml").exists()
    errors = notifications("error")
    assert any("broken.geojson: feature 1: polygon has 2 distinct point(s)" in m for m in errors)
    assert any("No Shapes or Points layer to export" in m for m in errors)
    assert any("polyline.xml: annotation 1 ('polyline'): ASAP XML cannot hold" in m for m in errors)


@pytest.mark.gui
def test_buttons_ask_for_a_path_then_call_the_handlers(
    viewer_with_slide, qtbot, geojson_file, tmp_path, monkeypatch
):
    """The button wiring, with the file dialogs answered by the test (no modal dialog opens)."""
    from napari_metastasis.widgets import annotation_buttons as annotation_io

    dialog = annotation_io.QFileDialog
    monkeypatch.setattr(dialog, "getOpenFileName", lambda *a, **k: (str(geojson_file), ""))
    monkeypatch.setattr(dialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "saved"), ""))
    monkeypatch.setattr(dialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "crops"))
    panel = AnnotationIOWidget(viewer_with_slide)
    qtbot.addWidget(panel)
    panel.import_button.click()
    assert [layer.name for layer in viewer_with_slide.layers][1:] == ["regions", "regions points"]
    panel.asap_button.click()
    assert (tmp_path / "saved.xml").is_file()  # the format's extension is added
    panel.geojson_button.click()
    assert len(read_annotations(tmp_path / "saved.geojson")) == 2
    panel.csv_button.click()
    assert (tmp_path / "saved.csv").read_text().startswith("id,class,")
    panel.crops_button.click()
    assert len(list((tmp_path / "crops").glob("*.png"))) == 2
    # cancelling a dialog does nothing
    monkeypatch.setattr(dialog, "getOpenFileName", lambda *a, **k: ("", ""))
    panel.import_button.click()
    assert len(viewer_with_slide.layers) == 3
