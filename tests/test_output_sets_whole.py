"""Nothing lost, nothing mixed (issue 25): a slide's outputs survive Ctrl-C as a set, per-run files
(stages.csv, the patient reports) are sets too, and nothing reports from a broken set.

Before: Ctrl-C while a set was being moved in discarded the journal with the hidden folder, leaving
new files beside the old summary with no manifest; ``report`` then printed a PDF from that mix;
``stages.csv`` was outside every set; stray ``.<stem>.old-*`` folders stayed; an HTTP server given
as ``--dask`` was called "out of memory"; region names such as ``=HYPERLINK(...)`` went into CSVs
as formulas; a refused run left an empty ``--out``; ``--out ''`` meant the current folder.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import write_darkness_model, write_pyramid_tiff

from napari_metastasis.cli import main
from napari_metastasis.outputs import output_set
from napari_metastasis.outputs.output_set import recover, verify_set


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_darkness_model(tmp_path_factory.mktemp("m") / "darkness", 32)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    image = np.full((320, 320, 3), 255, np.uint8)
    image[64:256, 64:256] = 30
    return write_pyramid_tiff(tmp_path_factory.mktemp("s") / "block.tiff", image, mpp=1.0)


def _predict(out, slide, model, *extra):
    return main(
        [
            "predict",
            str(slide),
            "--out",
            str(out),
            "--model",
            str(model),
            "--tissue-min-fraction",
            "0",
            "--case",
            "P1",
            *extra,
        ]
    )


def _hidden(out: Path) -> list[str]:
    """Hidden leftovers in ``out`` and ``out/camelyon16`` (not the map kept for --resume)."""
    places = [out, out / "camelyon16"]
    return sorted(
        str(p.relative_to(out))
        for place in places
        if place.is_dir()
        for p in place.iterdir()
        if p.name.startswith(".") and not p.name.endswith(".resume.zarr")
    )


def _listed(out: Path, stem: str) -> dict[str, str]:
    data = json.loads((out / f"{stem}.outputs.json").read_text())
    return {f["name"]: f["sha256"] for f in data["files"]}


def _interrupt_move_after(monkeypatch, moves: int, exc: BaseException) -> None:
    """Raise ``exc`` at the ``moves``-th rename of a set's file into place (Ctrl-C mid-move)."""
    real = os.replace
    count = {"n": 0}

    def replace(src, dst, *args, **kwargs):
        if ".set-" in str(src) and ".set-" not in str(dst) and "outputs.json" not in str(dst):
            count["n"] += 1
            if count["n"] == moves:
                raise exc
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(output_set.os, "replace", replace)


# --- R1: the journal survives a Ctrl-C during the move-in -------------------------------------
@pytest.mark.parametrize("moves", [2, 5])
def test_ctrl_c_while_moving_in_is_finished_by_the_next_run(
    tmp_path, slide, model, monkeypatch, moves
):
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 0
    old = _listed(out, "block")
    _interrupt_move_after(monkeypatch, moves, KeyboardInterrupt())
    assert _predict(out, slide, model, "--threshold", "0.9") == 130
    monkeypatch.undo()
    journals = list(out.glob(".block.set-*/COMMIT"))
    assert len(journals) == 1, "the journal must survive until the move is finished"
    new = {f["name"]: f["sha256"] for f in json.loads(journals[0].read_text())["files"]}
    assert verify_set(out, "block").state != "complete"  # no manifest claims the mix
    recover(out, "block")
    assert verify_set(out, "block").state == "complete"
    assert _listed(out, "block") == new and new != old
    assert not _hidden(out)


def test_error_during_move_in_is_finished_by_the_next_run(tmp_path, slide, model, monkeypatch):
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 0
    _interrupt_move_after(monkeypatch, 3, OSError(5, "Input/output error"))
    assert _predict(out, slide, model, "--threshold", "0.9") == 1
    monkeypatch.undo()
    assert _predict(out, slide, model) == 0  # the next run finishes it first, then writes anew
    assert verify_set(out, "block").state == "complete" and not _hidden(out)


