"""Packaging facts that need no build: metadata in one place, extras, the manifest, the license, types."""

from __future__ import annotations

import configparser
import re

import pytest


def _requirement_names(block: str) -> list[str]:
    names = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower())
    return names


def test_metadata_lives_in_setup_cfg_and_pyproject_only_with_each_requirement_once(project_root):
    assert not (project_root / "setup.py").exists()
    config = configparser.ConfigParser()
    config.read(project_root / "setup.cfg", encoding="utf-8")
    required = _requirement_names(config["options"]["install_requires"])
    assert len(required) == len(set(required)), required
    # what not every user needs is an extra, not a requirement
    assert not {"distributed", "h5py", "pytest"} & set(required)
    assert "jsonschema" in required  # every model config is checked against its schema
    extras = config["options.extras_require"]
    assert "distributed" in _requirement_names(extras["distributed"])
    assert "h5py" in _requirement_names(extras["pcam-h5"])
    assert config["metadata"]["long_description"] == "file: README.md"


def test_a_missing_extra_is_one_sentence_naming_the_pip_command():
    from napari_metastasis.errors.extras import MissingExtraError, require_extra

    assert require_extra("json", "Reading JSON").loads("1") == 1
    with pytest.raises(MissingExtraError) as info:
        require_extra("no_such_module_here", "Doing a thing")
    message = str(info.value)
    assert message.startswith("Doing a thing needs the optional package 'no_such_module_here'")
    assert "pip install 'napari-metastasis[no_such_module_here]'" in message


def test_license_manifest_and_types_ship(project_root):
    assert "BSD 3-Clause License" in (project_root / "LICENSE").read_text()
    setup_cfg = (project_root / "setup.cfg").read_text()
    assert "license = BSD-3-Clause" in setup_cfg and "py.typed" in setup_cfg
    assert "models/*.schema.json" in setup_cfg  # the model-config schema ships in the wheel
    assert (project_root / "napari_metastasis" / "py.typed").is_file()
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(project_root / "napari_metastasis" / "napari.yaml")
    assert manifest.display_name == "Metastasis Detection"
    assert set(manifest.categories) == {"Annotation", "Segmentation", "Measurement", "IO"}
