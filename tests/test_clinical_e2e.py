"""End to end: node slides with deposits of known size -> ``predict`` -> summaries, ``stages.csv``,
``evaluate --stages`` and the PDF reports.

The slides are written here (4 µm/px pyramidal TIFFs, black deposits on white, every patch
classified) and read by the darkness model, whose tumour probability is the patch's mean darkness:
at threshold 0.5 a cell is in when at least half of it is dark. Grid cells are 128 µm (16 px
at 8 µm/px): rectangles drawn on cell boundaries come back exactly; a disc's outline is a staircase of
cells whose centres lie inside it, so its greatest dimension is off by at most one cell diagonal
(√2 strides), about one stride.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pypdfium2 as pdfium
import pytest
from engine_helpers import write_darkness_model, write_pyramid_tiff

from napari_metastasis.cli import main
from napari_metastasis.clinical.summary import read_summary

MPP = 4.0  # µm per slide pixel
CELL_UM = 128.0  # the model's patch: 16 px at 8 µm/px
SHAPE = (640, 800)  # px: 2.56 x 3.2 mm

# Camelyon17 patients have five nodes (patient_<id>_node_0 ... _4); the ones not drawn are clear.
EXPECTED = """patient,stage
patient_000.zip,pN0(i+)
patient_000_node_0.tif,negative
patient_000_node_1.tif,itc
patient_000_node_2.tif,negative
patient_000_node_3.tif,negative
patient_000_node_4.tif,negative
patient_001.zip,pN1mi
patient_001_node_0.tif,micro
patient_001_node_1.tif,negative
patient_001_node_2.tif,negative
patient_001_node_3.tif,negative
patient_001_node_4.tif,negative
patient_002.zip,pN1
patient_002_node_0.tif,macro
patient_002_node_1.tif,micro
patient_002_node_2.tif,negative
patient_002_node_3.tif,negative
patient_002_node_4.tif,negative
patient_003.zip,pN0
patient_003_node_0.tif,negative
patient_003_node_1.tif,negative
patient_003_node_2.tif,negative
patient_003_node_3.tif,negative
patient_003_node_4.tif,negative
"""


def _tissue():
    return np.full((*SHAPE, 3), 255, np.uint8)


def _rect_um(image, x0, y0, x1, y1):
    image[round(y0 / MPP) : round(y1 / MPP), round(x0 / MPP) : round(x1 / MPP)] = 0


def _disc_um(image, cx, cy, diameter):
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    inside = ((xx + 0.5) * MPP - cx) ** 2 + ((yy + 0.5) * MPP - cy) ** 2 <= (diameter / 2) ** 2
    image[inside] = 0


def _slides(folder):
    """{file name: image}; deposits on cell boundaries unless discs (cells are centred on
    multiples of 128 µm, so their edges lie at 64 µm + multiples of 128 µm)."""
    itc = _tissue()
    _rect_um(itc, 576, 576, 704, 704)  # one cell: 181 µm diagonal
    micro_rect = _tissue()
    _rect_um(micro_rect, 576, 576, 1216, 1216)  # 640 µm square: 905.1 µm diagonal
    _rect_um(micro_rect, 2496, 1856, 2624, 1984)  # and an ITC elsewhere
    macro_disc = _tissue()
    _disc_um(macro_disc, 1600, 1280, 2400)  # 2.4 mm disc
    micro_disc = _tissue()
    _disc_um(micro_disc, 1000, 1000, 1200)  # 1.2 mm disc
    images = {
        "patient_000_node_0.tif": _tissue(),
        "patient_000_node_1.tif": itc,
        "patient_001_node_0.tif": micro_rect,
        "patient_001_node_1.tif": _tissue(),
        "patient_002_node_0.tif": macro_disc,
        "patient_002_node_1.tif": micro_disc,
        "patient_003_node_0.tif": _tissue(),
    }
    for patient in range(4):  # the other nodes of each patient, clear (listed after the above)
        for node in range(5):
            images.setdefault(f"patient_{patient:03d}_node_{node}.tif", _tissue())
    return [write_pyramid_tiff(folder / name, image, mpp=MPP) for name, image in images.items()]


@pytest.fixture(scope="module")
def node_slides(tmp_path_factory):
    return _slides(tmp_path_factory.mktemp("nodes"))


@pytest.fixture(scope="module")
def darkness(tmp_path_factory):
    return write_darkness_model(tmp_path_factory.mktemp("m") / "darkness", 16, spacing=8.0)


def _predict(slides, out, model, *extra):
    return main(
        [
            "predict",
            *map(str, slides),
            "--out",
            str(out),
            "--model",
            str(model),
            "--tissue-min-fraction",
            "0",
            "--threshold",
            "0.5",
            *extra,
        ]
    )


@pytest.mark.slow
def test_predict_writes_the_right_stages(node_slides, darkness, tmp_path, capsys):
    out = tmp_path / "run"
    assert _predict(node_slides, out, darkness) == 0, capsys.readouterr().err
    assert (out / "stages.csv").read_text() == EXPECTED

    itc = read_summary(out / "patient_000_node_1.summary.json")
    assert itc.verdict.category == "itc"
    assert itc.verdict.greatest_dimension_mm == pytest.approx(CELL_UM * math.sqrt(2) / 1000)
    assert itc.stride_um == CELL_UM and itc.measuring_error_mm == pytest.approx(0.128)
    assert itc.threshold == 0.5 and itc.model == "darkness"

    rect = read_summary(out / "patient_001_node_0.summary.json")
    assert [d.category for d in rect.deposits] == ["micro", "itc"]
    assert rect.deposits[0].greatest_dimension_mm == pytest.approx(0.640 * math.sqrt(2))
    assert rect.deposits[0].area_mm2 == pytest.approx(0.64**2)
    assert rect.deposits[0].max_prob == pytest.approx(1.0, abs=1e-3)

    # Discs come back within one cell diagonal.
    for stem, diameter in (("patient_002_node_0", 2.4), ("patient_002_node_1", 1.2)):
        disc = read_summary(out / f"{stem}.summary.json")
        assert len(disc.deposits) == 1
        error = disc.verdict.greatest_dimension_mm - diameter
        assert abs(error) <= math.sqrt(2) * CELL_UM / 1000

    raw = json.loads((out / "patient_002_node_0.summary.json").read_text())
    assert raw["verdict"] == "macro" and raw["verdict_text"].startswith("Macrometastasis — largest")
    assert set(raw["regions"][0]) >= {
        "area_mm2",
        "greatest_dimension_mm",
        "category",
        "max_prob",
        "mean_prob",
        "uid",
    }
    # the summary's regions are the GeoJSON's features, by id
    features = json.loads((out / "patient_002_node_0.geojson").read_text())["features"]
    assert [f["id"] for f in features] == [r["uid"] for r in raw["regions"]]

    # Camelyon17's metric of the run against the truth: perfect.
    truth = tmp_path / "truth.csv"
    truth.write_text(EXPECTED)
    capsys.readouterr()
    assert main(["evaluate", "--stages", str(truth), str(out / "stages.csv")]) == 0
    assert "kappa 1.0000" in capsys.readouterr().out

    # And the report of the run: one PDF per patient, summary page + one page per slide.
    assert main(["report", str(out)]) == 0
    for patient, n_slides in (("patient_000", 5), ("patient_002", 5), ("patient_003", 5)):
        pdf = pdfium.PdfDocument(str(out / f"{patient}.report.pdf"))
        assert len(pdf) == 1 + n_slides
        pdf.close()


@pytest.mark.slow
def test_stride_and_case_options(node_slides, darkness, tmp_path, capsys):
    out = tmp_path / "run"
    slides = [node_slides[5], node_slides[1]]  # 1.2 mm disc, ITC
    # Half-patch steps: patches half over the ITC square are exactly 0.5 dark; 0.6 leaves them out.
    args = ("--stride-um", "64", "--threshold", "0.6")
    assert _predict(slides, out, darkness, *args, "--case", "Mrs X") == 0
    assert (out / "stages.csv").read_text().splitlines() == [
        "patient,stage",
        "Mrs X.zip,pN1mi",
        "patient_002_node_1.tif,micro",
        "patient_000_node_1.tif,itc",
    ]
    disc = read_summary(out / "patient_002_node_1.summary.json")
    assert disc.stride_um == 64 and disc.patch_um == CELL_UM
    assert abs(disc.verdict.greatest_dimension_mm - 1.2) <= math.sqrt(2) * 0.064

    cases = tmp_path / "cases.csv"
    cases.write_text("slide,patient\npatient_002_node_1.tif,A\npatient_000_node_1.tif,B\n")
    assert _predict(slides, tmp_path / "run2", darkness, "--cases", str(cases)) == 0
    assert (tmp_path / "run2" / "stages.csv").read_text().splitlines()[1::2] == [
        "A.zip,pN1mi",
        "B.zip,pN0(i+)",
    ]


def test_a_slide_without_analysed_patches_leaves_its_patient_unstaged(
    node_slides, darkness, tmp_path, capsys
):
    out = tmp_path / "run"
    # white glass only: with the default tissue fraction no patch is classified
    args = ["--out", str(out), "--model", str(darkness), "--threshold", "0.5"]
    assert main(["predict", str(node_slides[0]), str(node_slides[6]), *args]) == 0
    err = capsys.readouterr().err
    assert "patient_000: not staged, no patch of patient_000_node_0.tif was analysed" in err
    assert (
        not (out / "stages.csv").exists() or "patient_000" not in (out / "stages.csv").read_text()
    )
    assert read_summary(out / "patient_000_node_0.summary.json").patches == 0


@pytest.mark.slow
def test_a_failed_slide_leaves_its_patient_unstaged(node_slides, darkness, tmp_path, capsys):
    out = tmp_path / "run"
    missing = node_slides[0].parent / "patient_001_node_7.tif"
    patient_003 = [s for s in node_slides if s.name.startswith("patient_003")]
    code = _predict([node_slides[2], missing, *patient_003], out, darkness)
    assert code == 1
    err = capsys.readouterr().err
    assert "patient_001: not staged" in err and "patient_001_node_7.tif" in err
    assert (out / "stages.csv").read_text().splitlines() == [
        "patient,stage",
        "patient_003.zip,pN0",
        *(f"patient_003_node_{n}.tif,negative" for n in range(5)),
    ]


@pytest.mark.slow
def test_f8_a_patient_with_a_missing_node_is_marked_incomplete_never_staged(
    node_slides, darkness, tmp_path, capsys
):
    """F8: Camelyon17 (camelyon17.grand-challenge.org, evaluation and submission format of 2017)
    stages a patient from its five node slides patient_<id>_node_0 ... _4; its stages file has no
    way to say "incomplete". A patient with node 3 missing was staged from 4 nodes without a word:
    now the CLI warns, stages.csv leaves it out, and its report says "Not staged"."""
    out = tmp_path / "run"
    four = [s for s in node_slides if s.name.startswith("patient_002") and "node_3" not in s.name]
    complete = [s for s in node_slides if s.name.startswith("patient_003")]
    assert len(four) == 4 and len(complete) == 5
    assert _predict([*four, *complete], out, darkness) == 0
    err = capsys.readouterr().err
    assert "warning: patient_002: incomplete, patient_002_node_3 missing" in err
    # the messages, not the progress bars (a slide slower than tqdm's delay gets one, named)
    messages = [m for m in re.split(r"[\r\n]+", err) if m.startswith("napari-metastasis ")]
    assert not [m for m in messages if "patient_003" in m], messages
    stages = (out / "stages.csv").read_text()
    assert "patient_002" not in stages and stages.startswith("patient,stage\npatient_003.zip,pN0")
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: patient_002: incomplete, patient_002_node_3 missing" in err
    pdf = pdfium.PdfDocument(str(out / "patient_002.report.pdf"))
    try:
        text = pdf[0].get_textpage().get_text_range()
    finally:
        pdf.close()
    assert "Not staged" in text and "patient_002_node_3 missing" in text
    assert "pN1" in text  # what the four present nodes alone give, said as such
