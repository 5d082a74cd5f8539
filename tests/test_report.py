"""Slide summaries and the PDF report: the report opens, has a page per slide after the summary page,
and no page is blank (rendered to pixels with pypdfium2)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
import shapely
from PIL import Image

from napari_metastasis.cli import main
from napari_metastasis.clinical.report import write_reports
from napari_metastasis.clinical.summary import (
    SlideSummary,
    patient_stages,
    read_summary,
    summarise_regions,
    write_stages,
    write_summary,
)
from napari_metastasis.maps.contours import Region
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.outputs.output_set import OutputSet
from napari_metastasis.slides.grid import PatchGrid


def _summary(slide: str, boxes_um: list[tuple[float, float, float, float]], mpp=0.5):
    """A summary of rectangular regions (µm boxes) on a 20 000 x 16 000 px slide."""
    grid = PatchGrid(20000, 16000, mpp, mpp, patch_px=224, spacing_um=0.5)
    prob = ProbabilityMap.empty(grid)
    regions = [
        Region(i, shapely.box(*(np.array(b) / mpp)), 0.0, 0.9 - 0.1 * i, 0.8 - 0.1 * i, 1)
        for i, b in enumerate(boxes_um, start=1)
    ]
    stem = slide.rsplit(".", 1)[0]
    return summarise_regions(
        regions, prob, slide=slide, stem=stem, threshold=0.7, model="test-model"
    )


def _heatmap(folder, stem, seed):
    rng = np.random.default_rng(seed)
    image = np.full((800, 1000, 3), 235, np.uint8)
    image[200:600, 300:700] = rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / f"{stem}.heatmap.png")


@pytest.fixture
def predict_folder(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    summaries = [
        _summary("patient_007_node_0.tif", [(2000, 2000, 5000, 4000), (8000, 1000, 8100, 1100)]),
        _summary("patient_007_node_1.tif", [(1000, 1000, 1500, 1300)]),
        _summary("patient_007_node_2.tif", []),
        _summary("other.svs", [(100, 100, 250, 200)]),
    ]
    return _write_run(folder, summaries)


def _write_run(folder: Path, summaries: list[SlideSummary]) -> Path:
    """Each slide's summary and heatmap as one set, as predict writes them, then stages.csv."""
    for i, s in enumerate(summaries):
        with OutputSet(folder, s.stem) as outputs:
            write_summary(outputs.folder, s)
            _heatmap(outputs.folder, s.stem, i)
    write_stages(folder, patient_stages(summaries), [f"{s.stem}.summary.json" for s in summaries])
    return folder


def test_summary_round_trip_and_stages(predict_folder):
    summary = read_summary(predict_folder / "patient_007_node_0.summary.json")
    assert isinstance(summary, SlideSummary)
    assert summary.verdict.category == "macro"
    # 3 x 2 mm box: diagonal √13 mm.
    assert summary.verdict.greatest_dimension_mm == pytest.approx(13**0.5)
    assert [d.category for d in summary.deposits] == ["macro", "itc"]
    assert summary.deposits[0].area_mm2 == pytest.approx(6.0)
    assert summary.stride_um == pytest.approx(112) and summary.measuring_error_mm == 0.112
    assert (predict_folder / "stages.csv").read_text().splitlines() == [
        "patient,stage",
        "patient_007.zip,pN1",
        "patient_007_node_0.tif,macro",
        "patient_007_node_1.tif,micro",
        "patient_007_node_2.tif,negative",
        "other.zip,pN0(i+)",
        "other.svs,itc",
    ]


def _render(pdf_path):
    pdf = pdfium.PdfDocument(str(pdf_path))
    try:
        pages = []
        for i in range(len(pdf)):
            bitmap = pdf[i].render(scale=0.6)
            pages.append(np.asarray(bitmap.to_pil().convert("L"), np.float64))
        return pages
    finally:
        pdf.close()


