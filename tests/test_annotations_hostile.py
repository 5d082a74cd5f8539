"""Hostile annotation names and sizes (issue 15): the ASAP writer always writes XML it can read back,
and files past the documented limits are refused with a sentence naming the limit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from shapely.geometry import Point, Polygon

from napari_metastasis.annotations import Annotation, AnnotationRepairWarning
from napari_metastasis.annotations import _validate as v
from napari_metastasis.annotations.io import read_annotations, write_annotations
from napari_metastasis.errors import AnnotationError

#: Names that must come back exactly: markup, quotes, whitespace escapes, non-Latin, RTL override.
EXACT_NAMES = [
    "a <b> & \"c\" 'd'",
    "tab\there\nnew line\r\nreturn",
    "]]> <!-- --> <?xml?> &amp; &#0;",
    "ümlaut 腫瘍 🧫 \u202eright-to-left",
    " leading and trailing ",
]
#: Names XML cannot hold at all: they are written with U+FFFD (and a warning), never as broken XML.
UNWRITABLE = {
    "bell\x07": "bell\ufffd",
    "nul\x00byte": "nul\ufffdbyte",
    "lone \ud800 surrogate": "lone \ufffd surrogate",
    "escape \x1b[31m": "escape \ufffd[31m",
    "\ufffe\uffff": "\ufffd\ufffd",
}


def _square(k: int) -> Polygon:
    return Polygon([(k * 20, 0), (k * 20 + 10, 0), (k * 20 + 10, 10), (k * 20, 10)])


def test_asap_round_trip_with_hostile_names(tmp_path):
    names = EXACT_NAMES + list(UNWRITABLE)
    annotations = [
        Annotation(geometry=_square(k), classification=name, name=name)
        for k, name in enumerate(names)
    ]
    path = tmp_path / "hostile.xml"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_annotations(path, annotations)
    notes = [str(w.message) for w in caught if issubclass(w.category, AnnotationRepairWarning)]
    assert len(notes) == 2 * len(UNWRITABLE)  # name and class of each
    back = read_annotations(path)
    assert [a.name for a in back] == EXACT_NAMES + list(UNWRITABLE.values())
    assert [a.classification for a in back][: len(EXACT_NAMES)] == EXACT_NAMES
    assert all(a.geometry.equals(b.geometry) for a, b in zip(annotations, back, strict=True))


def test_geojson_round_trip_with_hostile_names(tmp_path):
    annotations = [
        Annotation(geometry=Point(k, k), name=name) for k, name in enumerate(EXACT_NAMES)
    ]
    path = tmp_path / "hostile.geojson"
    write_annotations(path, annotations)
    assert [a.name for a in read_annotations(path)] == EXACT_NAMES


def test_vertex_and_feature_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(v, "MAX_VERTICES_PER_GEOMETRY", 1000)
    monkeypatch.setattr(v, "MAX_VERTICES_PER_FILE", 2500)
    monkeypatch.setattr(v, "MAX_FEATURES", 5)

    def ring(n, r=100.0):
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return Polygon(np.c_[r * np.cos(t), r * np.sin(t)])

    for suffix in (".geojson", ".xml", ".json"):
        big = tmp_path / f"big{suffix}"
        fmt = {".json": "ncrf"}.get(suffix)
        write_annotations(big, [Annotation(geometry=ring(1200), classification="Tumor")], fmt)
        with pytest.raises(AnnotationError, match=r"1,20[01] vertices in one shape; at most 1,000"):
            read_annotations(big)
        many = tmp_path / f"many{suffix}"
        write_annotations(
            many, [Annotation(geometry=ring(900), classification="Tumor") for _ in range(3)], fmt
        )
        with pytest.raises(AnnotationError, match=r"more than 2,500 vertices in the file"):
            read_annotations(many)
        lots = tmp_path / f"lots{suffix}"
        write_annotations(
            lots, [Annotation(geometry=_square(k), classification="Tumor") for k in range(6)], fmt
        )
        with pytest.raises(AnnotationError, match=r"6 annotations; at most 5"):
            read_annotations(lots)


def test_large_invalid_polygon_is_refused_not_repaired(tmp_path, monkeypatch):
    monkeypatch.setattr(v, "MAX_REPAIR_VERTICES", 100)
    t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    star = np.c_[np.cos(t) * (1000 + 300 * np.sin(37 * t)), np.sin(t) * 1000]
    star[::2] *= 0.3  # a self-intersecting zigzag
    bad = Polygon(star)
    assert not bad.is_valid
    path = tmp_path / "star.geojson"
    path.write_text(
        '{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [['
        + ", ".join(f"[{float(x)!r}, {float(y)!r}]" for x, y in star)
        + "]]}}"
    )
    with pytest.raises(
        AnnotationError, match=r"40[01] vertices; polygons of more than 100 vertices"
    ):
        read_annotations(path)


def test_limits_are_documented_in_the_formats_page(project_root):

    readme = (project_root / "docs" / "formats.md").read_text(encoding="utf-8")
    for number in (v.MAX_FEATURES, v.MAX_VERTICES_PER_GEOMETRY, v.MAX_VERTICES_PER_FILE):
        assert f"{number:,}" in readme
    assert f"{v.MAX_REPAIR_VERTICES:,}" in readme


def test_the_napari_annotation_reader_notifies_instead_of_raising(tmp_path):
    from napari.utils.notifications import notification_manager

    from napari_metastasis._napari.annotation_files import get_annotation_reader

    bad = tmp_path / "digits.geojson"
    bad.write_text(
        '{"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": ['
        + "9" * 5000
        + ", 1]}}"
    )
    start = len(notification_manager.records)
    reader = get_annotation_reader(str(bad))
    assert reader is not None and reader(str(bad)) == [(None,)]
    messages = [str(n.message) for n in notification_manager.records[start:]]
    assert any("digits.geojson: not usable JSON" in m for m in messages), messages
