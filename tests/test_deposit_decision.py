"""The deposit decision (issue 20, item 3): which candidate regions count as deposits.

Known truth: probability maps written cell by cell here, so each region's seed patches are known; and
``predict`` on node slides whose deposits are black (darkness model: p = 1) or grey (p about 0.6),
with a rule whose numbers say which of them are confirmed.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import shapely
from engine_helpers import write_darkness_model, write_pyramid_tiff

from napari_metastasis.annotations.csv_summary import to_csv
from napari_metastasis.annotations.geojson import parse_geojson
from napari_metastasis.annotations.model import BELOW_SEED_CLASS, CANDIDATE_CLASS, TUMOUR_CLASS
from napari_metastasis.cli import main
from napari_metastasis.clinical.decision import (
    CONFIG_KEY,
    DEFAULT_RULE,
    DecisionRule,
    decide,
    rule_for_map,
    rule_for_model,
    stamp_rule,
)
from napari_metastasis.clinical.region_annotations import regions_to_annotations
from napari_metastasis.clinical.staging import greatest_dimension_um, measure_regions, slide_verdict
from napari_metastasis.clinical.summary import (
    FORMAT_TAG,
    SlideSummary,
    read_summary,
    summarise_regions,
)
from napari_metastasis.errors import ModelError
from napari_metastasis.maps.contours import Region, probability_contours
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.models import load_config
from napari_metastasis.models.registry import BUNDLED_DIR
from napari_metastasis.pipeline import answer_slide
from napari_metastasis.slides.grid import PatchGrid

RULE = DecisionRule(seed_threshold=0.95, min_seed_patches=2, min_patches=2, source="test")


def _map() -> ProbabilityMap:
    """A 12 x 12 grid of 100 µm cells, background 0.1, with four candidates at threshold 0.5:
    A: 5 cells, 3 of them >= 0.95 (confirmed); B: one isolated cell at 0.99 (one seed, one patch);
    C: 4 cells at 0.8 (no seed); D: 2 cells, one at 0.97 (one seed of the two needed)."""
    grid = PatchGrid(1200, 1200, 1.0, 1.0, patch_px=100, spacing_um=1.0)
    prob = ProbabilityMap.empty(grid, model_name="synthetic")
    prob.values[:] = 0.1
    prob.values[1, 1:6] = [0.96, 0.97, 0.98, 0.7, 0.6]  # A
    prob.values[6, 6] = 0.99  # B
    prob.values[9:11, 1:3] = 0.8  # C
    prob.values[9, 8:10] = [0.97, 0.7]  # D
    return prob


def _by_max(regions, value):
    return next(r for r in regions if r.max_prob == pytest.approx(value))


def test_hysteresis_confirms_seeded_regions_only():
    prob = _map()
    regions = probability_contours(prob, 0.5)
    decisions = decide(regions, prob, RULE)
    assert [d.region_id for d in decisions] == [r.id for r in regions]  # one each, same order
    by_id = {d.region_id: d for d in decisions}
    a, b, c, d = (_by_max(regions, v) for v in (0.98, 0.99, 0.8, 0.97))
    assert by_id[a.id].confirmed and by_id[a.id].seed_patches == 3 and by_id[a.id].patches == 5
    assert by_id[a.id].reason == "3 patches >= 0.95 (rule needs 2), 5 in all (rule needs 2)"
    assert not by_id[b.id].confirmed and by_id[b.id].seed_patches == 1
    assert by_id[b.id].reason == (
        "only 1 patch >= 0.95 (rule needs 2); only 1 patch in all (rule needs 2)"
    )
    assert not by_id[c.id].confirmed and by_id[c.id].seed_patches == 0
    assert by_id[c.id].reason == "no patch >= 0.95 (rule needs 2)"
    assert not by_id[d.id].confirmed
    assert by_id[d.id].reason == "only 1 patch >= 0.95 (rule needs 2)"


def test_min_patches_and_seed_count_are_separate_conditions():
    prob = _map()
    one_seed = DecisionRule(0.95, min_seed_patches=1, min_patches=2)
    regions = answer_slide(prob, 0.5, rule=one_seed).regions
    confirmed = {round(r.max_prob, 2): r.confirmed for r in regions}
    assert confirmed[0.98] and confirmed[0.97]  # A, D
    assert not confirmed[0.99]  # B: a seed, but a single patch
    assert not confirmed[0.8]  # C: four patches, no seed
    # at a candidate threshold above the seed threshold every patch is a seed
    high = answer_slide(prob, 0.96, rule=DecisionRule(0.95, 2, 2)).regions
    assert [(r.n_cells, r.confirmed) for r in high] == [(1, False), (3, True), (1, False)]


def test_unanalysed_cells_are_not_seeds_and_outline_only_regions_are_decided_alike():
    prob = _map()
    regions = probability_contours(prob, 0.5)
    # the same regions without their cells (read from a file): cells found from the outline
    outlines = [
        Region(r.id, r.polygon, r.area_um2, r.max_prob, r.mean_prob, r.n_cells) for r in regions
    ]
    assert decide(outlines, prob, RULE) == decide(regions, prob, RULE)
    prob.values[1, 2] = np.nan  # one of A's seeds was never analysed
    a = _by_max(regions, 0.98)
    (decision,) = decide([a], prob, RULE)
    assert decision.seed_patches == 2 and decision.patches == 4 and decision.confirmed


def test_a_seed_at_exactly_the_seed_threshold_counts_as_the_contours_count_it():
    prob = _map()
    prob.values[1, 1:6] = 0.9  # float32: 0.89999998, yet ">= 0.9" for the contours too
    (a,) = [
        r for r in answer_slide(prob, 0.9, rule=DecisionRule(0.9, 5, 5)).regions if r.n_cells == 5
    ]
    assert a.confirmed and a.decision.seed_patches == 5


def test_only_confirmed_deposits_make_the_verdict():
    prob = _map()
    regions = answer_slide(prob, 0.5, rule=RULE).regions
    deposits = measure_regions(regions, prob.grid)
    verdict = slide_verdict(deposits)
    a = _by_max(regions, 0.98)
    assert verdict.largest is not None and verdict.largest.id == a.id  # C is larger, unconfirmed
    # B and D hold a seed patch each: candidates; C holds none: above the threshold only
    assert verdict.category == "micro" and (verdict.unconfirmed, verdict.below_seed) == (2, 1)
    nothing = slide_verdict([d for d in deposits if d.id != a.id])
    assert nothing.category == "negative" and nothing.largest is None
    assert (
        nothing.sentence() == "Negative — no confirmed deposit (2 candidate regions not confirmed)"
    )
    c = _by_max(regions, 0.8)
    only_c = slide_verdict([d for d in deposits if d.id == c.id])
    assert only_c.sentence() == (
        "Negative — no candidate deposit (1 region above the threshold without a seed patch)"
    )
    assert slide_verdict([]).sentence() == "Negative — no deposit above the threshold"


def test_exported_candidates_are_classified_apart_with_the_numbers():
    prob = _map()
    regions = answer_slide(prob, 0.5, rule=RULE).regions
    annotations = {a.id: a for a in regions_to_annotations(regions, TUMOUR_CLASS, 0.5)}
    for region in regions:
        ann = annotations[region.uid]
        if region.confirmed:
            assert ann.classification == TUMOUR_CLASS and ann.name == f"Region {region.id}"
        else:  # a candidate holds a seed patch; C (no seed) is only above the threshold
            seeded = region.decision.seed_patches > 0
            assert ann.classification == (CANDIDATE_CLASS if seeded else BELOW_SEED_CLASS)
            assert ann.name == f"Region {region.id} (not confirmed)"
        assert ann.measurements["confirmed"] == float(region.confirmed)
        assert ann.measurements["seed_patches"] == region.decision.seed_patches
        assert ann.measurements["seed_threshold"] == 0.95
        assert ann.measurements["min_seed_patches"] == 2 and ann.measurements["min_patches"] == 2
    # the CSV summary of the same export: the class and the decision's numbers as columns
    rows = list(csv.DictReader(io.StringIO(to_csv(list(annotations.values()), 1.0))))
    by_id = {row["id"]: row for row in rows}
    for region in regions:
        row = by_id[region.uid]
        assert row["class"] == annotations[region.uid].classification
        assert float(row["confirmed"]) == float(region.confirmed)
        assert float(row["seed_patches"]) == region.decision.seed_patches


# --- the rule ---------------------------------------------------------------------------------
def test_rule_round_trips_and_describes_itself():
    rule = DecisionRule.from_dict(RULE.to_dict())
    assert rule == RULE
    assert set(RULE.to_dict()) == {
        "name",
        "seed_threshold",
        "min_seed_patches",
        "min_patches",
        "source",
    }
    assert RULE.describe() == (
        "hysteresis: a deposit needs >= 2 patches with p >= 0.95 and >= 2 patches in all (test)"
    )
    assert DecisionRule.from_dict({"seed_threshold": 1, "min_seed_patches": 3}).min_patches == 1


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ([0.9, 2], "must be an object of numbers, got list"),
        ({"min_seed_patches": 2}, "field 'seed_threshold' must be a number, got None"),
        ({"seed_threshold": "0.9", "min_seed_patches": 2}, "'seed_threshold' must be a number"),
        ({"seed_threshold": True, "min_seed_patches": 2}, "'seed_threshold' must be a number"),
        ({"seed_threshold": 0, "min_seed_patches": 2}, "above 0 and at most 1, got 0"),
        ({"seed_threshold": 1.5, "min_seed_patches": 2}, "above 0 and at most 1, got 1.5"),
        ({"seed_threshold": math.nan, "min_seed_patches": 2}, "above 0 and at most 1, got nan"),
        ({"seed_threshold": 0.9}, "'min_seed_patches' must be a whole number of at least 1"),
        ({"seed_threshold": 0.9, "min_seed_patches": 0}, "of at least 1, got 0"),
        ({"seed_threshold": 0.9, "min_seed_patches": 2.5}, "of at least 1, got 2.5"),
        ({"seed_threshold": 0.9, "min_seed_patches": 2, "min_patches": -1}, "'min_patches'"),
        (
            {"seed_threshold": 0.9, "min_seed_patches": 2, "weights": [1]},
            "unknown field(s) 'weights'",
        ),
        ({"name": "forest", "seed_threshold": 0.9, "min_seed_patches": 2}, "unknown rule 'forest'"),
        ({"seed_threshold": 0.9, "min_seed_patches": 2, "source": 3}, "'source' must be text"),
    ],
)
def test_a_bad_rule_is_one_sentence_naming_the_field(block, message):
    with pytest.raises(ModelError, match=r"^here: ") as info:
        DecisionRule.from_dict(block, "here")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_model_folder_with_a_bad_block_fails_to_load_naming_it(tmp_path):
    folder = write_darkness_model(
        tmp_path / "bad", decision={"seed_threshold": 2, "min_seed_patches": 2}
    )
    with pytest.raises(
        ModelError,
        match=rf"bad/config.json: field '{CONFIG_KEY}': field "
        r"'seed_threshold' must be above 0 and at most 1, got 2",
    ):
        load_config(folder)


def test_the_model_folder_rule_or_the_default():
    block = {"seed_threshold": 0.97, "min_seed_patches": 3, "min_patches": 4}
    rule = rule_for_model({CONFIG_KEY: block}, 0.5)
    assert (rule.seed_threshold, rule.min_seed_patches, rule.min_patches) == (0.97, 3, 4)
    assert rule.source == "model folder"
    default = rule_for_model({}, 0.586)
    assert default == DEFAULT_RULE  # seed at the 0.9 floor
    assert (default.min_seed_patches, default.min_patches) == (2, 2)
    assert "default" in default.source
    assert rule_for_model({}, 0.93).seed_threshold == 0.93  # never below the candidate threshold


def test_the_bundled_model_has_the_rule_chosen_on_validation_nodes(project_root):
    config = load_config(BUNDLED_DIR / "default")
    rule = rule_for_model(config.extra, 0.5)
    recipe = json.loads((project_root / "resources" / "bundled_model_recipe.json").read_text())
    chosen = recipe["decision"]["rule"]
    assert rule.to_dict() == chosen  # config.json says what the recipe's results say
    assert rule.source.startswith("chosen on 40 validation nodes")


def test_a_map_carries_its_models_rule_through_a_file(tmp_path):
    prob = _map()
    assert rule_for_map(prob, 0.5).source == DEFAULT_RULE.source  # a map from elsewhere
    stamp_rule(prob, {CONFIG_KEY: RULE.to_dict()})
    loaded = ProbabilityMap.load(prob.save(tmp_path / "m.prob.tiff"))
    assert rule_for_map(loaded, 0.5) == RULE
    stamp_rule(loaded, {})  # filled by a model without a rule: the default again
    assert CONFIG_KEY not in loaded.extra


# --- the summary ------------------------------------------------------------------------------
def test_summary_names_the_rule_and_counts_only_confirmed(tmp_path):
    prob = _map()
    regions = answer_slide(prob, 0.5, rule=RULE).regions
    summary = summarise_regions(regions, prob, slide="s.tif", stem="s", threshold=0.5, model="m")
    data = summary.to_dict()
    assert data["decision"] == RULE.to_dict()
    assert (data["regions_above_threshold"], data["candidates"], data["confirmed"]) == (4, 3, 1)
    assert data["verdict"] == "micro" and data["largest_region"] == _by_max(regions, 0.98).id
    assert [r["confirmed"] for r in data["regions"]] == [r.confirmed for r in regions]
    assert all(r["decision_reason"] for r in data["regions"])
    again = type(summary).from_dict(json.loads(json.dumps(data)))
    assert again.decision == RULE.to_dict() and again.verdict == summary.verdict
    assert "2 patches with p >= 0.95" in again.rule_text()


def test_an_older_summary_without_the_decision_counts_every_region():
    prob = _map()
    regions = probability_contours(prob, 0.5)  # never decided
    data = summarise_regions(regions, prob, slide="s", stem="s", threshold=0.5, model="m").to_dict()
    for key in ("decision", "candidates", "confirmed"):
        del data[key]
    for region in data["regions"]:
        del region["confirmed"], region["decision_reason"], region["seed_patches"]
    summary = SlideSummary.from_dict({**data, "format": FORMAT_TAG})
    assert summary.decision is None and all(d.confirmed for d in summary.deposits)
    biggest = max(summary.deposits, key=lambda d: d.greatest_dimension_mm)
    assert summary.verdict.largest == biggest  # C, the largest, counts as it did then


# --- predict, as a user runs it ---------------------------------------------------------------
MPP = 4.0  # µm per slide pixel; the darkness model's cells are 128 µm (16 px at 8 µm/px)
CELL_PX = 32


def _cells(image, row, col, rows=1, cols=1, value=0):
    """Paint grid cells (row, col) ...: the model's cells are centred on multiples of CELL_PX."""
    y0, x0 = row * CELL_PX - CELL_PX // 2, col * CELL_PX - CELL_PX // 2
    image[y0 : y0 + rows * CELL_PX, x0 : x0 + cols * CELL_PX] = value


