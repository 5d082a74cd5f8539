"""Where the shared test data lies (``../shared/data``), for the few places that need a path before
any fixture exists: ``pytest.mark.parametrize`` lists, built when the tests are collected.

Inside a test, take the fixture of the same name from ``conftest.py`` (``svs_file``,
``annotations_dir``, ...) instead.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA = PROJECT_ROOT.parent / "shared" / "data"
SLIDES = DATA / "slides"
#: CMU-1-Small-Region, Aperio SVS (JPEG tiles, 0.499 µm/px): the sample slide.
SVS = SLIDES / "aperio_svs" / "CMU-1-Small-Region.svs"
#: The same slide as DICOM WSI: the folder, and its full-resolution volume instance.
DICOM_DIR = SLIDES / "dicom_wsi" / "CMU-1-Small-Region"
DICOM_VOLUME = DICOM_DIR / "1.2.826.0.1.3680043.8.498.58740178995208579534253317996600852419.dcm"
#: A generic 6-level TIFF that states no µm/px.
TIFF_6_LEVELS = SLIDES / "generic_tiff" / "CropBreastSlide.tiff"
#: Small slides made to be broken or odd (unreadable.svs, boxes.tiff, boxes.png, small.svs...).
FIXTURES = SLIDES / "synthetic_format_fixtures"
ANNOTATIONS = DATA / "annotations"
#: Camelyon16 lesion outlines as NCRF JSON.
NCRF = ANNOTATIONS / "camelyon16_ncrf_json"
PATCHES = DATA / "patches"
