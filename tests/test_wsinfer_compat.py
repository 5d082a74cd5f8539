"""Every model folder the project writes gives the same answer in WSInfer as here; WSInfer's
one-output models and transform arguments work here; torch.export programs load, safely."""

from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pytest
import torch
import wsinfer_rules
from engine_helpers import DarknessModel, darkness_config

from napari_metastasis.errors import ModelError
from napari_metastasis.models import BUNDLED_DIR, load_model
from napari_metastasis.models.exported import export_program
from napari_metastasis.models.networks import SmallCNN
from napari_metastasis.slides.slide import Slide
from napari_metastasis.training.export import export_model


def level0_patches(path, side: int, n: int = 6) -> list[np.ndarray]:
    """Level-0 patches of a slide, as WSInfer reads them (read_region at level 0)."""
    with Slide(path) as slide:
        width, height = slide.dimensions
        xs = np.linspace(0, width - side, n).astype(int)
        ys = np.linspace(0, height - side, n).astype(int)[::-1]
        return [
            slide.read_region(0, int(x), int(y), side, side) for x, y in zip(xs, ys, strict=True)
        ]


@pytest.fixture(scope="module")
def exported_folder(tmp_path_factory):
    """A folder written by the training export, as `train` writes it."""
    torch.manual_seed(0)
    members = [SmallCNN(width=4), SmallCNN(width=4)]
    return export_model(
        members,
        tmp_path_factory.mktemp("export") / "mine",
        architecture="SmallCNN(width=4) x2",
        patch_px=16,
        spacing_um=2.0,
        card_markdown="# card\n",
        card_data={"threshold": 0.5},
    )


def project_folders(exported_folder):
    return {"bundled default": BUNDLED_DIR / "default", "training export": exported_folder}


@pytest.mark.slow
@pytest.mark.parametrize("which", ["bundled default", "training export"])
def test_project_model_folders_give_the_same_answer_in_wsinfer(which, exported_folder, svs_file):
    folder = project_folders(exported_folder)[which]
    config = json.loads((folder / "config.json").read_text())
    wsinfer_rules.validate_config(config)
    # WSInfer reads the patch at the slide's resolution: the config must resize it to the size
    # the network was trained on, or WSInfer silently feeds it a bigger patch
    side = wsinfer_rules.slide_patch_size(config, slide_mpp=0.499)
    assert side != config["patch_size_pixels"]
    patches = level0_patches(svs_file, side)
    tensor = wsinfer_rules.preprocess(config, patches[0])
    size = config["patch_size_pixels"]
    assert tuple(tensor.shape) == (3, size, size), f"{which}: no Resize to the patch size"
    network = torch.jit.load(str(folder / "torchscript_model.pt"), map_location="cpu").eval()
    theirs = wsinfer_rules.probabilities(network, config, patches)
    ours = load_model(folder, device="cpu").predict(np.stack(patches))
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_without_its_resize_the_bundled_config_would_feed_wsinfer_level0_sized_patches(svs_file):
    """WSInfer resizes only when the config says so: without the Resize step the network would
    get the level-0 patch (80 µm at 0.499 µm/px: 160 px), not its 80 px."""
    config = json.loads((BUNDLED_DIR / "default" / "config.json").read_text())
    size_um = config["patch_size_pixels"] * config["spacing_um_px"]
    config["transform"] = [s for s in config["transform"] if s["name"] != "Resize"]
    side = wsinfer_rules.slide_patch_size(config, slide_mpp=0.499)
    got = wsinfer_rules.preprocess(config, level0_patches(svs_file, side, 1)[0]).shape[-1]
    assert got == round(size_um / 0.499) != config["patch_size_pixels"]


# --- one-output models: a sigmoid, as in WSInfer ----------------------------------------------------
class OneLogit(torch.nn.Module):
    """Darkness as one logit, shaped (N, 1) or (N,)."""

    def __init__(self, flat: bool):
        super().__init__()
        self.flat = flat
        self.darkness = DarknessModel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.darkness(x)
        logit = logits[:, 1] - logits[:, 0]
        return logit if self.flat else logit[:, None]


