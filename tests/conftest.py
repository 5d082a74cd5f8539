"""Shared fixtures (paths into ../shared/data), and two rules: GUI tests never skip in CI, and a test
that starts Qt is marked ``gui``.

Tests take these as fixtures (``def test_x(svs_file): ...``); a ``parametrize`` list, built before
fixtures exist, imports the same paths from ``shared_data``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import shared_data

# The user's config folder (trusted models, remembered analyses) is never touched by the tests: a
# fresh one per run, set before the package is imported; subprocesses inherit it.
os.environ["NAPARI_METASTASIS_CONFIG_DIR"] = tempfile.mkdtemp(prefix="napari-metastasis-config-")


#: Fixtures that start Qt: a test using one is a GUI test and must be marked ``gui``.
QT_FIXTURES = frozenset({"qtbot", "qapp", "make_napari_viewer", "make_napari_viewer_proxy"})


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail early, not skip, when the shared data is missing."""
    if not shared_data.DATA.is_dir():
        raise pytest.UsageError(f"shared test data not found at {shared_data.DATA}")


@pytest.hookimpl(trylast=True)  # after ``-m`` has deselected: only the tests that will run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GUI tests never skip in CI, and a test that starts Qt must be marked ``gui``: unmarked, it
    would abort a headless ``-m "not gui"`` run (``make test-fast``) when Qt finds no display."""
    unmarked = [
        item.nodeid
        for item in items
        if QT_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("gui") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests use Qt but are not marked gui: " + ", ".join(unmarked[:10])
        )
    gui = any(item.get_closest_marker("gui") is not None for item in items)
    if gui and os.environ.get("CI", "").lower() == "true" and not os.environ.get("DISPLAY"):
        raise pytest.UsageError(
            "CI=true but no DISPLAY: GUI tests must run (use `make test`, which starts Xvfb)"
        )


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository's root folder."""
    return shared_data.PROJECT_ROOT


@pytest.fixture
def project_env() -> dict[str, str]:
    """The environment for a subprocess that imports this checkout's package."""
    return {**os.environ, "PYTHONPATH": str(shared_data.PROJECT_ROOT)}


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``../shared/data``: slides, annotations, patches."""
    return shared_data.DATA


@pytest.fixture(scope="session")
def slides_dir() -> Path:
    return shared_data.SLIDES


@pytest.fixture(scope="session")
def svs_file() -> Path:
    """CMU-1-Small-Region.svs: Aperio SVS, JPEG tiles, 0.499 µm/px (the sample slide)."""
    return shared_data.SVS


@pytest.fixture(scope="session")
def dicom_folder() -> Path:
    """CMU-1-Small-Region as a DICOM WSI folder."""
    return shared_data.DICOM_DIR


@pytest.fixture(scope="session")
def dicom_volume() -> Path:
    """The full-resolution volume instance of :func:`dicom_folder`."""
    return shared_data.DICOM_VOLUME


@pytest.fixture(scope="session")
def six_level_tiff() -> Path:
    """CropBreastSlide.tiff: a generic 6-level TIFF that states no µm/px."""
    return shared_data.TIFF_6_LEVELS


@pytest.fixture(scope="session")
def format_fixtures() -> Path:
    """Small slides made to be broken or odd (unreadable.svs, boxes.tiff, small.svs...)."""
    return shared_data.FIXTURES


@pytest.fixture(scope="session")
def annotations_dir() -> Path:
    return shared_data.ANNOTATIONS


@pytest.fixture(scope="session")
def ncrf_dir() -> Path:
    """Camelyon16 lesion outlines as NCRF JSON (Tumor_001, Tumor_004, Tumor_064...)."""
    return shared_data.NCRF


@pytest.fixture(scope="session")
def patches_dir() -> Path:
    return shared_data.PATCHES


@pytest.fixture(scope="session")
def recipe():
    """The bundled-model recipe, ``scripts/train_bundled_model.py``, imported as a module."""
    import importlib.util
    import sys

    path = shared_data.PROJECT_ROOT / "scripts" / "train_bundled_model.py"
    spec = importlib.util.spec_from_file_location("train_bundled_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