# --- R2: readers refuse a set that fails its manifest check -----------------------------------
def _break_set(out: Path) -> None:
    """What the old Ctrl-C left: new files beside the old summary, no manifest, no journal."""
    (out / "block.outputs.json").unlink()
    (out / "block.csv").write_text("minx,miny,width,height,prob_tumor\n")


def test_report_refuses_a_mixed_set_naming_what_is_missing(tmp_path, slide, model, capsys):
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 0
    _break_set(out)
    capsys.readouterr()
    assert main(["report", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "block.outputs.json" in err and "missing" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert not list(out.glob("*.report.pdf"))


def test_report_refuses_a_set_with_a_listed_file_missing(tmp_path, slide, model, capsys):
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 0
    (out / "block.heatmap.png").unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert "block.heatmap.png" in err and "missing" in err


def test_evaluate_refuses_a_map_of_a_broken_set(tmp_path, slide, model, capsys):
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 0
    _break_set(out)
    capsys.readouterr()
    code = main(
        [
            "evaluate",
            "--maps",
            str(out / "block.prob.tiff"),
            "--annotations",
            "none",
            "--out",
            str(tmp_path / "ev"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "block.outputs.json" in err and "Traceback" not in err


def test_viewer_load_checks_the_set(tmp_path, slide, model):
    """Load analysis (widgets/analysis_files) calls this before showing a map."""
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 0
    output_set.check_saved_map(out / "block.prob.tiff")  # complete: fine
    output_set.check_saved_map(out / "block.prob.zarr" / ".zattrs")
    _break_set(out)
    with pytest.raises(output_set.IncompleteSetError, match=r"block\.outputs\.json"):
        output_set.check_saved_map(out / "block.prob.tiff")
    standalone = tmp_path / "mine.prob.tiff"  # a map saved on its own is no set's member
    standalone.write_bytes((out / "block.prob.tiff").read_bytes())
    output_set.check_saved_map(standalone)


# --- R3: stages.csv is a per-run set that knows the summaries it came from --------------------
def test_stages_csv_is_a_set_and_goes_stale_with_its_slides(
    tmp_path, slide, model, capsys, monkeypatch
):
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 0
    assert verify_set(out, "stages").state == "complete"
    assert "stages.csv" in _listed(out, "stages")
    truth = tmp_path / "truth.csv"
    truth.write_text((out / "stages.csv").read_text())
    assert main(["evaluate", "--stages", str(truth), str(out / "stages.csv")]) == 0

    # Killed after the slide's new set, before the new stages.csv: the old one is stale.
    from napari_metastasis.clinical import summary

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(summary, "write_stages", killed)
    assert _predict(out, slide, model, "--threshold", "0.9") == 130
    monkeypatch.undo()
    assert verify_set(out, "block").state == "complete"
    state = verify_set(out, "stages")
    assert state.state == "stale" and "block.summary.json" in state.detail
    capsys.readouterr()
    assert main(["evaluate", "--stages", str(truth), str(out / "stages.csv")]) == 1
    err = capsys.readouterr().err
    assert "stages.csv" in err and "block.summary.json" in err
    assert main(["report", str(out)]) == 1
    assert "stages.csv" in capsys.readouterr().err


def test_reports_are_one_set(tmp_path, slide, model, capsys):
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 0
    assert main(["report", str(out)]) == 0
    assert verify_set(out, "reports").state == "complete"
    assert "P1.report.pdf" in _listed(out, "reports")


# --- R4: stray .<stem>.old-* folders are cleaned up ------------------------------------------
def test_stray_old_folders_are_removed(tmp_path, slide, model):
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 0
    for where in (out, out / "camelyon16"):
        stray = where / ".block.old-abcd1234"
        (stray / "block.prob.zarr").mkdir(parents=True)
    (out / ".other.old-abcd1234").mkdir()
    recover(out, "block")
    assert not (out / ".block.old-abcd1234").exists()
    assert not (out / "camelyon16" / ".block.old-abcd1234").exists()
    recover(out)
    assert not _hidden(out)


# --- R5: an address that answers but is not a dask scheduler ---------------------------------
@pytest.mark.slow
def test_dask_address_that_is_not_a_scheduler(tmp_path, slide, model, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        code = _predict(tmp_path / "out", slide, model, "--dask", f"tcp://127.0.0.1:{port}")
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert code == 1
    assert "not a dask scheduler" in err and f"127.0.0.1:{port}" in err
    assert "memory" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused: no --out folder made


# --- R6: CSV injection -----------------------------------------------------------------------
HOSTILE = ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def test_stages_csv_escapes_formulas_and_reads_back(tmp_path):
    from napari_metastasis.clinical.staging import PatientStage, read_stages, stages_csv

    patients = [PatientStage.from_slides(name, [(f"{name}.tif", "macro")]) for name in HOSTILE]
    text = stages_csv(patients)
    import csv
    import io

    for row in list(csv.reader(io.StringIO(text)))[1:]:
        assert row[0][0] not in "=+-@\t\r", row
    path = tmp_path / "stages_hostile.csv"
    path.write_text(text, encoding="utf-8", newline="")
    back = read_stages(path)
    assert set(back.patients) == set(HOSTILE)  # the escape is undone when read back


def test_region_csv_summary_escapes_formulas():
    import csv
    import io

    import shapely

    from napari_metastasis.annotations.csv_summary import to_csv
    from napari_metastasis.annotations.model import Annotation

    annotations = [
        Annotation(shapely.box(0, 0, 10, 10), classification=name, name=name) for name in HOSTILE
    ]
    rows = list(csv.DictReader(io.StringIO(to_csv(annotations, (1.0, 1.0)))))
    for row in rows:
        assert row["name"][0] == "'" and row["class"][0] == "'"
        assert row["name"][1:] in HOSTILE
    assert float(rows[0]["area_um2"]) == 100.0  # numbers stay numbers


# --- R7: small ones --------------------------------------------------------------------------
def test_a_refused_run_creates_no_out_folder(tmp_path, slide, model, capsys):
    out = tmp_path / "not-yet"
    cases = str(tmp_path / "no-such-cases.csv")
    code = main(["predict", str(slide), "--out", str(out), "--model", str(model), "--cases", cases])
    assert code == 1 and not out.exists()
    untrusted = write_darkness_model(tmp_path / "stranger", 32, trust=False)
    code = main(["predict", str(slide), "--out", str(out), "--model", str(untrusted)])
    assert code != 0 and not out.exists()


def test_empty_out_is_refused(slide, model, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(slide), "--out", "", "--model", str(model)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--out" in err and "empty" in err and "Traceback" not in err


def test_long_region_names_are_shortened_in_notes(tmp_path):
    from napari_metastasis.annotations.io import read_annotations

    name = "A" * 200_000
    path = tmp_path / "long.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "properties": {"name": name}, "geometry": None},
                    {
                        "type": "Feature",
                        "properties": {"name": name},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[0, 0], [9, 0], [9, 9], [0, 0]]],
                        },
                    },
                ],
            }
        )
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_annotations(path)
    assert caught and all(len(str(w.message)) < 400 for w in caught)


def test_long_names_in_ncrf_and_asap_notes_are_shortened(tmp_path):
    from napari_metastasis.annotations.io import read_annotations
    from napari_metastasis.errors import AnnotationError

    name = "B" * 200_000
    ncrf = tmp_path / "long_ncrf.json"
    ncrf.write_text(json.dumps({"positive": [{"name": name, "vertices": [[0, 0], ["x", 1]]}]}))
    asap = tmp_path / "long.xml"
    asap.write_text(
        f'<ASAP_Annotations><Annotations><Annotation Name="{name}" Type="Weird">'
        "<Coordinates/></Annotation></Annotations></ASAP_Annotations>"
    )
    for path in (ncrf, asap):
        with pytest.raises(AnnotationError) as caught:
            read_annotations(path)
        assert name[:40] in str(caught.value) and len(str(caught.value)) < 400
