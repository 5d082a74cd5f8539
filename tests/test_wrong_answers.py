"""Wrong answers are never reported as success (issue 15, items 1b, 3, 4 and the misleading errors).

A model that returns NaN, a model wrong only for batches of more than one patch, a slide smaller than
one patch, a region outside the slide, and a model nobody trusted yet: each is a clear error naming
the cause, with a non-zero exit code, and nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import darkness_config, write_darkness_model, write_pyramid_tiff

from napari_metastasis.cli import main
from napari_metastasis.errors import ModelError
from napari_metastasis.models import load_model
from napari_metastasis.models.trust import check_trust, trust_store


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """1 µm/px, 256 x 192 px: a dark block on white glass (the model wants 32 px at 1 µm/px)."""
    image = np.full((192, 256, 3), 255, np.uint8)
    image[32:160, 64:192] = 40
    image[32:160, 64:192, 0] = np.arange(128, dtype=np.uint8)[None, :]  # texture
    return write_pyramid_tiff(tmp_path_factory.mktemp("s") / "block.tiff", image, mpp=1.0, levels=2)


def _folder(tmp_path, module: torch.nn.Module, name: str, patch: int = 32):
    folder = tmp_path / name
    folder.mkdir()
    torch.jit.script(module).save(str(folder / "torchscript_model.pt"))
    (folder / "config.json").write_text(json.dumps(darkness_config(patch_size=patch)))
    return folder


def _predict(capsys, slide, folder, out, *extra):
    code = main(["predict", str(slide), "--model", str(folder), "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class AlwaysNaN(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 2), float("nan"))


class NaNOnTexture(torch.nn.Module):
    """Finite on blank patches (the load-time check passes), NaN where the patch has texture."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        textured = (x.flatten(1).std(dim=1) > 0.01).float()
        logit = torch.zeros_like(textured) / (1.0 - textured)
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


class OneRowPerBatch(torch.nn.Module):
    """Right for a batch of one patch only: returns one row whatever the batch size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        darkness = 1.0 - (x * 0.5 + 0.5).mean()
        return torch.stack([1.0 - darkness, darkness]).reshape(1, 2)


def test_nan_at_load_time_is_an_error(tmp_path, capsys, slide):
    folder = _folder(tmp_path, AlwaysNaN(), "always-nan")
    code, out, err = _predict(capsys, slide, folder, tmp_path / "out", "--trust-model")
    assert code == 1 and out == ""
    assert "model always-nan: the network returns non-finite values" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_nan_in_a_batch_is_an_error_naming_model_and_patch(tmp_path, capsys, slide):
    folder = _folder(tmp_path, NaNOnTexture(), "nan-on-texture")
    out_dir = tmp_path / "out"
    code, out, err = _predict(
        capsys, slide, folder, out_dir, "--trust-model", "--tissue-min-fraction", "0"
    )
    assert code == 1
    assert "model nan-on-texture: non-finite output (nan) for the patch at level-0 x=" in err
    assert "block.tiff" in err and "max tumor probability nan" not in out
    assert not list(out_dir.glob("block.*"))


def test_model_wrong_for_batches_is_refused_at_load(tmp_path):
    folder = _folder(tmp_path, OneRowPerBatch(), "one-row")
    with pytest.raises(ModelError, match=r"returned \(1, 2\) for a batch of 2 patches"):
        load_model(folder, device="cpu")


def test_slide_smaller_than_a_patch_says_why(tmp_path, capsys, slide):
    folder = write_darkness_model(tmp_path / "huge-patch", patch_size=32, spacing=16.0)
    code, out, err = _predict(capsys, slide, folder, tmp_path / "out")
    assert code == 1 and "0 patches" not in out
    assert "is smaller than one patch of the model (512 µm" in err


def test_region_outside_the_slide_says_why(tmp_path, capsys, slide):
    folder = write_darkness_model(tmp_path / "darkness", patch_size=32)
    code, out, err = _predict(
        capsys, slide, folder, tmp_path / "out", "--region", "5000,5000,100,100"
    )
    assert code == 1 and "0 patches" not in out
    assert "lies outside the slide (0, 0)-(256, 192) px" in err


def test_no_tissue_says_why(tmp_path, capsys):
    blank = write_pyramid_tiff(tmp_path / "glass.tiff", np.full((128, 128, 3), 250, np.uint8), 1.0)
    folder = write_darkness_model(tmp_path / "darkness", patch_size=32)
    code, out, _err = _predict(capsys, blank, folder, tmp_path / "out")
    assert code == 0
    assert "0 patches (no patch has 0.25 of its area in tissue" in out
    assert "probability n/a" in out and "nan" not in out


def test_untrusted_model_needs_trust_model_once(tmp_path, capsys, slide):
    folder = write_darkness_model(tmp_path / "colleague", patch_size=32, trust=False)
    code, _out, err = _predict(capsys, slide, folder, tmp_path / "out")
    assert code == 1 and "--trust-model" in err and "is not part of napari-metastasis" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    code, _out, err = _predict(capsys, slide, folder, tmp_path / "out", "--trust-model")
    assert code == 0, err
    assert check_trust(folder).trusted and trust_store().is_file()
    assert trust_store().parent == Path(os.environ["NAPARI_METASTASIS_CONFIG_DIR"])  # not ~/.config

    code, _out, err = _predict(capsys, slide, folder, tmp_path / "out2")  # remembered
    assert code == 0, err

    torch.jit.save(  # the same folder with other bytes: asked again
        torch.jit.load(str(folder / "torchscript_model.pt")),
        str(folder / "torchscript_model.pt"),
        _extra_files={"changed": "yes"},
    )
    code, _out, err = _predict(capsys, slide, folder, tmp_path / "out3")
    assert code == 1 and "--trust-model" in err


def test_bundled_model_needs_no_trust():
    state = check_trust("default")
    assert state.bundled and state.trusted and state.sha256 is None


def test_evaluate_asks_for_trust_too(tmp_path, capsys):
    folder = write_darkness_model(tmp_path / "colleague", patch_size=32, trust=False)
    code = main(
        [
            "evaluate",
            "--model",
            str(folder),
            "--dataset",
            str(tmp_path),
            "--out",
            str(tmp_path / "e"),
        ]
    )
    assert code == 1 and "--trust-model" in capsys.readouterr().err