@pytest.fixture(scope="module")
def node_run(tmp_path_factory):
    """Two nodes of one patient, predicted with a rule of 2 seeds >= 0.95 and 2 patches: node 0
    holds a 3 x 3-cell black deposit (confirmed), a single black cell and a 2 x 2 grey block
    (p about 0.6: no seed); node 1 only a single black cell."""
    root = tmp_path_factory.mktemp("decision")
    node0 = np.full((640, 800, 3), 255, np.uint8)
    _cells(node0, 1, 1, 3, 3)
    _cells(node0, 8, 8)
    _cells(node0, 2, 14, 2, 2, value=100)
    node1 = np.full((640, 800, 3), 255, np.uint8)
    _cells(node1, 5, 5)
    slides = [
        write_pyramid_tiff(root / "patient_010_node_0.tif", node0, mpp=MPP),
        write_pyramid_tiff(root / "patient_010_node_1.tif", node1, mpp=MPP),
    ]
    model = write_darkness_model(root / "darkness", 16, spacing=8.0, decision=RULE.to_dict())
    out = root / "run"
    code = main(
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
            "--case",  # two of a patient's nodes: staged as a case of its own, not incomplete
            "patient_010",
        ]
    )
    assert code == 0
    return out


def test_predict_summary_has_the_decision_and_candidates_do_not_make_the_verdict(node_run):
    raw = json.loads((node_run / "patient_010_node_0.summary.json").read_text())
    assert raw["decision"] == RULE.to_dict()
    # the grey block holds no seed patch: above the threshold, but not a candidate deposit
    assert (raw["regions_above_threshold"], raw["candidates"], raw["confirmed"]) == (3, 2, 1)
    confirmed = [r for r in raw["regions"] if r["confirmed"]]
    assert len(confirmed) == 1 and confirmed[0]["seed_patches"] == 9
    assert raw["verdict"] == "micro" and raw["largest_region"] == confirmed[0]["id"]
    assert raw["greatest_dimension_mm"] == pytest.approx(3 * 0.128 * math.sqrt(2))
    reasons = sorted(r["decision_reason"] for r in raw["regions"] if not r["confirmed"])
    assert reasons == [
        "no patch >= 0.95 (rule needs 2)",
        "only 1 patch >= 0.95 (rule needs 2); only 1 patch in all (rule needs 2)",
    ]
    single = read_summary(node_run / "patient_010_node_1.summary.json")
    assert single.verdict.category == "negative" and len(single.deposits) == 1
    assert (node_run / "stages.csv").read_text() == (
        "patient,stage\npatient_010.zip,pN1mi\npatient_010_node_0.tif,micro\n"
        "patient_010_node_1.tif,negative\n"
    )