@pytest.mark.parametrize(("flat", "weights"), [(False, "pt"), (True, "pt"), (False, "pt2")])
def test_one_output_models_get_a_sigmoid(tmp_path, flat, weights):
    folder = tmp_path / "one"
    folder.mkdir()
    network = OneLogit(flat).eval()
    if weights == "pt":
        torch.jit.script(network).save(str(folder / "torchscript_model.pt"))
    else:
        export_program(network, torch.rand(2, 3, 16, 16), folder / "model.pt2")
    config = darkness_config(16, num_classes=1, class_names=["tumor"])
    (folder / "config.json").write_text(json.dumps(config))
    model = load_model(folder, device="cpu")
    patches = [np.full((16, 16, 3), v, np.uint8) for v in (0, 64, 128, 255)]
    probs = model.predict(np.stack(patches))
    assert probs.shape == (4, 1)
    darkness = 1 - np.array([0, 64, 128, 255]) / 255
    np.testing.assert_allclose(probs[:, 0], darkness.clip(1e-6, 1 - 1e-6), atol=1e-4)
    if flat:  # WSInfer's own code squeezes dimension 1, which an (N,) output lacks
        with pytest.raises(IndexError):
            wsinfer_rules.probabilities(network, config, patches)
        return
    theirs = wsinfer_rules.probabilities(network, config, patches)
    np.testing.assert_allclose(probs[:, 0], theirs.reshape(-1), atol=1e-5)


# --- transform arguments WSInfer passes to torchvision ----------------------------------------------
def test_resize_interpolation_is_honoured_like_torchvision(tmp_path):
    folder = tmp_path / "bicubic"
    folder.mkdir()
    torch.jit.script(DarknessModel()).save(str(folder / "torchscript_model.pt"))
    config = darkness_config(16)
    config["transform"][0]["arguments"] = {"size": [16], "interpolation": 3, "antialias": True}
    config["transform"][2]["arguments"] = {"mean": [0.5], "std": [0.5], "inplace": False}
    (folder / "config.json").write_text(json.dumps(config))
    wsinfer_rules.validate_config(config)
    rng = np.random.default_rng(0)
    patches = [rng.integers(0, 256, (37, 37, 3), dtype=np.uint8) for _ in range(3)]
    theirs = wsinfer_rules.probabilities(DarknessModel(), config, patches)
    ours = load_model(folder, device="cpu").predict(np.stack(patches))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    config["transform"][0]["arguments"]["interpolation"] = 2  # bilinear differs measurably
    assert not np.allclose(wsinfer_rules.probabilities(DarknessModel(), config, patches), ours)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"name": "Resize", "arguments": {"size": 16, "mode": "x"}}, r"has \['mode'\]"),
        ({"name": "Resize", "arguments": {"size": 16, "interpolation": 9}}, "filter codes"),
        ({"name": "Resize", "arguments": {"size": 16, "max_size": 8}}, "max_size"),
    ],
)
def test_arguments_wsinfer_could_not_use_are_refused(step, message):
    from napari_metastasis.models import parse_config

    config = darkness_config(16)
    config["transform"][0] = step
    with pytest.raises(ModelError, match=message):
        parse_config(config)
    config = darkness_config(16)
    config["transform"][1] = {"name": "ToTensor", "arguments": {"x": 1}}
    with pytest.raises(ModelError, match="ToTensor does not take"):
        parse_config(config)


# --- the config schema: ours inside WSInfer's ---------------------------------------------------------
def _wsinfer_zoo_config(**changes):
    """A config shaped as WSInfer's zoo writes them (e.g. its TCGA-BRCA ResNet-34)."""
    config = {
        "spec_version": "1.0",
        "architecture": "resnet34",
        "num_classes": 2,
        "class_names": ["notumor", "tumor"],
        "patch_size_pixels": 350,
        "spacing_um_px": 0.25,
        "transform": [
            {"name": "Resize", "arguments": {"size": 224}},
            {"name": "ToTensor"},
            {
                "name": "Normalize",
                "arguments": {"mean": [0.7238, 0.5716, 0.6779], "std": [0.112, 0.1459, 0.1089]},
            },
        ],
    }
    config.update(changes)
    return config


def _steps(*steps):
    return {"transform": list(steps)}


