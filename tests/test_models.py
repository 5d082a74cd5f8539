"""The model contract: configs are validated field by field, models load safely and predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from engine_helpers import darkness_config, write_darkness_model

from napari_metastasis.errors import ModelError
from napari_metastasis.models import (
    BUNDLED_DIR,
    available_models,
    load_config,
    load_model,
    parse_config,
    resolve_model,
    select_device,
)


@pytest.fixture(scope="module")
def darkness_folder(tmp_path_factory):
    return write_darkness_model(tmp_path_factory.mktemp("models") / "darkness")


def test_valid_config_round_trips():
    config = parse_config(darkness_config(patch_size=48, spacing=0.8))
    assert config.input_size == (48, 48)
    assert config.patch_size_um == pytest.approx(38.4)
    assert config.normalize == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert config.positive_class_index() == 1
    assert parse_config(config.to_dict()) == config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_classes": 3}, "field 'class_names' lists 2 names but num_classes is 3"),
        ({"num_classes": 0}, "field 'num_classes' must be greater than 0"),
        ({"num_classes": "2"}, "field 'num_classes' must be a whole number"),
        ({"patch_size_pixels": 0}, "field 'patch_size_pixels' must be greater than 0"),
        ({"patch_size_pixels": -224}, "field 'patch_size_pixels' must be greater than 0"),
        ({"spacing_um_px": 0.0}, "field 'spacing_um_px' must be greater than 0"),
        ({"spacing_um_px": "half"}, "field 'spacing_um_px' must be a number"),
        ({"spec_version": "9.9"}, "field 'spec_version' is '9.9'"),
        ({"class_names": ["a", "A"]}, "field 'class_names' has duplicate names"),
        ({"architecture": ""}, "field 'architecture' must be a non-empty string"),
        ({"transform": "Resize"}, "field 'transform' must be a list"),
        (
            {"transform": [{"name": "RandomFlip"}, {"name": "ToTensor"}]},
            "field 'transform[0].name' is an unknown transform 'RandomFlip'",
        ),
        (
            {"transform": [{"name": "Resize", "arguments": {"size": 0}}, {"name": "ToTensor"}]},
            "field 'transform[0].arguments.size' must be a size in pixels > 0",
        ),
        (
            {
                "transform": [
                    {"name": "ToTensor"},
                    {"name": "Normalize", "arguments": {"mean": [0, 0], "std": [1, 1, 1]}},
                ]
            },
            "field 'transform[1].arguments.mean' must be 3 numbers",
        ),
        (
            {
                "transform": [
                    {"name": "ToTensor"},
                    {"name": "Normalize", "arguments": {"mean": [0, 0, 0], "std": [1, 0, 1]}},
                ]
            },
            "field 'transform[1].arguments.std[1]' must be greater than 0, got 0",
        ),
        ({"transform": [{"name": "Resize", "arguments": {"size": 8}}]}, "must include ToTensor"),
        ({"positive_class": "lymphocyte"}, "positive class 'lymphocyte' is not one of"),
    ],
)
def test_bad_config_names_the_field(change, message):
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(darkness_config(**change))


def test_missing_field_is_named():
    data = darkness_config()
    del data["spacing_um_px"]
    with pytest.raises(ModelError, match="missing required field 'spacing_um_px'"):
        parse_config(data)


def test_bad_folders(tmp_path):
    with pytest.raises(ModelError, match="no such model folder or model name"):
        load_model(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"no config\.json"):
        load_model(empty)
    (empty / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"empty/config\.json: not valid JSON"):
        load_config(empty)
    (empty / "config.json").write_text(json.dumps(darkness_config()))
    with pytest.raises(ModelError, match=r"no torchscript_model\.pt"):
        load_model(empty)
    (empty / "torchscript_model.pt").write_bytes(b"\x80\x04 definitely not a model")
    with pytest.raises(ModelError, match=r"torchscript_model\.pt: not a loadable TorchScript"):
        load_model(empty)


def test_class_count_must_match_network_output(tmp_path):
    folder = write_darkness_model(
        tmp_path / "three", num_classes=3, class_names=["normal", "tumor", "other"]
    )
    with pytest.raises(ModelError, match="field 'num_classes' is 3 but the network returns 2"):
        load_model(folder, device="cpu")


def test_network_rejecting_input_size_is_reported(tmp_path):
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 16 * 16, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    folder = tmp_path / "fixed"
    folder.mkdir()
    torch.jit.script(Fixed()).save(str(folder / "torchscript_model.pt"))
    (folder / "config.json").write_text(json.dumps(darkness_config(patch_size=32)))
    # The real reason is kept, not TorchScript's "The following operation failed ..." (issue 15).
    with pytest.raises(
        ModelError, match=r"does not accept a \(2, 3, 32, 32\) batch .*\(mat1 and mat2 shapes"
    ):
        load_model(folder, device="cpu")


def test_predict_matches_pixels(darkness_folder):
    model = load_model(darkness_folder, device="cpu")
    assert model.positive_class == "tumor" and model.positive_class_index == 1
    batch = np.full((3, 32, 32, 3), 255, np.uint8)
    batch[1] = 0
    batch[2, :16] = 0  # top half black
    probs = model.predict(batch)
    assert probs.shape == (3, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs[:, 1], [0.0, 1.0, 0.5], atol=1e-4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # Patches of another size are resized with the config's Resize; tensors are accepted too.
    big = np.zeros((1, 64, 64, 3), np.uint8)
    assert model.predict(big)[0, 1] == pytest.approx(1.0, abs=1e-4)
    assert model.predict(torch.from_numpy(batch))[2, 1] == pytest.approx(0.5, abs=1e-4)
    ready = model.prepare(batch)
    assert ready.dtype == torch.float32 and ready.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(model.predict(ready), probs, atol=1e-6)


def test_positive_class_by_option(darkness_folder):
    assert load_model(darkness_folder, device="cpu", positive_class="normal").positive_class == (
        "normal"
    )
    config = parse_config(darkness_config(class_names=["benign", "malignant_cells"]))
    with pytest.raises(ModelError, match="choose the positive class"):
        config.positive_class_index()
    assert config.positive_class_index("malignant_cells") == 1
    assert config.positive_class_index(0) == 0


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and torch.backends.mps.is_available():
        expected = "mps"
    assert select_device("auto").type == expected
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            select_device("cuda")


def test_registry_lists_bundled_default_and_user_folders(tmp_path, monkeypatch, darkness_folder):
    monkeypatch.setenv("NAPARI_METASTASIS_MODELS", str(darkness_folder.parent))
    models = available_models()
    assert models["default"] == BUNDLED_DIR / "default"
    assert models["darkness"] == darkness_folder
    assert resolve_model("darkness") == darkness_folder
    assert resolve_model(str(darkness_folder)) == darkness_folder
    with pytest.raises(ModelError, match=r"available models: .*default"):
        resolve_model("no-such-model")


@pytest.mark.slow
def test_bundled_default_model_loads_and_scores_patches():
    model = load_model("default", device="cpu")
    assert model.config.num_classes == 2 and model.positive_class in ("tumor", "tumour")
    assert (BUNDLED_DIR / "default" / "README.md").is_file()
    size = sum(p.stat().st_size for p in (BUNDLED_DIR / "default").iterdir())
    assert size < 5 * 1024 * 1024
    h, w = model.input_size
    probs = model.predict(np.full((2, h, w, 3), 240, np.uint8))
    assert probs.shape == (2, 2) and np.all((probs >= 0) & (probs <= 1))
