"""The bundled model's card says what its recipe measured: every number comes from the recipe's
results file (resources/bundled_model_recipe.json), none is typed by hand, and the docs' model-card page
(docs/model-card.md) shows the same card, heatmaps and all."""

from __future__ import annotations

import json
import math

import pytest

from napari_metastasis.models import BUNDLED_DIR, load_model
from napari_metastasis.training.card import render_card


@pytest.fixture
def results(project_root):
    """What the recipe measured: resources/bundled_model_recipe.json."""
    return json.loads((project_root / "resources" / "bundled_model_recipe.json").read_text())


@pytest.fixture
def card():
    """The bundled model's card."""
    return json.loads((BUNDLED_DIR / "default" / "model_card.json").read_text())


def test_card_is_built_from_the_recipe_results(recipe, results, card):
    rebuilt = json.loads(json.dumps(recipe.build_card(results), default=float))
    assert card == rebuilt | {"date": card["date"]}


@pytest.mark.slow
def test_card_fields_agree_with_the_recipe_outputs(project_root, results, card):
    s = results["summary"]
    # the region threshold chosen on validation nodes; the patch numbers at Youden's J
    assert (
        card["threshold"] == results["decision"]["region_threshold"] and 0 < card["threshold"] < 1
    )
    assert card["patch_threshold"] == s["threshold"]
    assert "validation" in card["threshold_rule"] and "never on the test" in card["threshold_rule"]
    assert load_model("default", device="cpu").recommended_threshold == card["threshold"]
    rows = card["validation"]["results"]
    assert (
        rows["Camelyon16 patches, by slide (out of fold)"]["ROC AUC"]
        == (s["camelyon_out_of_fold"]["roc_auc"])
    )
    assert rows["Held-out PCam patches (test)"]["ROC AUC"] == s["pcam_test"]["roc_auc"]
    assert rows["Held-out PCam patches (test)"]["patches (tumour)"].startswith(
        str(s["pcam_split"]["test"])
    )
    # the out-of-fold Camelyon16 set is the 57 patches, each predicted by one fold network
    assert sum(len(f["held_labels"]) for f in results["folds"]) == 57
    # calibration: a reliability table over held-out patches, and its ECE
    cal = card["calibration"]
    assert sum(cal["bin_count"]) == s["pcam_split"]["test"]
    assert cal["ece"] == s["calibration_pcam_test"]["ece"]
    # per-epoch curves, one value per fold per epoch
    epochs = results["config"]["epochs"]
    assert card["history"]["epoch"] == list(range(1, epochs + 1))
    assert all(len(c) == epochs for c in card["history"]["pcam_val_auc_per_fold"])
    # whole-slide false positives on both metastasis-free slides, with heatmaps in resources/
    fp = results["whole_slide_false_positives"]
    assert set(fp) == {"CMU-1-Small-Region", "CropBreastSlide"}
    for name, row in fp.items():
        assert (
            card["whole_slide_false_positives"][name]["regions per cm² of tissue"]
            == (row["regions_per_cm2"])
        )
        assert math.isclose(row["regions_per_cm2"], row["regions_at_threshold"] / row["tissue_cm2"])
        assert (project_root / row["heatmap"]).is_file()


def test_the_model_card_page_shows_the_card_and_the_heatmaps(project_root, recipe, results, card):
    assert project_root / "docs" / "model-card.md" == recipe.CARD_PAGE
    page = recipe.CARD_PAGE.read_text()
    start = page.index(recipe.README_START) + len(recipe.README_START) + 1
    section = page[start : page.index(recipe.README_END)]
    body = (
        render_card(card).replace("# Model card", "### Model card", 1).replace("\n## ", "\n#### ")
    )
    assert section == body
    for row in results["whole_slide_false_positives"].values():
        assert f"](../{row['heatmap']})" in page  # a link that works from docs/
