"""The bundled-model recipe runs end to end (a few steps) and writes a loadable model + card."""

from __future__ import annotations

import json

from conftest import DATA

from napari_metastasis.models import load_model
from napari_metastasis.training import bundled_recipe


def test_quick_recipe_writes_contract_and_card(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"intro\n{bundled_recipe.README_START}\nold\n{bundled_recipe.README_END}\nrest\n"
    )
    out = tmp_path / "default"
    assert (
        bundled_recipe.main(["--data", str(DATA), "--out", str(out), "--quick", "--no-progress"])
        == 0
    )
    model = load_model(out, device="cpu")
    assert model.config.patch_size_pixels == 48 and model.config.spacing_um_px == 1.0
    card = json.loads((out / "model_card.json").read_text())
    assert 0 < card["threshold"] < 1
    results = card["validation"]["results"]
    assert results["Camelyon16 patches, out of fold"]["patches (tumour)"] == "57 (28)"
    assert "Leave one slide out" in (out / "README.md").read_text()
    # quick runs never touch the README; the marker replacement itself:
    assert bundled_recipe.update_readme(readme, "# Model card: x\n\n## Data\n")
    text = readme.read_text()
    assert "old" not in text and "### Model card: x" in text and "#### Data" in text
    assert text.startswith("intro\n") and text.endswith("rest\n")
