"""The clinical answer: each deposit's size, the slide's category, the patient's pN stage.

Pathologists stage breast-cancer lymph nodes by the size of the largest tumour deposit (AJCC 8th
edition), and Camelyon17 scores algorithms the same way. This module turns regions (level-0 pixel
polygons, from :mod:`napari_metastasis.maps.contours` or drawn annotations) into those numbers; it knows
nothing of models, files or napari.

* **Greatest dimension**: the maximum Feret diameter of a deposit's outline in µm, what a pathologist
  measures with a ruler. The outline is scaled to µm first (x by mpp_x, y by mpp_y, so anisotropic
  pixels are measured right), then the largest distance between two vertices of its convex hull is
  taken: the farthest pair of points of any shape lies on its hull, so holes change nothing.
* **Category** of a deposit by its greatest dimension: isolated tumour cells (``itc``) <= 0.2 mm,
  micrometastasis (``micro``) > 0.2 and <= 2 mm, macrometastasis (``macro``) > 2 mm. Sizes within
  1 nm of a boundary count as on it, so a 200 µm deposit measured as 200.00000000003 µm stays ITC.
* **Slide verdict**: ``negative`` without deposits, else the category of its largest deposit
  (Camelyon17's slide labels negative / itc / micro / macro). Only *confirmed* deposits count: a
  candidate region that the deposit decision (:mod:`napari_metastasis.clinical.decision`) did not
  confirm is kept, measured and listed, but makes no verdict and no stage.
* **pN stage** of a patient from one slide per lymph node, by Camelyon17's rules: pN0 (no ITC, micro
  or macro), pN0(i+) (ITC only), pN1mi (micro, no macro), pN1 (metastases, micro or macro, in 1-3
  nodes, at least one macro), pN2 (4-9 nodes, at least one macro). ITC do not count as involved nodes.
  Camelyon17 has these five stages only: 10 or more involved nodes (AJCC pN3) also come out as pN2.
* **Patients**: slides named ``patient_<id>_node_<n>`` (Camelyon17) group by ``patient_<id>``; an
  explicit case name or a slide -> patient table takes precedence; any other slide is its own patient.

The measure is no finer than the probability map it comes from: a region's outline follows whole grid
cells, so its greatest dimension is off by up to about one grid stride (:func:`measuring_error_mm`).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from shapely.geometry import LineString
from shapely.geometry.base import BaseGeometry

from napari_metastasis.annotations.sizes import Mpp, mpp_yx, to_um
from napari_metastasis.errors import MetastasisError
from napari_metastasis.outputs.csv_cells import read_cell, text_cell

if TYPE_CHECKING:
    from napari_metastasis.clinical.decision import Decision

#: Slide categories (Camelyon17's slide labels), from least to most severe.
CATEGORIES = ("negative", "itc", "micro", "macro")
#: Camelyon17's five pN stages, in the order its quadratic-weighted kappa uses.
PN_STAGES = ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")
#: AJCC 8th edition size limits (greatest dimension, mm).
ITC_MAX_MM = 0.2
MICRO_MAX_MM = 2.0
#: Sizes this close to a limit count as on it (1 nm: far below any slide's pixel).
_TOLERANCE_MM = 1e-6

CATEGORY_LABELS = {
    "negative": "Negative",
    "itc": "Isolated tumour cells",
    "micro": "Micrometastasis",
    "macro": "Macrometastasis",
}
#: Colours for the categories (RGB hex), shared by the report and the widget.
CATEGORY_COLOURS = {
    "negative": "#4d9a4d",
    "itc": "#b89400",
    "micro": "#e07b1f",
    "macro": "#c8283c",
}


def _faded(hex_colour: str, strength: float = 0.35) -> str:
    rgb = [int(hex_colour.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)]
    return "#" + "".join(f"{round(255 - (255 - c) * strength):02x}" for c in rgb)


#: The same colours faded, as backgrounds of table cells (report, region list, case list).
CATEGORY_TINTS = {name: _faded(colour) for name, colour in CATEGORY_COLOURS.items()}

_CAMELYON_NAME = re.compile(r"^(patient_\d+)_node_(\d+)$", re.IGNORECASE)
#: Camelyon17 patients have five lymph-node slides, ``patient_<id>_node_0`` ... ``_node_4``.
CAMELYON17_NODES = 5


class StagingError(MetastasisError):
    """A case list or stages file that cannot be read, or categories that are not Camelyon17's."""


