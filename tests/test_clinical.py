"""Deposit sizes, AJCC categories, slide verdicts, pN stages and stages files, against hand-computed
answers."""

from __future__ import annotations

import math

import pytest
import shapely
from shapely import affinity
from shapely.geometry import Point

from napari_metastasis.clinical.staging import (
    PN_STAGES,
    Deposit,
    PatientStage,
    StagingError,
    camelyon_patient,
    deposit_category,
    greatest_dimension_segment,
    greatest_dimension_um,
    group_patients,
    measure_deposit,
    pn_stage,
    read_cases,
    read_stages,
    slide_verdict,
    stages_csv,
)
from napari_metastasis.slides.slide import Resolution

# Slides of different µm/px, as (mpp_x, mpp_y): 40x, 20x, and an anisotropic scanner.
SLIDE_MPPS = [(0.25, 0.25), (0.5, 0.5), (0.243, 0.5)]


def _disc_px(centre_um, diameter_um, mpp):
    """A disc of ``diameter_um`` µm drawn in level-0 px (an ellipse when pixels are not square)."""
    mx, my = mpp
    circle = Point(0, 0).buffer(0.5, quad_segs=64)  # 256 vertices, opposite pairs on the circle
    disc = affinity.scale(circle, diameter_um / mx, diameter_um / my, origin=(0, 0))
    return affinity.translate(disc, centre_um[0] / mx, centre_um[1] / my)


def _box_um(x0, y0, x1, y1, mpp):
    mx, my = mpp
    return shapely.box(x0 / mx, y0 / my, x1 / mx, y1 / my)


@pytest.mark.parametrize("mpp", SLIDE_MPPS)
def test_disc_greatest_dimension_is_its_diameter(mpp):
    disc = _disc_px((3000, 2000), 750.0, mpp)
    assert greatest_dimension_um(disc, Resolution(*mpp, "metadata")) == pytest.approx(750.0)
    deposit = measure_deposit(disc, (mpp[1], mpp[0]))  # (y, x) pairs, as napari's scale
    assert deposit.greatest_dimension_mm == pytest.approx(0.75)
    # A 256-gon inscribed in the circle: area (n/2) r² sin(2π/n).
    r = 375.0
    assert deposit.area_mm2 == pytest.approx(128 * r * r * math.sin(2 * math.pi / 256) / 1e6)
    assert deposit.category == "micro"


@pytest.mark.parametrize("mpp", SLIDE_MPPS)
def test_rectangle_greatest_dimension_is_its_diagonal(mpp):
    rect = _box_um(100, 100, 100 + 1800, 100 + 800, mpp)  # 1.8 x 0.8 mm
    gd = greatest_dimension_um(rect, Resolution(*mpp, "metadata"))
    assert gd == pytest.approx(math.hypot(1800, 800))  # 1969.8 µm: micro
    deposit = measure_deposit(rect, Resolution(*mpp, "metadata"))
    assert deposit.area_mm2 == pytest.approx(1.8 * 0.8)
    assert deposit.category == "micro"
    # A pixel rectangle is not a µm rectangle on an anisotropic slide: the diagonal uses both mpps.
    px = shapely.box(0, 0, 1000, 1000)
    assert greatest_dimension_um(px, Resolution(*mpp, "metadata")) == pytest.approx(
        math.hypot(1000 * mpp[0], 1000 * mpp[1])
    )


@pytest.mark.parametrize("mpp", SLIDE_MPPS)
def test_l_shape(mpp):
    # Γ of two 0.4 mm-wide arms, 3 mm long: µm corners (0,0) (3000,0) (3000,400) (400,400)
    # (400,3000) (0,3000). Hull vertices: all but (400,400); the farthest pair is (3000,0)-(0,3000)
    # = 3000 √2 µm (the other candidates: (0,0)-(3000,400) 3026.6, (3000,400)-(400,3000) 3677.0).
    ell = _box_um(0, 0, 3000, 400, mpp).union(_box_um(0, 0, 400, 3000, mpp))
    res = Resolution(*mpp, "metadata")
    assert greatest_dimension_um(ell, res) == pytest.approx(3000 * math.sqrt(2))
    deposit = measure_deposit(ell, res)
    assert deposit.area_mm2 == pytest.approx((3000 * 400 + 400 * 2600) / 1e6)
    assert deposit.category == "macro"
    # where the ruler lies: from the end of one arm to the end of the other (level-0 px)
    ends = sorted(greatest_dimension_segment(ell, res))
    assert ends == [
        pytest.approx((0, 3000 / mpp[1])),
        pytest.approx((3000 / mpp[0], 0)),
    ]