def test_predict_exports_keep_every_candidate(node_run):
    path = node_run / "patient_010_node_0.geojson"
    annotations = parse_geojson(json.loads(path.read_text()), path.name)
    classes = sorted(a.classification for a in annotations)
    # the 3 x 3 deposit, the single black cell (one seed) and the grey block (no seed)
    assert classes == sorted([TUMOUR_CLASS, CANDIDATE_CLASS, BELOW_SEED_CLASS])
    for a in annotations:
        assert a.measurements["confirmed"] == (a.classification == TUMOUR_CLASS)
    # Camelyon16's detection file is a FROC submission: every candidate, with its probability
    rows = (node_run / "camelyon16" / "patient_010_node_1.csv").read_text().splitlines()
    assert len(rows) == 1 and float(rows[0].split(",")[0]) == pytest.approx(1.0, abs=1e-3)
    assert len((node_run / "camelyon16" / "patient_010_node_0.csv").read_text().splitlines()) == 3


def test_predict_maps_carry_the_rule_and_the_report_lists_confirmed_deposits(node_run):
    import pypdfium2 as pdfium

    prob = ProbabilityMap.load(node_run / "patient_010_node_0.prob.tiff")
    assert rule_for_map(prob, 0.5) == RULE  # reloaded in the viewer, decided alike
    assert main(["report", str(node_run)]) == 0
    pdf = pdfium.PdfDocument(str(node_run / "patient_010.report.pdf"))
    try:
        pages = [page.get_textpage().get_text_range() for page in pdf]
    finally:
        pdf.close()
    first, node0, node1 = (" ".join(p.split()) for p in pages)
    assert "pN1mi" in first and "not confirmed" in first
    assert "a deposit needs >= 2 patches with p >= 0.95 and >= 2 patches in all" in first
    assert "1 candidate region (with a seed patch) not confirmed as deposits" in node0
    assert node0.count("Micrometastasis") == 2  # the verdict line and the one confirmed row
    assert "No confirmed deposit." in node1 and "1 candidate region (with a seed" in node1