# --- measures ---------------------------------------------------------------------------------
def greatest_dimension_um(geometry: BaseGeometry, mpp: Mpp) -> float:
    """Maximum Feret diameter of ``geometry`` (level-0 px) in µm; 0 for an empty geometry."""
    segment = greatest_dimension_segment(geometry, mpp)
    if segment is None:
        return 0.0
    (x0, y0), (x1, y1) = to_um(LineString(segment), mpp).coords
    return float(math.hypot(x1 - x0, y1 - y0))


def greatest_dimension_segment(
    geometry: BaseGeometry, mpp: Mpp
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The two level-0 (x, y) points of ``geometry`` farthest apart in µm (the ends of its maximum
    Feret diameter, where a ruler would lie); None for an empty geometry or a single point."""
    if geometry.is_empty:
        return None
    hull = geometry.convex_hull  # an affine scaling maps hull vertices to hull vertices
    px = np.asarray(
        hull.exterior.coords if hull.geom_type == "Polygon" else hull.coords, dtype=np.float64
    )
    if len(px) < 2:
        return None
    my, mx = mpp_yx(mpp)
    um = px * (mx, my)
    # A hull has few vertices (a region's hull: a few dozen), so all pairs are cheap.
    dist = ((um[:, None, :] - um[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    if dist[i, j] == 0:
        return None
    return (float(px[i, 0]), float(px[i, 1])), (float(px[j, 0]), float(px[j, 1]))


def deposit_category(greatest_dimension_mm: float) -> str:
    """``itc`` (<= 0.2 mm), ``micro`` (<= 2 mm) or ``macro`` (> 2 mm), AJCC 8th edition."""
    if not math.isfinite(greatest_dimension_mm) or greatest_dimension_mm < 0:
        raise ValueError(f"a deposit size must be a positive number, got {greatest_dimension_mm}")
    if greatest_dimension_mm <= ITC_MAX_MM + _TOLERANCE_MM:
        return "itc"
    if greatest_dimension_mm <= MICRO_MAX_MM + _TOLERANCE_MM:
        return "micro"
    return "macro"


def is_candidate(confirmed: bool, seed_patches: int | None) -> bool:
    """A candidate deposit: confirmed, or holding at least one seed patch (hysteresis grows a
    deposit from its seeds; a region above the threshold without any seed is only the exploring
    view's contour, not evidence). Undecided regions (no seed count) count, as before."""
    return confirmed or seed_patches is None or seed_patches > 0


@dataclass(frozen=True)
class Deposit:
    """One region's clinical measures (sizes in mm, position in level-0 px)."""

    id: int
    area_mm2: float
    greatest_dimension_mm: float
    category: str
    max_prob: float | None = None
    mean_prob: float | None = None
    centroid_px: tuple[float, float] | None = None
    uid: str | None = None  # the region's id in the GeoJSON and the napari layer
    #: Whether the deposit decision confirmed it (True for undecided regions: drawn, older files).
    confirmed: bool = True
    decision_reason: str = ""  # the decision's sentence, e.g. "only 1 patch >= 0.95 (rule needs 2)"
    seed_patches: int | None = None

    @property
    def is_candidate(self) -> bool:
        return is_candidate(self.confirmed, self.seed_patches)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["centroid_px"] = list(self.centroid_px) if self.centroid_px else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> Deposit:
        centroid = data.get("centroid_px")
        return cls(
            id=int(data["id"]),
            area_mm2=float(data["area_mm2"]),
            greatest_dimension_mm=float(data["greatest_dimension_mm"]),
            category=_checked_category(str(data["category"])),
            max_prob=_optional_float(data.get("max_prob")),
            mean_prob=_optional_float(data.get("mean_prob")),
            centroid_px=(float(centroid[0]), float(centroid[1])) if centroid else None,
            uid=data.get("uid"),
            confirmed=bool(data.get("confirmed", True)),  # older summaries: all count, as before
            decision_reason=str(data.get("decision_reason") or ""),
            seed_patches=None if data.get("seed_patches") is None else int(data["seed_patches"]),
        )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def measure_deposit(
    geometry: BaseGeometry,
    mpp: Mpp,
    *,
    id: int = 1,
    max_prob: float | None = None,
    mean_prob: float | None = None,
    uid: str | None = None,
    decision: Decision | None = None,
) -> Deposit:
    """Area, greatest dimension and category of one region (level-0 px geometry); ``decision``
    (a :class:`~napari_metastasis.clinical.decision.Decision`, None: undecided) says if it counts."""
    greatest = greatest_dimension_um(geometry, mpp) / 1000.0
    centroid = geometry.centroid
    return Deposit(
        id=id,
        area_mm2=float(to_um(geometry, mpp).area) / 1e6,
        greatest_dimension_mm=greatest,
        category=deposit_category(greatest),
        max_prob=max_prob,
        mean_prob=mean_prob,
        centroid_px=None if centroid.is_empty else (float(centroid.x), float(centroid.y)),
        uid=uid,
        confirmed=True if decision is None else bool(decision.confirmed),
        decision_reason="" if decision is None else str(decision.reason),
        seed_patches=None if decision is None else int(decision.seed_patches),
    )


def measure_regions(regions: Iterable, mpp: Mpp) -> list[Deposit]:
    """:class:`~napari_metastasis.maps.contours.Region` objects (or anything with ``id``, ``polygon``,
    ``max_prob`` and ``mean_prob``; ``decision`` if decided) as deposits, in the regions' order."""
    return [
        measure_deposit(
            r.polygon,
            mpp,
            id=r.id,
            max_prob=float(r.max_prob),
            mean_prob=float(r.mean_prob),
            uid=getattr(r, "uid", None),
            decision=getattr(r, "decision", None),
        )
        for r in regions
    ]


def measuring_error_mm(step_um: float) -> float:
    """How far a greatest dimension may be off: about one grid stride (cells are all-or-nothing)."""
    return step_um / 1000.0


# --- slide verdict ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SlideVerdict:
    """A slide's category from its largest confirmed deposit, and that deposit."""

    category: str
    largest: Deposit | None
    #: Candidate regions (holding a seed patch) the deposit decision did not confirm.
    unconfirmed: int = 0
    #: Regions above the threshold without any seed patch (the exploring view only).
    below_seed: int = 0

    @property
    def greatest_dimension_mm(self) -> float:
        return self.largest.greatest_dimension_mm if self.largest else 0.0

    @property
    def label(self) -> str:
        return CATEGORY_LABELS[self.category]

    def sentence(self) -> str:
        """One line for a person: "Macrometastasis — largest deposit 3.1 mm"."""
        if self.largest is None:
            if self.unconfirmed:
                n = self.unconfirmed
                return (
                    f"Negative — no confirmed deposit ({n} candidate region{'s' * (n != 1)} "
                    "not confirmed)"
                )
            if self.below_seed:
                n = self.below_seed
                return (
                    f"Negative — no candidate deposit ({n} region{'s' * (n != 1)} above the "
                    "threshold without a seed patch)"
                )
            return "Negative — no deposit above the threshold"
        return f"{self.label} — largest deposit {format_mm(self.greatest_dimension_mm)}"


def slide_verdict(deposits: Sequence[Deposit]) -> SlideVerdict:
    """``negative`` without confirmed deposits, else the category of the confirmed one with the
    greatest dimension; candidates not confirmed are only counted."""
    confirmed = [d for d in deposits if d.confirmed]
    unconfirmed = sum(d.is_candidate for d in deposits) - len(confirmed)
    below_seed = sum(not d.is_candidate for d in deposits)
    if not confirmed:
        return SlideVerdict("negative", None, unconfirmed, below_seed)
    largest = max(confirmed, key=lambda d: (d.greatest_dimension_mm, d.area_mm2))
    return SlideVerdict(largest.category, largest, unconfirmed, below_seed)


def format_mm(value_mm: float) -> str:
    """A size as a pathologist writes it: 3.1 mm, 0.45 mm, 0.08 mm."""
    if value_mm >= 1:
        return f"{value_mm:.1f} mm"
    if value_mm >= 0.1:
        return f"{value_mm:.2f} mm"
    return f"{value_mm:.3f} mm"


# --- patient stage ----------------------------------------------------------------------------
def pn_stage(categories: Iterable[str]) -> str:
    """Camelyon17's pN stage from one category per node slide (see the module docstring)."""
    cats = [_checked_category(c) for c in categories]
    macro = cats.count("macro")
    involved = macro + cats.count("micro")  # ITC do not count as involved nodes
    if macro:
        return "pN1" if involved <= 3 else "pN2"
    if involved:
        return "pN1mi"
    if "itc" in cats:
        return "pN0(i+)"
    return "pN0"


def _checked_category(category: str) -> str:
    value = category.strip().lower()
    if value not in CATEGORIES:
        raise StagingError(
            f"unknown slide category {category!r}: expected one of {', '.join(CATEGORIES)}"
        )
    return value


# --- patients ---------------------------------------------------------------------------------
def slide_stem(path: str | Path) -> str:
    """A slide's name without folder and extension (a DICOM folder keeps its name)."""
    path = Path(path)
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.suffix and not path.is_dir() else name


def camelyon_patient(path: str | Path) -> str | None:
    """``patient_004`` for ``patient_004_node_4.tif``; None for any other name."""
    match = _CAMELYON_NAME.match(slide_stem(path))
    return match.group(1) if match else None


def missing_nodes(patient: str, slides: Iterable[str | Path]) -> tuple[str, ...]:
    """The Camelyon17 node slides (``patient_004_node_3``) a patient's slides lack.

    Camelyon17 stages a patient from all five of its nodes; a stage from four of them could
    understate it (the missing node may hold the macrometastasis). Only a patient whose slides are
    all Camelyon17 node slides of that patient is checked; any other grouping returns ().
    """
    nodes = set()
    for slide in slides:
        match = _CAMELYON_NAME.match(slide_stem(slide))
        if not match or match.group(1).lower() != patient.lower():
            return ()
        nodes.add(int(match.group(2)))
    return tuple(f"{patient}_node_{n}" for n in range(CAMELYON17_NODES) if n not in nodes)


def incomplete_sentence(patient: str, missing: Sequence[str]) -> str:
    """The one warning for a patient with missing node slides (CLI, report)."""
    have = CAMELYON17_NODES - len(missing)
    return (
        f"{patient}: incomplete, {', '.join(missing)} missing (Camelyon17 patients have "
        f"{CAMELYON17_NODES} nodes); not staged, since a stage from {have} of "
        f"{CAMELYON17_NODES} nodes could understate it"
    )


def read_cases(path: str | Path) -> dict[str, str]:
    """A ``slide,patient`` CSV (header optional) as {slide stem: patient}; slides by name or path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise StagingError(f"{path.name}: cannot read the case list ({exc.strerror})") from exc
    cases: dict[str, str] = {}
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and [c.lower() for c in cells[:2]] == ["slide", "patient"]:
            continue
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise StagingError(f"{path.name}, line {number}: expected 'slide,patient', got {row}")
        key = slide_stem(cells[0])
        if key in cases and cases[key] != cells[1]:
            raise StagingError(
                f"{path.name}, line {number}: slide {cells[0]} is listed for patients "
                f"{cases[key]} and {cells[1]}"
            )
        cases[key] = cells[1]
    return cases


def grouped_by_name(
    slides: Sequence[str | Path],
    *,
    case: str | None = None,
    cases: Mapping[str, str] | None = None,
) -> bool:
    """Whether :func:`group_patients` grouped these slides (one patient's) by Camelyon17 names."""
    if case:
        return False
    return not (cases and any(slide_stem(s) in cases for s in slides))


def group_patients(
    slides: Sequence[str | Path],
    *,
    case: str | None = None,
    cases: Mapping[str, str] | None = None,
) -> dict[str, list[str | Path]]:
    """{patient: its slides}, patients in the order their first slide comes.

    ``case`` makes every slide one patient; otherwise ``cases`` ({slide stem: patient}, see
    :func:`read_cases`) is asked first, then Camelyon17's ``patient_<id>_node_<n>`` names; any other
    slide is a patient of its own, named after the slide.
    """
    groups: dict[str, list[str | Path]] = {}
    for slide in slides:
        key = slide_stem(slide)
        if case:
            patient = case
        elif cases and key in cases:
            patient = cases[key]
        else:
            patient = camelyon_patient(slide) or key
        groups.setdefault(patient, []).append(slide)
    return groups


# --- stages.csv (Camelyon17 submission format) ------------------------------------------------
@dataclass(frozen=True)
class PatientStage:
    """One patient's stage and its slides' categories, as in a Camelyon17 stages file."""

    patient: str
    stage: str  # the stage its slides give; not the patient's when ``missing`` is not empty
    slides: tuple[tuple[str, str], ...]  # (slide file name, category)
    missing: tuple[str, ...] = ()  # Camelyon17 node slides the patient lacks (see missing_nodes)
    #: what the stage cannot say, once each: for a pN0 patient, that the deposit rule of its
    #: slides cannot see isolated tumour cells (pN0 may then hide pN0(i+)), where that holds
    notes: tuple[str, ...] = ()

    @classmethod
    def from_slides(
        cls, patient: str, slides: Sequence[tuple[str, str]], *, check_nodes: bool = False
    ) -> PatientStage:
        """``check_nodes``: the patient was grouped by Camelyon17 names, so it should have all
        five node slides (see :func:`missing_nodes`); a patient named by ``--case``/``--cases``
        has the nodes its pathologist gave."""
        slides = tuple((name, _checked_category(cat)) for name, cat in slides)
        missing = missing_nodes(patient, [name for name, _ in slides]) if check_nodes else ()
        return cls(patient, pn_stage(cat for _, cat in slides), slides, missing)

    @property
    def complete(self) -> bool:
        return not self.missing


def stages_csv(patients: Iterable[PatientStage]) -> str:
    """Camelyon17's submission format: ``patient,stage``, then per patient ``<patient>.zip,<pN>``
    followed by one ``<slide file name>,<category>`` row per slide."""
    lines = ["patient,stage"]
    for p in patients:
        lines.append(f"{text_cell(f'{p.patient}.zip')},{p.stage}")
        lines.extend(f"{text_cell(name)},{cat}" for name, cat in p.slides)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class StagesFile:
    """A stages file read back: patient stages and slide categories, keyed by name."""

    patients: dict[str, str]  # patient (without .zip) -> pN stage
    slides: dict[str, str]  # slide file name -> category
    members: dict[str, list[str]]  # patient -> the slide rows that follow its row

    def cases(self) -> dict[str, str]:
        """{slide stem: patient}, the grouping this file records (for :func:`group_patients`)."""
        return {slide_stem(s): p for p, slides in self.members.items() for s in slides}


def read_stages(path: str | Path) -> StagesFile:
    """Read a Camelyon17 stages file (ours or the challenge's reference)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:  # a name may hold a CR
            text = handle.read()
    except OSError as exc:
        raise StagingError(f"{path.name}: cannot read the stages file ({exc.strerror})") from exc
    patients: dict[str, str] = {}
    slides: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    current: str | None = None
    stage_names = {s.lower(): s for s in PN_STAGES}
    reader = csv.reader(io.StringIO(text, newline=""))
    for row in reader:
        number = reader.line_num
        cells = [read_cell(c.strip()) for c in row]
        if not any(cells):
            continue
        if number == 1 and [c.lower() for c in cells[:2]] == ["patient", "stage"]:
            continue
        if len(cells) < 2:
            raise StagingError(f"{path.name}, line {number}: expected 'name,stage', got {row}")
        name, value = cells[0], cells[1]
        if name.lower().endswith(".zip"):
            stage = stage_names.get(value.lower())
            if stage is None:
                raise StagingError(
                    f"{path.name}, line {number}: unknown pN stage {value!r} "
                    f"(expected one of {', '.join(PN_STAGES)})"
                )
            current = name[:-4]
            patients[current] = stage
            members.setdefault(current, [])
        else:
            try:
                slides[name] = _checked_category(value)
            except StagingError as exc:
                raise StagingError(f"{path.name}, line {number}: {exc}") from None
            if current is not None:
                members[current].append(name)
    if not patients and not slides:
        raise StagingError(f"{path.name}: no stages in the file")
    return StagesFile(patients, slides, members)
