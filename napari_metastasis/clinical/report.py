"""The PDF report: one file per patient, for the pathologist's desk.

Page 1 is the answer: the patient's pN stage, each node slide's verdict and largest deposit, the
model, threshold, grid stride and the measuring error that follows from it, the date, and a plain
line saying that this is research software, not a diagnosis. Then one page per slide: its thumbnail
with the probability heatmap (``<stem>.heatmap.png``, written by ``predict``) and the confirmed
deposits numbered as in the table below it (area, greatest dimension, category, probabilities);
candidate regions the deposit decision did not confirm are counted under the table, with the rule
that decided (:mod:`napari_metastasis.clinical.decision`): they make no verdict and no stage.

Everything comes from the ``<stem>.summary.json`` files (:mod:`napari_metastasis.clinical.summary`), so a
report can be made again at any time without the slides or the model. Pages are drawn with
matplotlib (no pyplot: safe in a worker thread) and written with its PdfPages, atomically.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from napari_metastasis.maps.contours import Region
    from napari_metastasis.maps.probability import ProbabilityMap

from napari_metastasis.clinical.staging import (
    CATEGORY_COLOURS,
    CATEGORY_LABELS,
    CATEGORY_TINTS,
    Deposit,
    PatientStage,
    format_mm,
    incomplete_sentence,
    read_stages,
    slide_stem,
)
from napari_metastasis.clinical.summary import (
    DISCLAIMER,
    STAGES_FILE,
    SUMMARY_SUFFIX,
    SlideSummary,
    check_stages,
    patient_stages,
    read_summaries,
)
from napari_metastasis.outputs.atomic import atomic_path
from napari_metastasis.outputs.output_set import OutputSet, require_complete

A4_PORTRAIT = (8.27, 11.69)  # inches
#: Points per inch (matplotlib measures text in points).
POINTS_PER_INCH = 72.0
#: Left and right margins of the summary page's text, and of the slide pages' (page fractions).
SUMMARY_MARGINS = (0.08, 0.92)
SLIDE_MARGINS = (0.06, 0.94)
#: A wrapped line goes on after this indent.
CONTINUATION = "   "
#: Where a slide page's deposit table starts (its top) and its foot line ends (its bottom), as
#: page fractions: the foot at least 18 pt above the page's edge, which a printer may not print.
TABLE_TOP = 0.40
FOOT_Y = 0.035
#: A row of the deposit table, and the line under it that counts the deposits not listed (page
#: fractions: 14 pt and 17 pt, for 8 pt text)
ROW_HEIGHT = 0.0166
NOTE_HEIGHT = 0.02
#: The patient page's table of slides: its top and the height of a row (page fractions).
SUMMARY_TABLE_TOP = 0.78
SUMMARY_ROW_HEIGHT = 0.025
#: Regions listed on a slide page; the rest are counted (all are in the summary JSON).
MAX_TABLE_ROWS = 22
REPORT_SUFFIX = ".report.pdf"
#: The patient reports of one ``report`` run are one set: ``reports.outputs.json``.
REPORTS_STEM = "reports"

STAGE_MEANINGS = {
    "pN0": "no metastasis or isolated tumour cells found",
    "pN0(i+)": "isolated tumour cells only (none larger than 0.2 mm)",
    "pN1mi": "micrometastases (larger than 0.2 mm, none larger than 2 mm)",
    "pN1": "metastases in 1 to 3 nodes, at least one macrometastasis (larger than 2 mm)",
    "pN2": "metastases in 4 to 9 nodes, at least one macrometastasis (larger than 2 mm)",
}
#: pN0's meaning when the deposit rule cannot confirm isolated tumour cells (its itc_note).
PN0_ITC_NOT_ASSESSED = "no micro- or macrometastasis found; isolated tumour cells not assessed"


def write_patient_report(
    path: str | Path,
    patient: PatientStage,
    summaries: Sequence[SlideSummary],
    folder: str | Path,
    *,
    date: dt.date | None = None,
) -> Path:
    """Write the report of one patient: ``summaries`` are its slides (in ``patient.slides`` order),
    ``folder`` holds their heatmaps."""
    path = Path(path)
    date = date or dt.date.today()
    with atomic_path(path) as tmp, PdfPages(tmp) as pdf:
        pdf.savefig(_summary_page(patient, summaries, date))
        for summary in summaries:
            pdf.savefig(_slide_page(patient, summary, Path(folder)))
        info = pdf.infodict()
        info["Title"] = f"{patient.patient}: " + (
            "not staged (incomplete)" if patient.missing else patient.stage
        )
        info["Subject"] = "Lymph-node metastasis staging (research use, not a diagnosis)"
        info["Creator"] = "napari-metastasis"
    return path


def write_reports(
    folder: str | Path,
    out: str | Path | None = None,
    *,
    case: str | None = None,
    cases: Mapping[str, str] | None = None,
    date: dt.date | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[Path]:
    """One report per patient of a predict output ``folder``, written to ``out`` (default: the
    folder). Patients are grouped by ``case``/``cases`` if given, else as the folder's
    ``stages.csv`` records, else by Camelyon17 names (see :func:`clinical.group_patients`).
    A Camelyon17 patient with node slides missing gets a report that says so instead of a stage,
    and one line to ``warn``."""
    folder = Path(folder)
    out = Path(out) if out is not None else folder
    summaries = read_summaries(folder)
    for summary in summaries:  # nothing is reported from a broken or half-moved set
        require_complete(folder, summary.stem)
    sources = [f"{s.stem}{SUMMARY_SUFFIX}" for s in summaries]
    sources += [
        f"{s.stem}.heatmap.png" for s in summaries if (folder / f"{s.stem}.heatmap.png").exists()
    ]
    if case is None and cases is None and (folder / STAGES_FILE).is_file():
        check_stages(folder / STAGES_FILE)
        sources.append(STAGES_FILE)
        cases = read_stages(folder / STAGES_FILE).cases()
        order = {key: i for i, key in enumerate(cases)}  # patients as the file lists them
        summaries.sort(key=lambda s: order.get(slide_stem(s.slide), len(order)))
    by_slide = {s.slide: s for s in summaries}
    patients = patient_stages(summaries, case=case, cases=cases)
    # One set for the run's reports (reports.outputs.json), made from the files above: all of
    # them or none, and stale once a slide's set changes.
    depends = sources if out.resolve() == folder.resolve() else []
    with OutputSet(out, REPORTS_STEM, depends_on=depends) as outputs:
        for patient in patients:
            if patient.missing and warn is not None:
                warn(incomplete_sentence(patient.patient, patient.missing))
            slides = [by_slide[name] for name, _ in patient.slides]
            name = report_name(patient.patient)
            write_patient_report(outputs.path(name), patient, slides, folder, date=date)
    return [out / report_name(patient.patient) for patient in patients]


def write_slide_files(
    folder: str | Path,
    slide_path: str | Path,
    prob_map: ProbabilityMap,
    regions: Sequence[Region],
    *,
    threshold: float,
    stem: str | None = None,
) -> SlideSummary:
    """What the report needs of one slide, from an analysis held in memory (the viewer's): its
    heatmap and ``<stem>.summary.json`` in ``folder``, as ``predict`` writes them."""
    from napari_metastasis.clinical.summary import summarise_regions, write_summary
    from napari_metastasis.maps.heatmap import render_heatmap, save_heatmap
    from napari_metastasis.slides.slide import Slide

    folder = Path(folder)
    stem = stem or slide_stem(slide_path)
    with Slide(slide_path) as slide:
        image = render_heatmap(slide, prob_map, regions)
        name = slide.requested_path.name
    summary = summarise_regions(
        regions,
        prob_map,
        slide=name,
        stem=stem,
        threshold=threshold,
        model=prob_map.model_name,
        slide_path=str(slide_path),
    )
    with OutputSet(folder, stem) as outputs:  # a set as predict's, so `report FOLDER` reads it
        save_heatmap(outputs.path(f"{stem}.heatmap.png"), image)
        write_summary(outputs.folder, summary)  # type: ignore[arg-type]
    return summary


def write_case_report(
    folder: str | Path, patient: str, summaries: Sequence[SlideSummary], date: dt.date | None = None
) -> Path:
    """The report of one patient whose slides' files (:func:`write_slide_files`) are in ``folder``.

    A Camelyon17 patient (``patient_<id>``, its slides ``patient_<id>_node_<n>``) lacking node slides
    is reported "not staged": a stage from some of its nodes could understate it."""
    stage = PatientStage.from_slides(
        patient, [(s.slide, s.verdict.category) for s in summaries], check_nodes=True
    )
    folder = Path(folder)
    return write_patient_report(folder / report_name(patient), stage, summaries, folder, date=date)


def report_name(patient: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_.()" else "_" for c in patient)
    return f"{safe}{REPORT_SUFFIX}"


# --- pages ------------------------------------------------------------------------------------
def _page() -> Figure:
    return Figure(figsize=A4_PORTRAIT)


def _summary_page(
    patient: PatientStage, summaries: Sequence[SlideSummary], date: dt.date
) -> Figure:
    fig = _page()
    itc_notes = sorted({note for s in summaries if (note := s.itc_note())})
    fig.text(0.08, 0.95, f"Patient {patient.patient}", fontsize=18, weight="bold", va="top")
    fig.text(0.08, 0.915, "Lymph-node metastases: size and pN stage", fontsize=11, va="top")
    if patient.missing:  # never a stage from some of the nodes without saying so
        fig.text(0.08, 0.87, "Not staged", fontsize=34, weight="bold", va="top", color="#a01010")
        _text_lines(
            fig,
            SUMMARY_MARGINS,
            0.815,
            f"Incomplete: {', '.join(patient.missing)} missing. The {len(patient.slides)} nodes "
            f"present alone give {patient.stage}; the missing node may raise it.",
            fontsize=11,
            color="#a01010",
        )
    else:
        fig.text(0.08, 0.87, patient.stage, fontsize=34, weight="bold", va="top", color="#222222")
        meaning = STAGE_MEANINGS[patient.stage]
        if patient.stage == "pN0" and itc_notes:  # the rule could not have seen them
            meaning = PN0_ITC_NOT_ASSESSED
        fig.text(0.08, 0.815, meaning, fontsize=11, va="top")

    rows = []
    for summary in summaries:
        verdict = summary.verdict
        rows.append(
            [
                summary.slide,
                verdict.label,
                format_mm(verdict.greatest_dimension_mm) if verdict.largest else "—",
                str(len(summary.confirmed_deposits)),
                str(len(summary.unconfirmed)),
            ]
        )
    # the table as tall as its rows, and the notes right under it (a fixed table box left the
    # notes too little room when a rule needed three lines and a limitation two more)
    table_height = (len(rows) + 1) * SUMMARY_ROW_HEIGHT
    ax = fig.add_axes((0.08, SUMMARY_TABLE_TOP - table_height, 0.84, table_height))
    ax.axis("off")
    if rows:
        table = ax.table(
            cellText=rows,
            colLabels=["slide", "verdict", "largest deposit", "deposits", "not confirmed"],
            colWidths=[0.33, 0.23, 0.18, 0.1, 0.16],
            bbox=Bbox.from_bounds(0.0, 0.0, 1.0, 1.0),
            cellLoc="left",
        )
        table.auto_set_font_size(False)
        table.set_fontsize(9)
        for i, summary in enumerate(summaries, start=1):
            table[i, 1].set_facecolor(CATEGORY_TINTS[summary.verdict.category])

    models = sorted({s.model for s in summaries if s.model}) or ["unknown"]
    thresholds = sorted({s.threshold for s in summaries})
    strides = sorted({s.stride_um for s in summaries})
    errors = sorted({s.measuring_error_mm for s in summaries})
    rules = sorted({s.rule_text() for s in summaries if s.decision}) or [
        "none recorded (every region counts as a deposit)"
    ]
    lines = [
        f"Model: {', '.join(models)}",
        f"Threshold: {', '.join(f'{t:g}' for t in thresholds)} (tumour probability of a region)",
        f"Grid stride: {', '.join(f'{s:g} µm' for s in strides)}. Measuring error of a greatest "
        f"dimension: about ± {', '.join(f'{e * 1000:g} µm' for e in errors)} (one stride: region "
        "outlines follow the grid cells).",
        "Greatest dimension: maximum Feret diameter of the region's outline. Categories (AJCC 8th "
        "edition):",
        "isolated tumour cells ≤ 0.2 mm, micrometastasis > 0.2 mm and ≤ 2 mm, macrometastasis > 2 mm.",
        "pN stage by the Camelyon17 rules (one slide per lymph node; ITC do not count as involved).",
        "Deposit decision: only confirmed deposits count (candidates are listed apart). Rule:",
        *(f"   {part}" for rule in rules for part in _split_source(rule)),
        *itc_notes,
        f"Report date: {date.isoformat()}",
    ]
    # every line fits between the margins (a long one wraps), and the disclaimer stays below
    # the last of them however many there are
    top = SUMMARY_TABLE_TOP - table_height - 0.03
    bottom = _text_lines(fig, SUMMARY_MARGINS, top, lines, fontsize=9, spacing=0.025)
    _text_lines(
        fig,
        SUMMARY_MARGINS,
        min(0.12, bottom - 0.02),
        DISCLAIMER,
        fontsize=11,
        weight="bold",
        color="#a01010",
    )
    fig.text(0.08, 0.04, "napari-metastasis", fontsize=8, color="#777777")
    return fig


def _slide_page(patient: PatientStage, summary: SlideSummary, folder: Path) -> Figure:
    fig = _page()
    verdict = summary.verdict
    y = _text_lines(fig, SLIDE_MARGINS, 0.965, summary.slide, fontsize=13, weight="bold")
    y = _text_lines(
        fig,
        SLIDE_MARGINS,
        max(y, 0.94),
        verdict.sentence(),
        fontsize=10,
        color=CATEGORY_COLOURS[verdict.category],
        weight="bold",
    )
    staged = "not staged (incomplete)" if patient.missing else patient.stage
    y = _text_lines(fig, SLIDE_MARGINS, max(y, 0.922), f"patient {patient.patient}, {staged}")
    top = min(0.91, y - 0.005)  # the picture starts below the heading, however many lines
    ax = fig.add_axes((0.06, 0.42, 0.88, top - 0.42))
    ax.set_axis_off()
    heatmap = folder / f"{summary.stem}.heatmap.png"
    if heatmap.is_file():
        _draw_thumbnail(ax, heatmap, summary)
    else:
        ax.text(0.5, 0.5, f"no heatmap ({heatmap.name} missing)", ha="center", va="center")

    deposits = sorted(summary.confirmed_deposits, key=lambda d: d.id)
    candidates = _candidates_line(summary)
    if not deposits:
        tax = fig.add_axes((0.06, 0.05, 0.88, 0.35))
        tax.set_axis_off()
        tax.text(0, 0.95, _table_text(summary.deposits), fontsize=10, va="top")
        if candidates:
            tax.text(0, 0.87, _fit(candidates, 8, _column_pt(SLIDE_MARGINS)), fontsize=8, va="top")
        return fig
    # the line on the candidates at the foot of the page, set upwards from the bottom margin
    # (set downwards from under the table, its last lines fell off the page); the table above it
    bottom = FOOT_Y
    if candidates:
        lines = _fit_lines(candidates, 8, _column_pt(SLIDE_MARGINS))
        fig.text(SLIDE_MARGINS[0], FOOT_Y, "\n".join(lines), fontsize=8, va="bottom")
        bottom += len(lines) * _line_step(8) + 0.01
    space = TABLE_TOP - bottom
    # as many of the largest deposits as the space holds (a row and the header each ROW_HEIGHT),
    # leaving a line for the count of those not listed
    fits = int(space / ROW_HEIGHT) - 1
    n_rows = min(len(deposits), MAX_TABLE_ROWS, fits)
    if n_rows < len(deposits):
        n_rows = min(n_rows, int((space - NOTE_HEIGHT) / ROW_HEIGHT) - 1)
    tax = fig.add_axes((0.06, bottom, 0.88, space))
    tax.set_axis_off()
    shown = sorted(deposits, key=lambda d: -d.greatest_dimension_mm)[:n_rows]
    shown.sort(key=lambda d: d.id)
    rows = [
        [
            str(d.id),
            f"{d.area_mm2:.4f}",
            f"{d.greatest_dimension_mm:.3f}",
            CATEGORY_LABELS[d.category],
            _prob(d.max_prob),
            _prob(d.mean_prob),
        ]
        for d in shown
    ]
    height = (len(rows) + 1) * ROW_HEIGHT / space  # of the axes: the rows never reach the foot
    table = tax.table(
        cellText=rows,
        colLabels=["region", "area (mm²)", "greatest dim. (mm)", "category", "max p", "mean p"],
        colWidths=[0.09, 0.15, 0.2, 0.28, 0.12, 0.12],
        bbox=Bbox.from_bounds(0.0, 1.0 - height, 1.0, height),
        cellLoc="right",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for i, d in enumerate(shown, start=1):
        table[i, 3].set_facecolor(CATEGORY_TINTS[d.category])
    if len(deposits) > len(shown):
        tax.text(
            0,
            1.0 - height - 0.3 * NOTE_HEIGHT / space,
            f"{len(deposits) - len(shown)} smaller deposits not listed "
            f"(all are in {summary.stem}.summary.json).",
            fontsize=8,
            va="top",
        )
    return fig


def _line_step(fontsize: float) -> float:
    """The distance between two lines of ``fontsize`` text, as a fraction of the page's height."""
    return fontsize * 1.35 / (A4_PORTRAIT[1] * POINTS_PER_INCH)


def _column_pt(margins: tuple[float, float]) -> float:
    """The width between a page's margins, in points."""
    return (margins[1] - margins[0]) * A4_PORTRAIT[0] * POINTS_PER_INCH


def _fit_lines(text: str, fontsize: float, width_pt: float, weight: str = "normal") -> list[str]:
    """``text`` as lines no wider than ``width_pt`` when set at ``fontsize``: broken between
    words (a word longer than the line stands alone), each following line indented."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    measure = TextToPath().get_text_width_height_descent
    font = FontProperties(size=fontsize, weight=weight)

    def fits(line: str) -> bool:
        return measure(line, font, ismath=False)[0] <= width_pt

    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        lead = (
            ""
            if not paragraph.startswith(" ")
            else paragraph[: len(paragraph) - len(paragraph.lstrip())]
        )
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else f"{lead}{word}"
            if line and not fits(candidate):
                lines.append(line)
                candidate = f"{lead}{CONTINUATION}{word}"
            line = candidate
        lines.append(line)
    return lines


def _fit(text: str, fontsize: float, width_pt: float, weight: str = "normal") -> str:
    return "\n".join(_fit_lines(text, fontsize, width_pt, weight))


def _text_lines(
    fig: Figure,
    margins: tuple[float, float],
    y: float,
    text: str | Sequence[str],
    *,
    fontsize: float = 9,
    spacing: float | None = None,
    weight: str = "normal",
    **style: Any,
) -> float:
    """Set ``text`` (one string or several lines) from ``y`` (page fraction, top) down, each line
    wrapped to fit between ``margins``; returns the page fraction below the last line."""
    width = _column_pt(margins)
    step = spacing or _line_step(fontsize)
    for line in [text] if isinstance(text, str) else text:
        for part in _fit_lines(line, fontsize, width, weight):
            fig.text(margins[0], y, part, fontsize=fontsize, weight=weight, va="top", **style)
            y -= step
    return y


def _draw_thumbnail(ax: Axes, heatmap: Path, summary: SlideSummary) -> None:
    from PIL import Image

    with Image.open(heatmap) as im:
        image = np.asarray(im.convert("RGB"))
    ax.imshow(image, interpolation="antialiased")
    width, height = summary.dimensions_px
    sx, sy = image.shape[1] / max(width, 1), image.shape[0] / max(height, 1)
    for d in summary.confirmed_deposits:  # candidates stay unnumbered (grey outlines)
        if d.centroid_px is None:
            continue
        ax.annotate(
            str(d.id),
            (d.centroid_px[0] * sx, d.centroid_px[1] * sy),
            fontsize=8,
            weight="bold",
            ha="center",
            va="center",
            color="white",
            bbox={"boxstyle": "circle,pad=0.2", "fc": CATEGORY_COLOURS[d.category], "ec": "white"},
        )
    # A scale bar along the bottom-left: the longest round length under a quarter of the width.
    mm_px = 1000.0 / summary.mpp[0] * sx
    lengths = [b for b in (10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05) if b * mm_px <= image.shape[1] / 4]
    bar_mm = lengths[0] if lengths else 0.05
    bar = bar_mm * mm_px
    y = image.shape[0] * 0.96
    x0 = image.shape[1] * 0.03
    ax.plot([x0, x0 + bar], [y, y], color="black", linewidth=3, solid_capstyle="butt")
    ax.text(x0, y - image.shape[0] * 0.015, f"{bar_mm:g} mm", fontsize=8, va="bottom")


def _split_source(rule: str) -> list[str]:
    """A rule's line as two (its numbers, then its source in brackets): one is too wide."""
    numbers, sep, source = rule.partition(" (")
    return [numbers, f"({source}"] if sep else [numbers]


def _table_text(deposits: Sequence[Deposit]) -> str:
    """The line in place of the deposit table when nothing is confirmed: it must agree with the
    verdict line, which counts regions above the threshold even without a seed patch."""
    return "No confirmed deposit." if deposits else "No region above the threshold."


def _candidates_line(summary: SlideSummary) -> str:
    """How many candidates the decision did not confirm, and by which rule ("" when none)."""
    n = len(summary.unconfirmed)
    if not n:
        return ""
    rule = summary.rule_text() or "the deposit decision"
    return (
        f"{n} candidate region{'s' * (n != 1)} (with a seed patch) not confirmed as deposits "
        f"({rule}); not in the verdict, all in {summary.stem}.summary.json."
    )


def _prob(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"