@pytest.mark.parametrize("mpp", SLIDE_MPPS)
def test_region_with_a_hole(mpp):
    outer = _box_um(0, 0, 1500, 900, mpp)
    hole = _box_um(300, 300, 1200, 600, mpp)
    ring = outer.difference(hole)
    assert len(ring.interiors) == 1
    res = Resolution(*mpp, "metadata")
    # The hole takes area, not length: the outer diagonal still spans the region.
    assert greatest_dimension_um(ring, res) == pytest.approx(math.hypot(1500, 900))
    assert measure_deposit(ring, res).area_mm2 == pytest.approx((1500 * 900 - 900 * 300) / 1e6)


def test_empty_and_degenerate_geometries():
    assert greatest_dimension_um(shapely.Polygon(), 0.5) == 0.0
    assert greatest_dimension_um(Point(3, 4), 0.5) == 0.0
    assert greatest_dimension_um(shapely.LineString([(0, 0), (30, 40)]), 2.0) == pytest.approx(100)
    # Two pieces: the farthest points of the whole set.
    pair = shapely.union_all([shapely.box(0, 0, 1, 1), shapely.box(9, 0, 10, 1)])
    assert greatest_dimension_um(pair, 1.0) == pytest.approx(math.hypot(10, 1))


def test_category_boundaries_are_exact():
    assert deposit_category(0.0) == "itc"
    assert deposit_category(0.2) == "itc"
    assert deposit_category(0.2001) == "micro"
    assert deposit_category(2.0) == "micro"
    assert deposit_category(2.0001) == "macro"
    with pytest.raises(ValueError):
        deposit_category(float("nan"))


@pytest.mark.parametrize("mpp", SLIDE_MPPS)
def test_boundaries_through_measured_shapes(mpp):
    res = Resolution(*mpp, "metadata")
    # 3-4-5 rectangles: diagonals of exactly 200 and 2000 µm, whatever the float path to them.
    assert measure_deposit(_box_um(0, 0, 120, 160, mpp), res).category == "itc"
    assert measure_deposit(_box_um(0, 0, 1200, 1600, mpp), res).category == "micro"
    assert measure_deposit(_box_um(0, 0, 1200, 1602, mpp), res).category == "macro"
    assert measure_deposit(_box_um(0, 0, 120, 162, mpp), res).category == "micro"


def _dep(gd_mm, id=1):
    return Deposit(id, gd_mm**2, gd_mm, deposit_category(gd_mm))


def test_slide_verdict_from_the_largest_deposit():
    verdict = slide_verdict([_dep(0.1, 1), _dep(3.14, 2), _dep(1.0, 3)])
    assert verdict.category == "macro" and verdict.largest.id == 2
    assert verdict.sentence() == "Macrometastasis — largest deposit 3.1 mm"
    assert slide_verdict([_dep(0.15), _dep(0.45, 2)]).sentence() == (
        "Micrometastasis — largest deposit 0.45 mm"
    )
    assert slide_verdict([_dep(0.08)]).category == "itc"
    none = slide_verdict([])
    assert none.category == "negative" and none.largest is None
    assert none.greatest_dimension_mm == 0.0
    assert none.sentence().startswith("Negative")


