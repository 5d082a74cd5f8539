"""F6: JPEG 2000 SVS (Aperio compression 33003/33005, as TCGA's slides), read as the stored pixels at
every level. References: OpenSlide 4.0 (openslide-bin 4.0.1; ``openslide-decode-jp2k.c`` for the
YCbCr conversion), tifffile 2026.3 with imagecodecs 2026.3 (OpenJPEG) for the stored tiles.
The fixtures are written here: Aperio-style SVS files with JPEG 2000 tiles and levels whose
downsample is not a whole number (900 -> 449 -> 224 px: 2.0045, 4.018)."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
from synthetic_slides import blocky_noise, write_aperio_svs

from napari_metastasis.slides.slide import Slide

pytestmark = pytest.mark.conformance


def _levels() -> list[np.ndarray]:
    level0 = blocky_noise(900, 600, block=4, seed=3)
    level1 = blocky_noise(449, 299, block=2, seed=4)
    level2 = blocky_noise(224, 149, block=1, seed=5)
    return [level0, level1, level2]


def _openslide_level0(path) -> np.ndarray:
    """OpenSlide's reading of a file's level 0: no resampling there, so its decoded stored pixels."""
    with openslide.OpenSlide(str(path)) as osr:
        w, h = osr.dimensions
        return np.asarray(osr.read_region((0, 0), 0, (w, h)))[..., :3]


@pytest.mark.slow
@pytest.mark.parametrize("compression", [33005, 33003])
def test_f6_jpeg2000_svs_reads_the_stored_pixels_at_every_level(tmp_path, compression):
    levels = _levels()
    path = write_aperio_svs(tmp_path / "j2k.svs", levels, compression=compression)
    with Slide(path) as slide:
        assert slide.vendor == "aperio" and slide.level_count == 3
        ds = slide.level_downsamples[1]
        assert abs(ds - round(ds)) > 1e-3  # 2.0056: between level-0 pixels
        for index, level in enumerate(levels):
            # the stored pixels of this level, as OpenSlide decodes them when it need not resample:
            # the same array written as the level 0 of a file of its own
            alone = write_aperio_svs(tmp_path / f"l{index}.svs", [level], compression=compression)
            stored = _openslide_level0(alone)
            h, w = level.shape[:2]
            assert slide.reads_stored_pixels(index)
            got = slide.read_level_region(index, 0, 0, w, h)
            assert np.array_equal(got, stored), f"level {index}"
            # and a window at an odd position, across tile borders (within the level)
            ww, wh = min(300, w - 37), min(120, h - 21)
            window = slide.read_level_region(index, 37, 21, ww, wh)
            assert np.array_equal(window, stored[21 : 21 + wh, 37 : 37 + ww])


def test_f6_aperio_ycbcr_jpeg2000_converts_as_openslide_does(tmp_path):
    """Every (Cb, Cr) pair at five luma values (clamping included): our YCbCr -> RGB equals OpenSlide's exactly."""
    cb, cr = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    planes = [np.stack([np.full_like(cb, y), cb, cr], -1) for y in (0, 16, 128, 235, 255)]
    components = np.concatenate(planes, axis=0).astype(np.uint8)  # 1280 x 256
    path = write_aperio_svs(tmp_path / "ycc.svs", [components], compression=33003)
    with Slide(path) as slide:
        assert slide.tiles is not None and slide.tiles.has_level(0)
        ours = slide.tiles.read(0, 0, 0, 256, 1280)
    assert np.array_equal(ours, _openslide_level0(path))
