"""Shared fixtures: paths into ../shared/data and the rule that GUI tests never skip in CI."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# The user's config folder (trusted models, remembered analyses) is never touched by the tests: a
# fresh one per run, set before the package is imported; subprocesses inherit it.
os.environ["NAPARI_METASTASIS_CONFIG_DIR"] = tempfile.mkdtemp(prefix="napari-metastasis-config-")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA = PROJECT_ROOT.parent / "shared" / "data"
SLIDES = DATA / "slides"
SVS = SLIDES / "aperio_svs" / "CMU-1-Small-Region.svs"
DICOM_DIR = SLIDES / "dicom_wsi" / "CMU-1-Small-Region"
DICOM_VOLUME = DICOM_DIR / "1.2.826.0.1.3680043.8.498.58740178995208579534253317996600852419.dcm"
TIFF_6_LEVELS = SLIDES / "generic_tiff" / "CropBreastSlide.tiff"
FIXTURES = SLIDES / "synthetic_format_fixtures"
ANNOTATIONS = DATA / "annotations"
PATCHES = DATA / "patches"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail early, not skip, when CI lacks the shared data or a display for the GUI tests."""
    if not DATA.is_dir():
        raise pytest.UsageError(f"shared test data not found at {DATA}")
    if os.environ.get("CI", "").lower() == "true" and not os.environ.get("DISPLAY"):
        raise pytest.UsageError(
            "CI=true but no DISPLAY: GUI tests must run (use `make test`, which starts Xvfb)"
        )


@pytest.fixture(scope="session")
def recipe():
    """The bundled-model recipe, ``scripts/train_bundled_model.py``, imported as a module."""
    import importlib.util
    import sys

    path = PROJECT_ROOT / "scripts" / "train_bundled_model.py"
    spec = importlib.util.spec_from_file_location("train_bundled_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
