"""The bundled-model recipe (scripts/train_bundled_model.py) runs end to end in a few steps and
writes a model folder that loads as data, a results file, and a card built from that file only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_metastasis.models import load_model
from napari_metastasis.models.safe_weights import SAFETENSORS_FILE


def test_pcam_split_is_stratified_disjoint_and_fixed():
    from napari_metastasis.datasets.pcam_splits import split_folder_labels

    labels = np.array([0] * 600 + [1] * 400)
    split = split_folder_labels("pcam_kaggle_5k", labels)
    again = split_folder_labels("pcam_kaggle_5k", labels)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    everything = np.concatenate(list(split.values()))
    assert len(everything) == len(set(everything.tolist())) == 1000
    assert [len(split[k]) for k in ("train", "val", "test")] == [700, 100, 200]
    assert labels[split["test"]].mean() == pytest.approx(0.4)
    more = split_folder_labels("pcam_kaggle_more", labels)  # the larger held-out share
    assert [len(more[k]) for k in ("train", "val", "test")] == [400, 200, 400]


def test_the_recipe_trains_on_the_training_part_of_both_folders_only(shared_data_dir, recipe):
    from napari_metastasis.datasets.pcam_splits import pcam_part

    split = recipe.split_pcam(shared_data_dir)
    files = pcam_part(shared_data_dir, "test")
    assert len(split["test"]) == len(files) and len(split["val"]) == len(
        pcam_part(shared_data_dir, "val")
    )
    everything = np.concatenate(list(split.values()))
    assert len(everything) == len(set(everything.tolist()))


@pytest.mark.slow
def test_quick_recipe_writes_model_results_and_card(shared_data_dir, recipe, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{recipe.README_START}\nold\n{recipe.README_END}\nrest\n")
    out, results_file = tmp_path / "default", tmp_path / "results.json"
    argv = ["--data", str(shared_data_dir), "--out", str(out), "--results", str(results_file)]
    argv += ["--readme", str(readme), "--quick", "--pcam-limit", "300", "--no-progress"]
    assert recipe.main(argv) == 0
    assert (out / SAFETENSORS_FILE).is_file() and (out / "torchscript_model.pt").is_file()
    model = load_model(out, device="cpu")
    size = recipe.CROP_PX
    assert model.config.input_size == (size, size) and model.config.spacing_um_px == 1.0
    results = json.loads(results_file.read_text())
    card = json.loads((out / "model_card.json").read_text())
    assert card == json.loads(json.dumps(recipe.build_card(results), default=float)) | {
        "date": card["date"]
    }
    assert [f["held_out_camelyon_slide"] for f in results["folds"]] == [
        "tumor_001",
        "tumor_004",
        "tumor_064",
    ]
    assert sum(len(f["held_labels"]) for f in results["folds"]) == 57
    assert set(results["whole_slide_false_positives"]) == set(recipe.NORMAL_SLIDES)
    assert "By slide on Camelyon16" in (out / "README.md").read_text()
    assert readme.read_text().count("old") == 1  # quick runs never touch the README
    # the README section replacement itself
    assert recipe.update_readme(readme, "# Model card: x\n\n## Data\n")
    text = readme.read_text()
    assert "old" not in text and "### Model card: x" in text and "#### Data" in text
    assert text.startswith("intro\n") and text.endswith("rest\n")


def test_camelyon_patches_are_mirrored_out_with_their_masks(recipe):
    from napari_metastasis.datasets.patchset import PatchSet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, :, :10] = True  # tumour along the left edge
    small = PatchSet(images, np.array([1, 0]), np.array(["a", "b"]), 0.972, masks=masks)
    big = recipe.reflect_pad(small, 96)
    assert big.images.shape == (2, 96, 96, 3) and big.masks.shape == (2, 96, 96)
    np.testing.assert_array_equal(big.images[:, 16:80, 16:80], images)  # the real patch, centred
    np.testing.assert_array_equal(big.images[:, 16:80, 15], images[:, :, 1])  # mirrored
    assert big.masks[0, :, 7:26].all() and not big.masks[0, :, 26:].any()
    assert not big.masks[0, :, :7].any()  # mirrored: the edge tumour reaches 9 px into the pad
    assert big.has_mask.all() and list(big.labels) == [1, 0]
