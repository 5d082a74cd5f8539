"""The project's own models load as data, and training checkpoints are read as data (issue #15,
items 1(c) and 2): nothing in a model folder or checkpoint written by someone else runs."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from napari_metastasis.errors import DatasetError, ModelError
from napari_metastasis.models import BUNDLED_DIR, load_model
from napari_metastasis.models.networks import Ensemble, SmallCNN
from napari_metastasis.models.safe_weights import NETWORK_KEY, SAFETENSORS_FILE
from napari_metastasis.training.card import base_card
from napari_metastasis.training.export import publish_model
from napari_metastasis.training.trainer import TrainConfig, load_checkpoint, train_model


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: proof that a checkpoint ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _planted_checkpoint(path, marker) -> None:
    torch.save({"config": {}, "model": {}, "payload": _Payload(str(marker))}, path)


def test_resume_refuses_a_pickle_payload_without_running_it(tmp_path):
    ckpt, marker = tmp_path / "seed0.pt", tmp_path / "PWNED"
    _planted_checkpoint(ckpt, marker)
    with pytest.raises(DatasetError, match="refused to resume") as info:
        load_checkpoint(ckpt)
    assert not marker.exists()
    assert "\n" not in str(info.value) and str(ckpt) in str(info.value)
    # the same through train_model(resume=True), which is what `train --resume` calls
    rng = np.random.default_rng(0)
    from napari_metastasis.datasets.patchset import PatchSet

    patches = PatchSet(
        images=rng.integers(0, 255, (8, 24, 24, 3), dtype=np.uint8),
        labels=np.array([0, 1] * 4),
        slides=np.array(["a"] * 8, dtype=object),
        spacing_um=2.0,
    )
    config = TrainConfig(width=4, crop_px=16, spacing_um=2.0, epochs=1, steps_per_epoch=1)
    with pytest.raises(DatasetError, match="refused to resume"):
        train_model(patches, None, config, checkpoint=ckpt, resume=True, progress=False)
    assert not marker.exists()


def test_resume_reports_a_damaged_checkpoint_in_one_sentence(tmp_path):
    ckpt = tmp_path / "seed0.pt"
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DatasetError, match="damaged or not a checkpoint"):
        load_checkpoint(ckpt)
    torch.save([1, 2, 3], ckpt)
    with pytest.raises(DatasetError, match="not a training checkpoint"):
        load_checkpoint(ckpt)


def _write_model(folder, members, tta=True):
    publish_model(members, folder, base_card(folder.name, "test", 1, 48, 1.0), tta=tta)
    return folder


@pytest.mark.slow
def test_own_models_load_from_safetensors_without_their_torchscript(tmp_path):
    torch.manual_seed(0)
    members = [SmallCNN(width=4).eval(), SmallCNN(width=4).eval()]
    folder = _write_model(tmp_path / "m", members)
    # The TorchScript program is only for WSInfer: replace it by garbage, the model still loads.
    (folder / "torchscript_model.pt").write_bytes(b"not even a zip")
    model = load_model(folder, device="cpu")
    assert not isinstance(model.module, torch.jit.ScriptModule)
    x = np.random.default_rng(1).integers(0, 255, (5, 48, 48, 3), dtype=np.uint8)
    expected = torch.softmax(Ensemble(members, tta=True)(model.prepare(x).contiguous()), 1)
    np.testing.assert_allclose(model.predict(x), expected.detach().numpy(), atol=1e-5)


@pytest.mark.slow
def test_safetensors_that_do_not_fit_the_named_network_are_refused(tmp_path):
    folder = _write_model(tmp_path / "m", [SmallCNN(width=4).eval()])
    config = json.loads((folder / "config.json").read_text())
    config[NETWORK_KEY]["width"] = 8
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="do not fit the network"):
        load_model(folder, device="cpu")
    config[NETWORK_KEY] = {"name": "os.system", "width": 4, "members": 1}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="unknown network"):
        load_model(folder, device="cpu")
    config[NETWORK_KEY] = {"name": "smallcnn_ensemble", "width": 4, "members": 1}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / SAFETENSORS_FILE).write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelError, match="not a readable safetensors"):
        load_model(folder, device="cpu")


@pytest.mark.slow
def test_bundled_model_ships_weights_as_data():
    folder = BUNDLED_DIR / "default"
    config = json.loads((folder / "config.json").read_text())
    assert config[NETWORK_KEY]["name"] == "smallcnn_ensemble"
    assert (folder / SAFETENSORS_FILE).stat().st_size < 5_000_000
    # safetensors: an 8-byte header length, then a JSON header, then raw bytes (no pickle opcodes)
    raw = (folder / SAFETENSORS_FILE).read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert all("dtype" in v for k, v in header.items() if k != "__metadata__")
    # WSInfer reads the config's Resize: the network's own input size
    resize = [t for t in config["transform"] if t["name"] == "Resize"]
    assert resize == [{"name": "Resize", "arguments": {"size": config["patch_size_pixels"]}}]
    model = load_model("default", device="cpu")
    assert not isinstance(model.module, torch.jit.ScriptModule)