TO_TENSOR = {"name": "ToTensor"}
#: Configs WSInfer takes and torchvision runs: accepted here too.
WSINFER_RUNS = [
    {},
    {"num_classes": 2.0, "patch_size_pixels": 350.0},  # JSON Schema's integers include 2.0
    {"spacing_um_px": 1},
    {"class_names": ["Tumor", "Stroma", "Lymph"], "num_classes": 3},
    {"positive_class": "tumor", "other_tool_block": {"anything": [1, 2]}},
    _steps({"name": "Resize", "arguments": {"size": [224, 224]}}, TO_TENSOR),
    _steps({"name": "Resize", "arguments": {"size": [224], "interpolation": 3}}, TO_TENSOR),
    _steps(
        {"name": "Resize", "arguments": {"size": 224, "max_size": 300, "antialias": True}},
        TO_TENSOR,
    ),
    _steps({"name": "ToTensor", "arguments": {}}),
    _steps(
        TO_TENSOR,
        {"name": "Normalize", "arguments": {"mean": [0.5], "std": [0.5], "inplace": False}},
    ),
]
#: Configs WSInfer's schema refuses: refused here too.
WSINFER_REFUSES = [
    {"spec_version": "2.0"},
    {"spec_version": 1.0},
    {"num_classes": 0},
    {"num_classes": True},
    {"patch_size_pixels": 0},
    {"spacing_um_px": -0.5},
    {"spacing_um_px": "0.25"},
    {"architecture": None},
    {"class_names": ["tumor", "tumor"]},
    {"class_names": "tumor"},
    {"transform": {"name": "ToTensor"}},
    _steps({"name": "RandomFlip"}, TO_TENSOR),
    _steps({"name": "ToTensor", "p": 0.5}),
    _steps({"name": "ToTensor", "arguments": None}),
    _steps({"arguments": {}}, TO_TENSOR),
    _steps("ToTensor"),
]


@pytest.mark.parametrize("change", WSINFER_RUNS)
def test_configs_wsinfer_runs_are_accepted(change):
    from napari_metastasis.models import parse_config

    config = _wsinfer_zoo_config(**change)
    wsinfer_rules.validate_config(config)
    parse_config(config)


@pytest.mark.parametrize("change", WSINFER_REFUSES)
def test_configs_wsinfer_refuses_are_refused_in_one_sentence(change):
    import jsonschema

    from napari_metastasis.models import parse_config

    config = _wsinfer_zoo_config(**change)
    with pytest.raises(jsonschema.ValidationError):
        wsinfer_rules.validate_config(config)
    with pytest.raises(ModelError, match=r"^config\.json: field '[\w.\[\]]+' ") as caught:
        parse_config(config)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_the_shipped_schema_is_a_valid_schema_and_the_shipped_configs_pass_both():
    import jsonschema

    from napari_metastasis.models.contract import config_schema

    jsonschema.Draft202012Validator.check_schema(config_schema())
    for folder in sorted(BUNDLED_DIR.iterdir()):
        config = json.loads((folder / "config.json").read_text())
        jsonschema.validate(config, config_schema())
        wsinfer_rules.validate_config(config)


# --- torch.export programs ----------------------------------------------------------------------------
class WeightedDarkness(torch.nn.Module):
    """DarknessModel with a weight (1.0), so the exported program stores a tensor."""

    def __init__(self):
        super().__init__()
        self.darkness = DarknessModel()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.darkness(x) * self.scale


@pytest.fixture
def pt2_folder(tmp_path):
    folder = tmp_path / "exported"
    folder.mkdir()
    export_program(WeightedDarkness(), torch.rand(2, 3, 16, 16) * 2 - 1, folder / "model.pt2")
    (folder / "config.json").write_text(json.dumps(darkness_config(16)))
    return folder


def test_an_exported_program_loads_and_is_preferred(pt2_folder):
    torch.jit.script(OneLogit(False)).save(str(pt2_folder / "torchscript_model.pt"))  # ignored
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(pt2_folder, device="cpu")
    probs = model.predict(np.stack([np.full((16, 16, 3), 51, np.uint8)] * 3))
    np.testing.assert_allclose(probs[:, 1], 0.8, atol=1e-5)
    assert not [w for w in caught if "torch.jit" in str(w.message)]  # no TorchScript involved


def _rewrite(path, change):
    """Copy the archive with ``change(name, data) -> (name, data) | None`` applied to each file."""
    items = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            changed = change(name, archive.read(name))
            if changed is not None:
                items.append(changed)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in items:
            archive.writestr(name, data)


def _pickled(name, data):
    if name.endswith("model_weights_config.json"):
        data = data.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
    return name, data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_pickled, "stored pickled; refused"),
        (
            lambda n, d: (n, d) if "sample_inputs" not in n else (n, b"not a tensor file"),
            "plain tensors",
        ),
    ],
)
def test_unsafe_exported_programs_are_refused_before_loading(pt2_folder, change, message):
    _rewrite(pt2_folder / "model.pt2", change)
    with pytest.raises(ModelError, match=message):
        load_model(pt2_folder, device="cpu")


def test_archives_with_other_files_are_refused(pt2_folder):
    path = pt2_folder / "model.pt2"
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("archive/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(ModelError, match="compiled code"):
        load_model(pt2_folder, device="cpu")
