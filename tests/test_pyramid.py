"""The dask pyramid: pixel equality with OpenSlide, block layout, laziness, memory, bad tiles."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import dask
import numpy as np
import openslide
import pytest
import tifffile
from shared_data import DICOM_DIR, FIXTURES, SVS, TIFF_6_LEVELS
from synthetic_slides import blocky_noise, halving_sizes, write_aperio_svs, write_tiled_tiff

from napari_metastasis.errors import SlideError
from napari_metastasis.slides.pyramid import LevelArray, axis_chunks, block_starts, build_pyramid
from napari_metastasis.slides.slide import EXACT_SHIFT, OPENSLIDE_MAX_PIECE, Slide, read_shift

dask.config.set(scheduler="threads")


def _whole_level(path, level) -> np.ndarray:
    """The level's own pixels: one OpenSlide read from (0, 0) never resamples."""
    osr = openslide.OpenSlide(str(path))
    w, h = osr.level_dimensions[level]
    assert max(w, h) <= OPENSLIDE_MAX_PIECE  # larger reads are split by OpenSlide (and shifted)
    rgba = np.asarray(osr.read_region((0, 0), level, (w, h)))
    assert (rgba[..., 3] == 255).all()
    return rgba[..., :3]


def _positions(slide: Slide, level: int, size: int = 100):
    """Top-left, middle, and the last (partial) tile on the right and bottom edges."""
    w, h = slide.level_dimensions[level]
    tw, th = slide.tile_size(level) or (256, 256)
    last_x, last_y = (w - 1) // tw * tw, (h - 1) // th * th
    return [
        (0, 0, min(size, w), min(size, h)),
        (w // 2, h // 3, min(size, w - w // 2), min(size, h - h // 3)),
        (last_x, 0, w - last_x, min(size, h)),  # right edge, partial tile
        (0, last_y, min(size, w), h - last_y),  # bottom edge, partial tile
        (last_x, last_y, w - last_x, h - last_y),  # bottom-right corner tile
        (
            max(0, last_x - 37),
            max(0, last_y - 29),
            w - max(0, last_x - 37),
            h - max(0, last_y - 29),
        ),
    ]


@pytest.mark.parametrize(
    "path", [SVS, DICOM_DIR, TIFF_6_LEVELS, FIXTURES / "boxes.tiff"], ids=lambda p: p.name
)
def test_levels_equal_openslide_pixels(path):
    with Slide(path) as slide:
        pyramid = build_pyramid(slide)
        assert len(pyramid.levels) == slide.level_count
        assert pyramid.max_read_shift() == 0
        for level, array in enumerate(pyramid.levels):
            truth = _whole_level(slide.path, level)
            assert array.shape == truth.shape and array.dtype == np.uint8
            np.testing.assert_array_equal(np.asarray(array), truth)
            osr = openslide.OpenSlide(str(slide.path))
            ds = slide.level_downsamples[level]
            for x, y, w, h in _positions(slide, level):
                block = array[y : y + h, x : x + w].compute()
                np.testing.assert_array_equal(block, truth[y : y + h, x : x + w])
                if read_shift(ds, x) < EXACT_SHIFT and read_shift(ds, y) < EXACT_SHIFT:
                    direct = osr.read_region((round(x * ds), round(y * ds)), level, (w, h))
                    np.testing.assert_array_equal(block, np.asarray(direct)[..., :3])


def test_blocks_follow_tiles(svs_file, six_level_tiff):
    with Slide(svs_file) as slide:
        rows, cols, _ = build_pyramid(slide).levels[0].chunks
        assert rows == (480,) * 6 + (87,) and cols == (480,) * 4 + (300,)  # two 240 px tiles
    with Slide(six_level_tiff) as slide:
        levels = build_pyramid(slide).levels
        assert levels[0].chunks[:2] == ((512, 512, 501), (512, 512, 512, 497))
        assert all(len(a.chunks[0]) == 1 for a in levels[1:])  # small levels: one block


def test_axis_chunks():
    assert axis_chunks(1000, 1.0, 512) == (1000,)  # up to two blocks' worth: one block
    assert axis_chunks(1500, 4.0, 512) == (512, 512, 476)  # integer downsample: regular
    # 2 + 1/220: a level-0 pixel lands exactly on every 220th level pixel.
    chunks = axis_chunks(3000, 2 + 1 / 220, 512)
    assert all(s % 220 == 0 for s in block_starts(chunks))
    assert max(read_shift(2 + 1 / 220, block_starts(chunks))) < EXACT_SHIFT
    # CropBreastSlide's 2.00115: exact every ~871 px, so blocks of ~871 rather than 512.
    ds = 2.0011482939632548
    chunks = axis_chunks(5000, ds, 512)
    assert max(read_shift(ds, block_starts(chunks))) < EXACT_SHIFT
    assert all(256 <= s <= 1024 for s in chunks[:-1]) and sum(chunks) == 5000
    # No exact position within reach (Aperio-like 4.000235): stay on the tile grid.
    chunks = axis_chunks(3000, 4.000235, 720)
    assert chunks[:3] == (720, 720, 720) and sum(chunks) == 3000


def _noise(width, height, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_non_integer_downsample_blocks_are_exact(tmp_path):
    """Level 1 at 2205/1100 = 2 + 1/220 spans several blocks; each starts where OpenSlide is exact."""
    level1 = _noise(1100, 1100)
    path = write_tiled_tiff(tmp_path / "odd.tif", [(2205, 2205), level1, (550, 550)], mpp=0.25)
    with Slide(path) as slide:
        assert slide.level_downsamples[1] == pytest.approx(2 + 1 / 220)
        pyramid = build_pyramid(slide)
        array = pyramid.levels[1]
        assert len(array.chunks[0]) > 1 and len(array.chunks[1]) > 1
        assert pyramid.max_read_shift() < EXACT_SHIFT
        np.testing.assert_array_equal(np.asarray(array), level1)
        np.testing.assert_array_equal(array[1050:, 1050:].compute(), level1[1050:, 1050:])
    with Slide(path, direct_tiles=False) as slide:  # through OpenSlide
        pyramid = build_pyramid(slide)
        assert pyramid.max_read_shift() < EXACT_SHIFT
        np.testing.assert_array_equal(np.asarray(pyramid.levels[1]), level1)
        # A block starting half-way between exact positions would be resampled by 1/4 px.
        assert read_shift(slide.level_downsamples[1], 110) > 0.24
        naive = slide.read_level_region(1, 110, 110, 64, 64).astype(int)
        assert np.abs(naive - level1[110:174, 110:174]).mean() > 5


def test_where_no_exact_start_exists_the_shift_is_reported_and_small(tmp_path):
    level1 = _noise(1100, 1100, seed=1)
    path = write_tiled_tiff(tmp_path / "odd.tif", [(2201, 2201), level1], mpp=0.25)
    with Slide(path, direct_tiles=False) as slide:  # formats read through OpenSlide
        ds = slide.level_downsamples[1]
        pyramid = build_pyramid(slide)
        assert pyramid.levels[1].chunks[0] == (512, 588)  # the tile grid
        assert 0 < pyramid.max_read_shift() <= 0.5 / ds
        np.testing.assert_array_equal(pyramid.levels[1][:512, :512].compute(), level1[:512, :512])


def test_aperio_level_at_non_integer_downsample_shows_its_own_pixels(tmp_path):
    """Level 1 of an Aperio pyramid at downsample 2.0005: every window is the stored level, where
    OpenSlide's reads (one level-0 pixel apart, resampled by the remainder) are several grey levels
    off on average."""
    level0 = blocky_noise(4001, 4001)
    level1 = level0[::2, ::2][:2000, :2000].copy()
    path = write_aperio_svs(tmp_path / "aperio.svs", [level0, level1])
    with tifffile.TiffFile(path) as tif:
        stored = tif.pages[1].asarray()  # the JPEG-decoded level as the file holds it
    with Slide(path) as slide, Slide(path, direct_tiles=False) as through_openslide:
        assert slide.format == "aperio" and slide.level_downsamples[1] == pytest.approx(2.0005)
        pyramid = build_pyramid(slide)
        assert pyramid.max_read_shift() == 0
        array = pyramid.levels[1]
        assert array.chunks[:2] == ((512, 512, 512, 464),) * 2  # the tile grid
        np.testing.assert_array_equal(np.asarray(array), stored)
        errors = []
        for x, y in [(100, 100), (777, 1313), (1500, 901)]:
            window = array[y : y + 64, x : x + 64].compute()
            np.testing.assert_array_equal(window, stored[y : y + 64, x : x + 64])
            old = through_openslide.read_level_region(1, x, y, 64, 64).astype(int)
            errors.append(np.abs(old - stored[y : y + 64, x : x + 64]).mean())
        assert np.mean(errors) > 4  # what the viewer showed before: up to ~7 grey levels off


def test_level_array_indexing(six_level_tiff):
    with Slide(six_level_tiff) as slide:
        truth = _whole_level(six_level_tiff, 0)  # level 0: every position is exact
        array = LevelArray(slide, 0)
        assert array.shape == truth.shape and len(array) == truth.shape[0]
        np.testing.assert_array_equal(array[10:20, 30:50], truth[10:20, 30:50])
        np.testing.assert_array_equal(array[5], truth[5])
        np.testing.assert_array_equal(array[-1, -1], truth[-1, -1])
        np.testing.assert_array_equal(array[::3, 1::2, 0], truth[::3, 1::2, 0])
        np.testing.assert_array_equal(array[100:50], truth[100:50])
        with pytest.raises(IndexError):
            array[10_000]
        with pytest.raises(IndexError):
            array[::-1]


def test_each_pyramid_has_its_own_dask_keys(svs_file):
    """napari's dask cache is keyed by name: two openings must never share blocks."""
    with Slide(svs_file) as a, Slide(svs_file) as b:
        assert build_pyramid(a).levels[0].name != build_pyramid(b).levels[0].name


def test_scale_and_calibration(svs_file, six_level_tiff):
    with Slide(svs_file) as slide:
        pyramid = build_pyramid(slide)
        assert pyramid.scale == (0.499, 0.499) and pyramid.calibrated
    with Slide(six_level_tiff) as slide:
        pyramid = build_pyramid(slide)
        assert pyramid.scale == (1.0, 1.0) and not pyramid.calibrated
    with Slide(six_level_tiff, mpp=0.3) as slide:
        assert build_pyramid(slide).scale == (0.3, 0.3)


def test_corrupt_tile_is_drawn_white_and_reported(tmp_path):
    path = write_tiled_tiff(
        tmp_path / "corrupt.tif", [(2048, 2048), (1024, 1024)], corrupt_tiles={0: {9}}, mpp=0.5
    )
    with Slide(path) as slide:
        reports = []
        level0 = build_pyramid(slide, on_error=reports.append).levels[0]
        pixels = np.asarray(level0)
        # Tile 9 (row 1, column 1 of 256 px tiles) lies in the first 512 px block.
        assert (pixels[:512, :512] == 255).all()
        assert (pixels[512:, 512:] == (200, 120, 180)).all()
        assert len(reports) == 1 and "corrupt.tif" in str(reports[0])
        with pytest.raises(SlideError, match="cannot decode pixels"):
            np.asarray(build_pyramid(slide).levels[0][:300, :300])


@pytest.mark.slow
def test_concurrent_failures_blame_only_the_corrupt_blocks(tmp_path):
    """A failed read poisons OpenSlide's handle for reads running beside it; those must not be
    reported or drawn white. Repeated because the interleaving differs from run to run."""
    path = write_tiled_tiff(
        tmp_path / "corrupt.tif", [(2048, 2048), (512, 512)], corrupt_tiles={0: {0, 1, 20, 63}}
    )
    expected_white = np.zeros((2048, 2048), bool)
    for x, y in [(0, 0), (1024, 512), (1536, 1536)]:  # the blocks holding tiles 0+1, 20, 63
        expected_white[y : y + 512, x : x + 512] = True
    for _ in range(20):
        with Slide(path) as slide:
            reports = []
            pixels = np.asarray(build_pyramid(slide, on_error=reports.append).levels[0])
        np.testing.assert_array_equal((pixels == 255).all(axis=2), expected_white)
        assert len(reports) == 3


def test_close_waits_for_running_reads(six_level_tiff):
    slide = Slide(six_level_tiff)
    outcomes = []

    def keep_reading():
        try:
            while True:
                slide.read_region(0, 0, 0, 1024, 1024)
        except SlideError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=keep_reading) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    slide.close()  # OpenSlide aborts the process if a handle is freed under a read
    for t in threads:
        t.join(timeout=10)
    assert outcomes == ["CropBreastSlide.tiff: slide is closed"] * 3


@pytest.fixture(scope="module")
def large_slide(tmp_path_factory):
    """65536 px square (12.9 GB of RGB at level 0), 512 px tiles, calibrated; ~16 MB on disk."""
    path = tmp_path_factory.mktemp("large") / "large.tif"
    return write_tiled_tiff(path, halving_sizes(65536, 65536), tile=512, mpp=0.25)


def test_opening_reads_no_level_and_blocks_read_on_demand(large_slide, monkeypatch):
    from napari_metastasis._napari.slide_reader import read_slide

    requested = []
    original = Slide._with_recovery  # every pixel read from OpenSlide passes here

    def counting(self, read, level, x, y, width, height):
        requested.append((level, width * height))
        return original(self, read, level, x, y, width, height)

    monkeypatch.setattr(Slide, "_with_recovery", counting)
    levels = read_slide(large_slide)[0][0]
    assert len(levels) == 8 and levels[0].shape == (65536, 65536, 3)
    assert sum(px for _, px in requested) <= 64 * 64  # check_readable's one small block
    requested.clear()
    view = np.asarray(levels[0][20480:21504, 30720:31744])  # a 1024 px view, block-aligned
    assert view.shape == (1024, 1024, 3) and (view == (200, 120, 180)).all()
    assert {level for level, _ in requested} == {0}
    assert sum(px for _, px in requested) == 1024 * 1024  # exactly the blocks under the view


_RSS_PROBE = textwrap.dedent(
    """
    import json, sys
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    from napari_metastasis._napari.slide_reader import read_slide
    before = rss()
    layers = read_slide(sys.argv[1])
    print(json.dumps({"growth": rss() - before, "shape": layers[0][0][0].shape}))
    """
)


def _rss_growth_on_open(path, cwd) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["growth"]


def test_memory_after_opening_does_not_grow_with_slide_size(large_slide, tmp_path, project_root):
    small = write_tiled_tiff(tmp_path / "small.tif", halving_sizes(4096, 4096), tile=512, mpp=0.25)
    small_growth = _rss_growth_on_open(small, project_root)
    large_growth = _rss_growth_on_open(
        large_slide, project_root
    )  # 256x the pixels of the small one
    assert large_growth < 48 * 2**20, large_growth  # vs 12.9 GB if level 0 were read
    assert large_growth - small_growth < 16 * 2**20, (small_growth, large_growth)
