"""``models pull NAME`` against a local stand-in for the Hugging Face hub (no internet here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from engine_helpers import DarknessModel, darkness_config
from hub_standin import HubStandIn

from napari_metastasis.cli import main
from napari_metastasis.models import load_model

REVISION = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"


def zoo_files(tmp_path) -> dict[str, bytes]:
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(DarknessModel()).save(str(scripted))
    registry = {
        "models": {
            "darkness-test": {
                "description": "mean darkness, for tests",
                "hf_repo_id": "someone/darkness-test",
                "hf_revision": REVISION,
            }
        }
    }
    return {
        "datasets/kaczmarj/wsinfer-model-zoo-json/main/wsinfer-zoo-registry.json": json.dumps(
            registry
        ).encode(),
        f"someone/darkness-test/{REVISION}/config.json": json.dumps(darkness_config(16)).encode(),
        f"someone/darkness-test/{REVISION}/torchscript_model.pt": scripted.read_bytes(),
        "someone/other/main/config.json": b"{not json",
        "someone/other/main/torchscript_model.pt": b"x",
    }


def test_pull_fetches_the_pinned_revision_into_the_models_folder(tmp_path, monkeypatch, capsys):
    with HubStandIn(zoo_files(tmp_path)) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        dest = tmp_path / "models"
        assert main(["models", "pull", "darkness-test", "--dest", str(dest)]) == 0
        assert capsys.readouterr().out.strip().endswith(str(dest / "darkness-test"))
        assert any(REVISION in r for r in hub.requests)  # the zoo's pinned revision, not main
        # a second pull refuses to overwrite, --force replaces
        assert main(["models", "pull", "darkness-test", "--dest", str(dest)]) == 1
        assert "already exists" in capsys.readouterr().err
        assert main(["models", "pull", "darkness-test", "--dest", str(dest), "--force"]) == 0
        # unknown names and broken configs are one-line errors, and leave nothing behind
        assert main(["models", "pull", "nope", "--dest", str(dest)]) == 1
        assert "nope: not in the WSInfer zoo (models: darkness-test)" in capsys.readouterr().err
        assert main(["models", "pull", "someone/other", "--dest", str(dest)]) == 1
        assert "not valid JSON" in capsys.readouterr().err
    assert sorted(p.name for p in dest.iterdir()) == ["darkness-test"]
    folder = dest / "darkness-test"
    assert json.loads((folder / "zoo_source.json").read_text())["hf_revision"] == REVISION
    model = load_model(folder, device="cpu")
    probs = model.predict(np.full((1, 16, 16, 3), 51, np.uint8))
    assert probs[0, 1] == pytest.approx(0.8, abs=1e-5)


@pytest.mark.slow
def test_pulled_model_is_found_by_name(project_root, tmp_path):
    """From the command line, as a user runs it: pull, then --model NAME finds it."""
    home = tmp_path / "home"
    with HubStandIn(zoo_files(tmp_path)) as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HOME": str(home),
            "PYTHONPATH": str(project_root),
        }
        env.pop("NAPARI_METASTASIS_MODELS", None)
        cli = [sys.executable, "-m", "napari_metastasis.cli"]
        pull = subprocess.run(
            [*cli, "models", "pull", "darkness-test"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pull.returncode == 0, pull.stderr
    listed = subprocess.run([*cli, "models"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    line = next(r for r in listed.stdout.splitlines() if r.startswith("darkness-test\t"))
    assert str(home / ".napari-metastasis" / "models" / "darkness-test") in line


@pytest.mark.slow
def test_nothing_reaches_for_the_hub_unless_asked(project_env):
    code = (
        "import sys, napari_metastasis.cli, napari_metastasis.models, napari_metastasis.pipeline.slide_outputs;"
        "print('huggingface_hub' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=project_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("name", ["..", "org/..", "a/b/c", ".hidden", "x/"])
def test_a_name_with_path_syntax_never_reaches_the_file_system(tmp_path, monkeypatch, capsys, name):
    """The last part of NAME becomes a folder that --force replaces: ``..`` there would delete
    the models folder's parent (a registry may list any key)."""
    files = zoo_files(tmp_path)
    key = "datasets/kaczmarj/wsinfer-model-zoo-json/main/wsinfer-zoo-registry.json"
    registry = json.loads(files[key])
    registry["models"][name] = registry["models"]["darkness-test"]
    files[key] = json.dumps(registry).encode()
    parent = tmp_path / "home"
    dest = parent / "models"
    dest.mkdir(parents=True)
    (parent / "keep.txt").write_text("the user's file")
    with HubStandIn(files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert main(["models", "pull", name, "--dest", str(dest), "--force"]) == 1
    err = capsys.readouterr().err
    assert "is not a model name" in err and "Traceback" not in err
    assert (parent / "keep.txt").read_text() == "the user's file"
    assert list(dest.iterdir()) == []