@pytest.mark.parametrize(
    ("nodes", "stage"),
    [
        ([], "pN0"),
        (["negative"] * 5, "pN0"),
        (["negative", "itc", "negative"], "pN0(i+)"),
        (["itc", "itc", "itc", "itc", "itc"], "pN0(i+)"),
        (["micro", "itc", "negative"], "pN1mi"),
        (["micro"] * 5, "pN1mi"),  # many micrometastases but no macro: still pN1mi
        (["macro"], "pN1"),
        (["macro", "micro", "micro"], "pN1"),  # 3 involved nodes
        (["macro", "itc", "itc", "itc", "itc"], "pN1"),  # ITC do not count as involved nodes
        (["macro", "micro", "micro", "micro"], "pN2"),  # 4 involved nodes
        (["macro", "macro", "macro", "macro", "negative"], "pN2"),
        (["macro"] * 9, "pN2"),
        (["MACRO", " micro "], "pN1"),
    ],
)
def test_pn_stage_rules(nodes, stage):
    assert pn_stage(nodes) == stage


def test_pn_stage_refuses_unknown_categories():
    with pytest.raises(StagingError, match="unknown slide category 'tumour'"):
        pn_stage(["tumour"])


def test_patient_grouping(tmp_path):
    slides = [
        "/data/patient_004_node_4.tif",
        "/data/patient_004_node_0.tif",
        "/data/patient_010_node_2.tif",
        "/data/other.svs",
        "/data/second.ndpi",
    ]
    assert camelyon_patient(slides[0]) == "patient_004"
    assert camelyon_patient("/data/other.svs") is None
    assert group_patients(slides) == {
        "patient_004": slides[:2],
        "patient_010": [slides[2]],
        "other": [slides[3]],
        "second": [slides[4]],
    }
    assert group_patients(slides, case="Mrs X") == {"Mrs X": slides}
    cases_file = tmp_path / "cases.csv"
    cases_file.write_text("slide,patient\nother.svs,P1\n/elsewhere/second.ndpi,P1\n")
    cases = read_cases(cases_file)
    assert cases == {"other": "P1", "second": "P1"}
    groups = group_patients(slides, cases=cases)
    assert groups["P1"] == slides[3:] and groups["patient_004"] == slides[:2]


def test_bad_case_lists_are_reported(tmp_path):
    bad = tmp_path / "cases.csv"
    bad.write_text("a.svs,P1\nb.svs\n")
    with pytest.raises(StagingError, match=r"cases.csv, line 2: expected 'slide,patient'"):
        read_cases(bad)
    bad.write_text("a.svs,P1\na.svs,P2\n")
    with pytest.raises(StagingError, match="listed for patients P1 and P2"):
        read_cases(bad)
    with pytest.raises(StagingError, match=r"missing\.csv: cannot read the case list"):
        read_cases(tmp_path / "missing.csv")


def test_stages_csv_round_trip(tmp_path):
    patients = [
        PatientStage.from_slides(
            "patient_004",
            [("patient_004_node_0.tif", "negative"), ("patient_004_node_4.tif", "macro")],
        ),
        PatientStage.from_slides("other", [("other.svs", "itc")]),
    ]
    text = stages_csv(patients)
    assert text.splitlines() == [
        "patient,stage",
        "patient_004.zip,pN1",
        "patient_004_node_0.tif,negative",
        "patient_004_node_4.tif,macro",
        "other.zip,pN0(i+)",
        "other.svs,itc",
    ]
    path = tmp_path / "stages.csv"
    path.write_text(text)
    read = read_stages(path)
    assert read.patients == {"patient_004": "pN1", "other": "pN0(i+)"}
    assert read.slides["patient_004_node_4.tif"] == "macro"
    assert read.members == {
        "patient_004": ["patient_004_node_0.tif", "patient_004_node_4.tif"],
        "other": ["other.svs"],
    }
    assert read.cases() == {
        "patient_004_node_0": "patient_004",
        "patient_004_node_4": "patient_004",
        "other": "other",
    }
    path.write_text("patient,stage\np.zip,pN3\n")
    with pytest.raises(StagingError, match=r"line 2: unknown pN stage 'pN3'"):
        read_stages(path)
    assert PN_STAGES == ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")
