"""End to end: extract -> train one short epoch -> evaluate, through the CLI; plus the export
contract, resumable checkpoints and reproducibility of the training loop."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from shapely.geometry import box

from napari_metastasis.annotations import Annotation, write_annotations
from napari_metastasis.cli import main
from napari_metastasis.datasets.ingest import ingest_labelled_folder
from napari_metastasis.errors import CancelledError
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.models import load_model
from napari_metastasis.models.networks import Ensemble, SmallCNN
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.training.augment import AugmentConfig
from napari_metastasis.training.trainer import TrainConfig, predict_probabilities, train_model

TINY = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 8, "width": 4}


@pytest.mark.slow
def test_extract_train_evaluate_cli(ncrf_dir, patches_dir, tmp_path, capsys):
    ds, model_dir, eval_dir = tmp_path / "ds", tmp_path / "model", tmp_path / "eval"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            main(
                [
                    "extract",
                    "--patch-folder",
                    str(patches_dir / "camelyon16_256"),
                    "--annotations",
                    *[str(ncrf_dir / f"Tumor_{n}.json") for n in ("001", "004", "064")],
                    "--spacing",
                    "2",
                    "--size",
                    "24",
                    "--rule",
                    "fraction",
                    "--out",
                    str(ds),
                ]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "28 tumour / 29 normal" in out and "tumor_064: 4 tumour, 22 normal" in out
    assert len(list((ds / "images").glob("*.png"))) == 57
    assert len(list((ds / "masks").glob("*.png"))) == 57

    assert (
        main(
            [
                "train",
                str(ds),
                "--out",
                str(model_dir),
                "--epochs",
                "1",
                "--steps-per-epoch",
                "2",
                "--batch-size",
                "8",
                "--width",
                "4",
                "--crop",
                "16",
                "--spacing",
                "2",
                "--val-slides",
                "tumor_064",
                "--no-progress",
            ]
        )
        == 0
    )
    config = json.loads((model_dir / "config.json").read_text())
    assert config["patch_size_pixels"] == 16 and config["spacing_um_px"] == 2.0
    assert config["class_names"] == ["normal", "tumor"]
    # Resize to the network's input, so WSInfer feeds it the size it was trained on
    assert config["transform"] == [
        {"name": "Resize", "arguments": {"size": 16}},
        {"name": "ToTensor", "arguments": {}},
    ]
    assert (model_dir / "model.safetensors").is_file()
    card = json.loads((model_dir / "model_card.json").read_text())
    assert 0 <= card["threshold"] <= 1 and "tumor_064" in card["validation"]["scheme"]
    assert "Model card" in (model_dir / "README.md").read_text()
    model = load_model(model_dir, device="cpu")  # the engine's loader accepts our contract
    assert model.positive_class == "tumor"

    # Weights as data (model.safetensors): no code from the folder runs, so no trust step.
    assert (
        main(["evaluate", "--model", str(model_dir), "--dataset", str(ds), "--out", str(eval_dir)])
        == 0
    )
    metrics = json.loads((eval_dir / "metrics.json").read_text())["patches"]
    assert metrics["n"] == 57 and 0 <= metrics["roc_auc"] <= 1
    assert sum(map(sum, metrics["confusion"])) == 57
    assert (eval_dir / "roc.png").stat().st_size > 1000
    assert (eval_dir / "predictions.csv").read_text().count("\n") == 58


def test_evaluate_slides_cli(tmp_path, capsys):
    tumour = box(10_000, 10_000, 14_000, 16_000)  # 0.97 x 1.46 mm at 0.243 µm/px
    ann = tmp_path / "tumour.geojson"
    write_annotations(ann, [Annotation(tumour, "Tumor")])
    grid = PatchGrid(
        width=40_000, height=40_000, mpp_x=0.243, mpp_y=0.243, patch_px=64, spacing_um=1.0
    )
    good = ProbabilityMap.empty(grid)
    good.values[:] = 0.05
    cells = grid.cells_in_geometry(tumour)
    good.update(cells, np.full(len(cells), 0.9))
    good.save(tmp_path / "tumour.tif")
    normal = ProbabilityMap(grid, np.full(grid.shape, 0.1, np.float32))
    normal.save(tmp_path / "normal.tif")
    assert (
        main(
            [
                "evaluate",
                "--maps",
                str(tmp_path / "tumour.tif"),
                str(tmp_path / "normal.tif"),
                "--annotations",
                str(ann),
                "none",
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())["slides"]
    assert result["slide_auc"] == 1.0
    assert result["froc"]["froc_score"] == 1.0 and result["froc"]["n_lesions"] == 1
    assert result["per_slide"][0]["dice"] == 1.0
    assert (tmp_path / "eval" / "froc.png").is_file()
    assert (
        main(["evaluate", "--maps", str(tmp_path / "normal.tif"), "--out", str(tmp_path / "e2")])
        == 1
    )
    assert "1 maps but 0 annotations" in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_set(patches_dir):
    return ingest_labelled_folder(
        patches_dir / "camelyon16_256", spacing_um=2.0, patch_size=24, source_mpp=0.243
    )


def _config(**kw):
    base = dict(
        TINY, crop_px=16, spacing_um=2.0, epochs=2, seed=3, ema=0.9, augment=AugmentConfig()
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_same_weights(tmp_path, small_set):
    train = small_set.subset(np.flatnonzero(small_set.slides != "tumor_064"))
    val = small_set.subset(np.flatnonzero(small_set.slides == "tumor_064"))
    straight = train_model(train, val, _config(), progress=False)
    calls = {"n": 0}

    def cancel_in_second_epoch():
        calls["n"] += 1
        return calls["n"] > 3  # epoch 1 has 2 steps; stop in epoch 2

    ckpt = tmp_path / "ck.pt"
    with pytest.raises(CancelledError):
        train_model(
            train, val, _config(), checkpoint=ckpt, progress=False, cancel=cancel_in_second_epoch
        )
    resumed = train_model(train, val, _config(), checkpoint=ckpt, resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    for a, b in zip(
        straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)
    with pytest.raises(Exception, match="different settings"):
        train_model(train, val, _config(lr=0.1), checkpoint=ckpt, resume=True, progress=False)


@pytest.mark.slow
def test_ensemble_averages_member_probabilities(small_set):
    torch.manual_seed(0)
    members = [SmallCNN(width=4).eval(), SmallCNN(width=4).eval()]
    cfg = _config()
    ens = predict_probabilities(Ensemble(members), small_set, cfg)
    each = [predict_probabilities(m, small_set, cfg) for m in members]
    np.testing.assert_allclose(ens, np.mean(each, axis=0), atol=1e-5)


@pytest.mark.slow
def test_hard_negative_mining_changes_the_draws_and_resumes_to_the_same_weights(
    tmp_path, small_set
):
    train = small_set.subset(np.flatnonzero(small_set.slides != "tumor_064"))
    mining = _config(epochs=3, hard_negative_start=1, hard_negative_every=1, hard_negative_top=0.3)
    plain = train_model(train, None, _config(epochs=3), progress=False)
    mined = train_model(train, None, mining, progress=False)
    changed = [
        not torch.equal(a, b)
        for a, b in zip(
            plain.model.state_dict().values(), mined.model.state_dict().values(), strict=True
        )
    ]
    assert any(changed)  # epochs 2-3 drew other normal patches
    calls = {"n": 0}

    def cancel_in_third_epoch():
        calls["n"] += 1
        return calls["n"] > 5  # 2 steps an epoch

    ckpt = tmp_path / "ck.pt"
    with pytest.raises(CancelledError):
        train_model(
            train, None, mining, checkpoint=ckpt, progress=False, cancel=cancel_in_third_epoch
        )
    resumed = train_model(train, None, mining, checkpoint=ckpt, resume=True, progress=False)
    for a, b in zip(
        mined.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)
