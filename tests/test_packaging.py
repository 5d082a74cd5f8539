"""Packaging facts that need no build: the PyPI description, the manifest, the license, types."""

from __future__ import annotations

import re
import runpy

from conftest import PROJECT_ROOT

SETUP = runpy.run_path(str(PROJECT_ROOT / "setup.py"), run_name="not_main")


def test_pypi_description_has_no_relative_pictures():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"!\[[^\]]*\]\(resources/", readme)  # the repository's README has pictures
    text = SETUP["pypi_readme"](readme, "")
    assert not re.search(r"!\[[^\]]*\]\((?![a-z]+://)", text)
    assert (
        "*[Picture: After clicking region 1 in the list: the camera on it, its outline highlighted]*"
        in text
    )
    absolute = SETUP["pypi_readme"](readme, "https://example.org/raw/main/")
    assert "](https://example.org/raw/main/resources/viewer.png)" in absolute
    assert SETUP["project_urls"]("") == {}
    assert SETUP["project_urls"]("https://host/x")["Bug Tracker"] == "https://host/x/issues"


def test_license_manifest_and_types_ship():
    assert "BSD 3-Clause License" in (PROJECT_ROOT / "LICENSE").read_text()
    setup_cfg = (PROJECT_ROOT / "setup.cfg").read_text()
    assert "license = BSD-3-Clause" in setup_cfg and "py.typed" in setup_cfg
    assert (PROJECT_ROOT / "napari_metastasis" / "py.typed").is_file()
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(PROJECT_ROOT / "napari_metastasis" / "napari.yaml")
    assert manifest.display_name == "Metastasis Detection"
    assert set(manifest.categories) == {"Annotation", "Segmentation", "Measurement", "IO"}
