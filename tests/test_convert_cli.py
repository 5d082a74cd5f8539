"""``napari-metastasis convert IN OUT``: formats by extension/content, one-line summary, exit 1."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
from _annotation_checks import check_asap_xml, check_geojson, load_strict_json
from shared_data import ANNOTATIONS

from napari_metastasis.annotations import read_annotations, tumour_geometry
from napari_metastasis.cli import main

NCRF_064 = ANNOTATIONS / "camelyon16_ncrf_json" / "Tumor_064.json"
POLYLINE = ANNOTATIONS / "qupath_geojson" / "qupath-polyline.json"


@pytest.mark.slow
def test_ncrf_to_asap_to_geojson_to_csv(svs_file, tmp_path, capsys):
    xml = tmp_path / "Tumor_064.xml"
    assert main(["convert", str(NCRF_064), str(xml)]) == 0
    out, err = capsys.readouterr()
    assert out == (
        "Tumor_064.json (NCRF JSON) -> Tumor_064.xml (ASAP XML): 35 features (32 Polygon, "
        "3 MultiPolygon)\n"
    )
    # one line for the six repaired polygons, not six (the details go to the log)
    assert err.count("note: Tumor_064.json: 6 outlines needed repair and were fixed") == 1
    assert "invalid polygon" not in err
    check_asap_xml(xml)

    geojson = tmp_path / "Tumor_064.geojson"
    assert main(["convert", str(xml), str(geojson), "--mpp", "0.243"]) == 0
    out, err = capsys.readouterr()
    in_xml = len(read_annotations(xml))  # holes and parts became ASAP annotations of their own
    assert in_xml > 35
    assert (
        out
        == f"Tumor_064.xml (ASAP XML) -> Tumor_064.geojson (GeoJSON): {in_xml} features ({in_xml} Polygon)\n"
    )
    assert err == ""  # nothing left to repair
    check_geojson(load_strict_json(geojson))
    original = tumour_geometry(read_annotations(NCRF_064))
    assert original.symmetric_difference(tumour_geometry(read_annotations(geojson))).area < 1e-6

    table = tmp_path / "Tumor_064.csv"
    assert main(["convert", str(geojson), str(table), "--slide", str(svs_file)]) == 0
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == in_xml and {r["class"] for r in rows} == {"_0", "_2"}
    area_px = read_annotations(geojson)[0].geometry.area
    assert float(rows[0]["area_um2"]) == pytest.approx(area_px * 0.499**2)


def test_ncrf_output_by_flag(tmp_path, capsys):
    out = tmp_path / "back.json"
    assert main(["convert", str(NCRF_064), str(out), "--to", "ncrf"]) == 0
    data = load_strict_json(out)
    assert len(data["positive"]) >= 11 and len(data["negative"]) == 24
    assert "(NCRF JSON) -> back.json (NCRF JSON)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([str(POLYLINE), "{tmp}/x.xml"], "x.xml: annotation 1 ('polyline'): ASAP XML cannot hold"),
        ([str(POLYLINE), "{tmp}/x.txt"], "x.txt: cannot tell the format from '.txt'"),
        (["{tmp}/missing.json", "{tmp}/x.xml"], "missing.json: annotation file not found"),
        ([str(NCRF_064), "{tmp}/x.csv"], "x.csv: a CSV summary gives sizes in µm and needs"),
        ([str(NCRF_064), "{tmp}/x.csv", "--mpp", "-1"], "--mpp must be a positive number"),
        ([str(POLYLINE), str(POLYLINE)], "output would overwrite the input"),
        (["{tmp}/bad.geojson", "{tmp}/x.xml"], "bad.geojson: not valid JSON"),
    ],
)
def test_errors_are_one_line_and_exit_1(tmp_path, capsys, args, message):
    (tmp_path / "bad.geojson").write_text("{")
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["convert", *args]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("napari-metastasis convert: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x.xml").exists() and not (tmp_path / "x.csv").exists()


def test_console_entry_point_runs(annotations_dir, project_root, tmp_path):
    """The real process: the summary on stdout, exit status 0 (and 1 on error)."""
    out = tmp_path / "point.xml"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_metastasis.cli",
            "convert",
            str(annotations_dir / "qupath_geojson" / "qupath-point.json"),
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=project_root,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert (
        run.stdout == "qupath-point.json (GeoJSON) -> point.xml (ASAP XML): 1 feature (1 Point)\n"
    )
    (dot,) = read_annotations(out)
    assert dot.geometry.coords[0] == (26833.53, 15424.94)