def test_report_pages_are_there_and_not_blank(predict_folder, tmp_path):
    out = tmp_path / "reports"
    written = write_reports(predict_folder, out, date=dt.date(2026, 11, 30))
    assert [p.name for p in written] == ["patient_007.report.pdf", "other.report.pdf"]
    pages = _render(out / "patient_007.report.pdf")
    assert len(pages) == 1 + 3  # the summary page, then one per slide
    for page in pages:
        assert page.std() > 20  # text, tables and pictures, not an empty sheet
        assert (page < 128).mean() > 0.005
    # The slide page of a slide with a heatmap holds the picture: many grey levels in its top half.
    top = pages[1][: pages[1].shape[0] // 2]
    assert len(np.unique(top.astype(np.uint8))) > 100
    assert len(_render(out / "other.report.pdf")) == 2
    text = _page_text(out / "patient_007.report.pdf", 0)
    assert "pN1" in text and "not a diagnosis" in text and "2026-11-30" in text
    assert "test-model" in text and "0.7" in text and "about ± 112 µm" in text
    assert "Macrometastasis" in _page_text(out / "patient_007.report.pdf", 1)


def _page_text(pdf_path, index):
    pdf = pdfium.PdfDocument(str(pdf_path))
    try:
        return pdf[index].get_textpage().get_text_range()
    finally:
        pdf.close()


def test_report_command_groups_by_case(predict_folder, tmp_path, capsys):
    assert main(["report", str(predict_folder), "--case", "Mrs X", "--out", str(tmp_path)]) == 0
    assert "Mrs_X.report.pdf" in capsys.readouterr().out
    assert len(_render(tmp_path / "Mrs_X.report.pdf")) == 1 + 4


def test_report_without_summaries_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no .summary.json files" in err and "Traceback" not in err


def test_a_slide_with_regions_but_no_candidate_is_not_said_to_have_no_region(tmp_path):
    """The slide page's table line must agree with its verdict line: regions above the threshold
    without a seed patch are regions, just not candidate deposits."""
    from napari_metastasis.clinical.report import _table_text
    from napari_metastasis.clinical.staging import Deposit

    below_seed = Deposit(1, 0.01, 0.25, "micro", confirmed=False, seed_patches=0)
    assert _table_text([below_seed]) == "No confirmed deposit."
    assert _table_text([]) == "No region above the threshold."


def _text_outside_the_page(pdf_path, margin_pt: float = 18.0) -> list[tuple[int, str]]:
    """(page, line of text) of every character drawn less than ``margin_pt`` from a page edge
    (or past it: a PDF viewer clips it)."""
    pdf = pdfium.PdfDocument(str(pdf_path))
    outside = []
    try:
        for index in range(len(pdf)):
            page = pdf[index]
            width, height = page.get_size()
            text = page.get_textpage()
            for i in range(text.count_chars()):
                char = text.get_text_range(i, 1)
                if not char.strip():
                    continue
                left, bottom, right, top = text.get_charbox(i)
                if (
                    left < margin_pt
                    or bottom < margin_pt
                    or right > width - margin_pt
                    or top > height - margin_pt
                ):
                    start = max(0, i - 40)
                    outside.append((index, text.get_text_range(start, i - start + 1)))
    finally:
        pdf.close()
    return outside


def test_d10_every_line_of_the_report_lies_inside_the_page(predict_folder, tmp_path):
    """D10: the first page's line on the grid stride and the measuring error ran past the right
    edge of the page and was clipped; so did long deposit rules. Every character of every page
    lies inside the page, with a margin."""
    import json

    import napari_metastasis
    from napari_metastasis.clinical.decision import rule_for_map, stamp_rule
    from napari_metastasis.clinical.staging import slide_stem

    bundled = Path(napari_metastasis.__file__).parent / "models/bundled/default/config.json"
    grid = PatchGrid(20000, 16000, 0.5, 0.5, patch_px=224, spacing_um=0.5)
    prob = ProbabilityMap.empty(grid)
    stamp_rule(prob, json.loads(bundled.read_text()))  # the bundled model's rule: a long source
    prob.values[:] = 0.1
    regions = [Region(1, shapely.box(2000, 2000, 4000, 3000), 2e5, 0.95, 0.9, 8)]
    summary = summarise_regions(
        regions,
        prob,
        slide="patient_009_node_0_scanned_again_at_40x_after_recutting.tif",
        stem="patient_009_node_0",
        threshold=0.5,
        model="default",
        rule=rule_for_map(prob, 0.5),
    )
    with OutputSet(predict_folder, summary.stem) as outputs:
        write_summary(outputs.folder, summary)
    out = tmp_path / "reports"
    stem = slide_stem(summary.slide)
    written = write_reports(predict_folder, out, cases={stem: "Mrs Y"})
    names = {p.name for p in written}
    assert {"patient_007.report.pdf", "other.report.pdf", "Mrs_Y.report.pdf"} <= names
    first_page = " ".join(_page_text(out / "Mrs_Y.report.pdf", 0).split())
    assert "Rule: hysteresis" in first_page, first_page
    for pdf_path in written:
        assert _text_outside_the_page(pdf_path) == [], pdf_path.name
    text = " ".join(_page_text(out / "patient_007.report.pdf", 0).split())
    # the long line is all there, wrapped
    assert "Grid stride: 112 µm. Measuring error" in text and "follow the grid cells)." in text


def test_the_line_on_unconfirmed_candidates_lies_inside_a_slide_page_with_deposits(tmp_path):
    """A slide with a confirmed deposit and candidates the decision did not confirm: the line
    that counts the candidates (three lines with the bundled model's rule) was set from just
    above the page's bottom edge downwards, and its last line was cut off (seen on the
    Camelyon-size node's report)."""
    import json

    import napari_metastasis
    from napari_metastasis.clinical.decision import stamp_rule
    from napari_metastasis.pipeline.answer import answer_slide

    bundled = Path(napari_metastasis.__file__).parent / "models/bundled/default/config.json"
    grid = PatchGrid(20000, 16000, 0.5, 0.5, patch_px=160, spacing_um=0.5)  # 80 µm cells
    prob = ProbabilityMap.empty(grid)
    stamp_rule(prob, json.loads(bundled.read_text()))  # 2 seeds >= 0.9 and 6 patches
    prob.values[:] = 0.1
    prob.values[10:14, 10:14] = 0.95  # a confirmed deposit
    for row in range(30, 80, 10):
        prob.values[row, 40] = 0.95  # single seed patches: candidates, not confirmed
    answer = answer_slide(prob, 0.5)
    assert len(answer.confirmed) == 1 and len(answer.regions) == 6
    summary = answer.summary(slide="node.tif", stem="node", model="default")
    folder = tmp_path / "predict"
    with OutputSet(folder, summary.stem) as outputs:
        write_summary(outputs.folder, summary)
    written = write_reports(folder, tmp_path / "reports")
    (pdf_path,) = written
    text = " ".join(_page_text(pdf_path, 1).split())
    assert "5 candidate regions (with a seed patch) not confirmed" in text
    assert "not in the verdict, all in node.summary.json." in text
    assert _text_outside_the_page(pdf_path) == []


def _negative_patient(folder, rule) -> Path:
    """Five negative nodes of one patient whose summaries name ``rule`` (a DecisionRule)."""
    from napari_metastasis.clinical.decision import DecisionRule

    assert isinstance(rule, DecisionRule)
    summaries = [_summary(f"patient_009_node_{node}.tif", []) for node in range(5)]
    for s in summaries:
        s.decision = rule.to_dict()
    folder.mkdir(parents=True)
    return _write_run(folder, summaries)


def test_a_rule_that_cannot_confirm_itc_says_so_and_pn0_does_not_claim_none_were_found(tmp_path):
    """A negative verdict from a rule that needs 6 patches of 112 µm cannot exclude isolated
    tumour cells: the summary, and the report's pN0 line, say so (the report used to read "no
    metastasis or isolated tumour cells found"); a rule of one patch can see them and says
    nothing."""
    import json

    from napari_metastasis.clinical.decision import DecisionRule

    blind = DecisionRule(0.9, 2, 6, source="test")
    folder = _negative_patient(tmp_path / "blind", blind)
    data = json.loads((folder / "patient_009_node_0.summary.json").read_text())
    assert data["itc_assessed"] is False
    assert "Isolated tumour cells are not assessed" in data["limitation"]
    assert "at least 6 patches of 112 µm" in data["limitation"]
    write_reports(folder, tmp_path / "blind-reports", date=dt.date(2026, 12, 7))
    text = " ".join(_page_text(tmp_path / "blind-reports" / "patient_009.report.pdf", 0).split())
    assert "pN0" in text
    assert "no metastasis or isolated tumour cells found" not in text
    assert "isolated tumour cells not assessed" in text
    assert "pN0 does not exclude pN0(i+)" in text
    # the note takes lines of its own: every line still lies inside the page
    assert _text_outside_the_page(tmp_path / "blind-reports" / "patient_009.report.pdf") == []

    seeing = DecisionRule(0.9, 1, 1, source="test")
    folder = _negative_patient(tmp_path / "seeing", seeing)
    data = json.loads((folder / "patient_009_node_0.summary.json").read_text())
    assert data["itc_assessed"] is True and data["limitation"] == ""
    write_reports(folder, tmp_path / "seeing-reports", date=dt.date(2026, 12, 7))
    text = " ".join(_page_text(tmp_path / "seeing-reports" / "patient_009.report.pdf", 0).split())
    assert "no metastasis or isolated tumour cells found" in text


def test_a_staged_pn0_patient_carries_its_rules_itc_note_and_others_none(tmp_path):
    """``stage_run`` gives each pN0 patient the note of its slides' rule once (what ``predict``
    prints), from the summaries it staged (not read again); a patient with a deposit, or a rule
    that can see isolated tumour cells, has none."""
    from napari_metastasis.clinical.decision import DecisionRule
    from napari_metastasis.clinical.summary import stage_run

    def staged(name, rule, boxes_um):
        summaries = [
            _summary(f"{name}_node_{node}.tif", boxes_um if node == 0 else []) for node in range(5)
        ]
        for s in summaries:
            s.decision, s.patches = rule.to_dict(), 1000
        (tmp_path / name).mkdir()
        _write_run(tmp_path / name, summaries)
        slides = [f"{s.slide}" for s in summaries]
        patients, unstaged = stage_run(slides, [s.stem for s in summaries], [], tmp_path / name)
        assert unstaged == [] and len(patients) == 1
        return patients[0]

    blind = DecisionRule(0.9, 2, 6, source="test")
    negative = staged("patient_009", blind, [])
    assert negative.stage == "pN0" and negative.notes == (blind.itc_note(112.0),)
    assert negative.notes[0].startswith("Isolated tumour cells are not assessed")
    assert staged("patient_010", DecisionRule(0.9, 1, 1, source="test"), []).notes == ()
    macro = staged("patient_011", blind, [(2000, 2000, 5000, 4000)])
    assert macro.stage == "pN1" and macro.notes == ()