def test_a_drawn_region_without_decision_counts():
    grid = PatchGrid(1000, 1000, 1.0, 1.0, 100, 1.0)
    prob = ProbabilityMap.empty(grid)
    drawn = Region(1, shapely.box(0, 0, 300, 300), 9e4, 0.0, 0.0, 9)
    summary = summarise_regions([drawn], prob, slide="s", stem="s", threshold=0.5, model="m")
    assert summary.verdict.category == "micro" and summary.decision is None


def test_the_smallest_deposit_a_rule_can_confirm_decides_whether_it_sees_itc():
    """Isodiametric bound: n step squares are at least as wide as the disc of their area. The
    bundled rule (6 patches of 80 µm: 0.22 mm at least) never confirms a deposit of 0.2 mm or
    less; a rule of 4 such patches (0.18 mm) can."""
    import math

    from napari_metastasis.clinical.decision import DecisionRule

    bundled = DecisionRule(0.9, 2, 6)
    assert bundled.smallest_confirmable_mm(80) == pytest.approx(0.16 * math.sqrt(6 / math.pi))
    assert bundled.smallest_confirmable_mm(80) > 0.2
    note = bundled.itc_note(80)
    assert note.startswith("Isolated tumour cells are not assessed")
    assert "at least 6 patches of 80 µm" in note and "0.22 mm" in note
    assert DecisionRule(0.9, 2, 4).itc_note(80) == ""
    assert DecisionRule(0.9, 7, 1).itc_note(80) != ""  # seeds count as patches too
    # every shape of 6 cells measures more than 0.2 mm, as the bound says: a 2 x 3 block
    block = shapely.box(0, 0, 160, 240)
    assert greatest_dimension_um(block, 1.0) / 1000 > bundled.smallest_confirmable_mm(80)
