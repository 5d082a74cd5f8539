"""Slide: opening every shared slide, metadata, pixels, colour, errors."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image
from shared_data import DICOM_DIR, DICOM_VOLUME, FIXTURES, SLIDES, SVS, TIFF_6_LEVELS
from synthetic_slides import swapped_primaries_icc, write_tiled_tiff

from napari_metastasis.errors import ResolutionError, SlideError, UnsupportedSlideError
from napari_metastasis.slides import slide as slide_module
from napari_metastasis.slides.slide import EXACT_SHIFT, Slide, detect_format, read_shift

#: Shared slides that must fail, with the error class and words the message must contain.
EXPECTED_FAILURES = {
    "boxes.png": (UnsupportedSlideError, "not a whole-slide image"),
    "unopenable.tiff": (SlideError, "Unsupported TIFF compression"),
    "unreadable.svs": (SlideError, "cannot be decoded"),
}


@pytest.fixture(params=["raw-buffer", "public-api"])
def read_path(request, monkeypatch):
    """Run a test through both pixel paths: the raw ARGB buffer and openslide-python's PIL one."""
    assert slide_module._RAW_READ_REGION is not None  # the fast path exists on this machine
    if request.param == "public-api":
        monkeypatch.setattr(slide_module, "_RAW_READ_REGION", None)
    return request.param


def _shared_slide_paths():
    files = sorted(p for p in SLIDES.rglob("*") if p.is_file())
    return [*files, DICOM_DIR]


@pytest.mark.parametrize("path", _shared_slide_paths(), ids=lambda p: p.name[:40])
def test_every_shared_slide_opens_or_fails_clearly(path):
    expected = EXPECTED_FAILURES.get(path.name)
    if expected is None:
        with Slide(path) as slide:
            slide.check_readable()
            w, h = slide.level_dimensions[-1]
            pixels = slide.read_level_region(slide.level_count - 1, 0, 0, w, h)
            assert pixels.shape == (h, w, 3) and pixels.dtype == np.uint8
            assert pixels.std() > 0  # real content, not a blank
        return
    error_class, words = expected
    with pytest.raises(error_class) as info:
        Slide(path).check_readable()
    message = str(info.value)
    assert path.name in message and words in message
    assert "\n" not in message and "Traceback" not in message


def test_svs_metadata(svs_file):
    with Slide(svs_file) as slide:
        assert slide.dimensions == (2220, 2967)
        assert slide.level_count == 1
        assert slide.vendor == "aperio" and slide.format == "aperio"
        assert slide.objective_power == 20
        res = slide.resolution
        assert (res.mpp_x, res.mpp_y, res.source) == (0.499, 0.499, "metadata")
        assert slide.tile_size(0) == (240, 240)
        assert set(slide.associated_image_names) == {"label", "macro", "thumbnail"}
        label = slide.associated_image("label")
        assert label.ndim == 3 and label.shape[2] == 3 and label.dtype == np.uint8
        meta = slide.metadata()
        assert meta["mpp"] == [0.499, 0.499] and meta["objective_power"] == 20
        assert meta["level_dimensions"] == [[2220, 2967]]
        assert meta["level_downsamples"] == [1.0]
        with pytest.raises(SlideError, match="no associated image named 'nope'"):
            slide.associated_image("nope")


@pytest.mark.parametrize("path", [DICOM_DIR, DICOM_VOLUME], ids=["folder", "volume-instance"])
def test_dicom_folder_and_instance(dicom_folder, dicom_volume, svs_file, path):
    with Slide(path) as slide, Slide(svs_file) as svs:
        assert slide.vendor == "dicom"
        assert slide.path == dicom_volume  # a folder resolves to its full-resolution volume
        assert slide.name == ("CMU-1-Small-Region" if path == dicom_folder else dicom_volume.stem)
        assert slide.dimensions == svs.dimensions
        assert slide.resolution.mpp_x == pytest.approx(0.499)
        # Same scan, JPEG re-encoded: the same place holds the same tissue (a 3 px offset
        # would correlate far worse).
        a = slide.read_region(0, 1000, 1000, 256, 256).astype(float).mean(axis=2)
        b = svs.read_region(0, 1000, 1000, 256, 256).astype(float).mean(axis=2)
        shifted = svs.read_region(0, 1003, 1000, 256, 256).astype(float).mean(axis=2)
        same = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert same > 0.95 and same > np.corrcoef(a.ravel(), shifted.ravel())[0, 1] + 0.05


def test_every_dicom_instance_opens_the_series(dicom_folder):
    sizes = set()
    for instance in dicom_folder.glob("*.dcm"):
        with Slide(instance) as slide:
            sizes.add(slide.dimensions)
    assert sizes == {(2220, 2967)}


def test_six_level_tiff_with_bogus_resolution(six_level_tiff):
    with Slide(six_level_tiff) as slide:
        assert slide.level_count == 6
        assert slide.level_dimensions[0] == (2033, 1525)
        assert slide.level_downsamples[1] == pytest.approx(2.001148, abs=1e-6)
        assert slide.raw_mpp[0] == pytest.approx(264.583, abs=1e-3)
        assert slide.resolution is None and slide.mpp is None
        assert "264.583 µm/px is implausible" in slide.resolution_problem()
        with pytest.raises(ResolutionError, match=r"CropBreastSlide\.tiff: no usable resolution"):
            slide.require_resolution()
        assert slide.metadata()["mpp"] is None
    with Slide(six_level_tiff, mpp=0.25) as slide:
        assert slide.resolution.source == "user" and slide.mpp == 0.25


def test_objective_power_fallback(format_fixtures, monkeypatch):
    # small.svs states 0.499 µm/px and 20x; hide the µm/px to exercise the fallback.
    with Slide(format_fixtures / "small.svs") as slide:
        props = {
            k: v
            for k, v in slide.properties.items()
            if k not in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y)
        }
        monkeypatch.setattr(Slide, "properties", property(lambda self: props))
        assert slide.resolution is None
        res = slide.require_resolution()
        assert (res.mpp, res.source) == (0.5, "objective power")
        with pytest.raises(
            ResolutionError, match=r"small\.svs: no usable resolution \(it states none"
        ):
            slide.require_resolution(allow_objective_power=False)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_bad_user_mpp_is_refused(svs_file, bad):
    with pytest.raises(ResolutionError, match="positive number"):
        Slide(svs_file, mpp=bad)


def test_missing_file_and_empty_folder(dicom_folder, format_fixtures, tmp_path):
    with pytest.raises(SlideError, match="no such file"):
        Slide(tmp_path / "absent.svs")
    with pytest.raises(UnsupportedSlideError, match="no DICOM"):
        Slide(tmp_path)
    assert detect_format(tmp_path) is None
    assert detect_format(format_fixtures / "boxes.png") is None
    assert detect_format(dicom_folder) == "dicom"


def test_outside_the_slide_is_white(svs_file, read_path):
    with Slide(svs_file) as slide:
        w, h = slide.dimensions
        block = slide.read_region(0, w - 10, h - 10, 20, 20)
        assert block.shape == (20, 20, 3)
        assert (block[10:, :] == 255).all() and (block[:, 10:] == 255).all()
        assert (block[:10, :10] < 255).any()  # tissue/background pixels, not padding
        assert slide.read_region(0, -50, -50, 10, 10).min() == 255
        assert slide.read_region(0, 0, 0, 0, 5).shape == (5, 0, 3)


def test_alpha_is_composited_over_white(svs_file):
    rgba = np.zeros((1, 4, 4), np.uint8)
    rgba[0, :, :3] = [200, 100, 0]
    rgba[0, :, 3] = [0, 128, 255, 1]
    with Slide(svs_file) as slide:
        rgb = slide._to_rgb(Image.fromarray(rgba, "RGBA"))
    expected = np.rint(
        rgba[..., :3] * (rgba[..., 3:] / 255) + 255 * (1 - rgba[..., 3:] / 255)
    ).astype(np.uint8)
    np.testing.assert_array_equal(rgb, expected)
    assert (rgb[0, 0] == 255).all()  # fully transparent -> white, not black


def test_read_region_matches_openslide(six_level_tiff, read_path):
    osr = openslide.OpenSlide(str(six_level_tiff))
    with Slide(six_level_tiff) as slide:
        for level in range(slide.level_count):
            w, h = slide.level_dimensions[level]
            ours = slide.read_region(level, 7, 11, w // 2, h // 2)
            theirs = np.asarray(osr.read_region((7, 11), level, (w // 2, h // 2)))
            assert (theirs[..., 3] == 255).all()
            np.testing.assert_array_equal(ours, theirs[..., :3])
            assert ours.flags.c_contiguous


def test_level_reads_are_exact_where_openslide_allows(six_level_tiff):
    """Through OpenSlide, level-grid reads equal the level's pixels when OpenSlide needs no
    sub-pixel shift."""
    osr = openslide.OpenSlide(str(six_level_tiff))
    with Slide(six_level_tiff, direct_tiles=False) as slide:
        level, ds = 1, slide.level_downsamples[1]
        w, h = slide.level_dimensions[level]
        whole = np.asarray(osr.read_region((0, 0), level, (w, h)))[..., :3]
        exact = [k for k in range(w - 64) if read_shift(ds, k) < EXACT_SHIFT]
        assert 0 in exact and 871 in exact  # 871 * 2.00115 = 1742.99: a whole level-0 pixel
        rows = [k for k in exact if k <= h - 32]
        for i, k in enumerate(exact):
            y = rows[i % len(rows)]
            np.testing.assert_array_equal(
                slide.read_level_region(level, k, y, 64, 32), whole[y : y + 32, k : k + 64]
            )
        # Elsewhere OpenSlide resamples by less than 0.5 / downsample px: close, not equal.
        off = slide.read_level_region(level, 500, 100, 64, 64).astype(int)
        assert read_shift(ds, 500) > EXACT_SHIFT
        assert 0 < np.abs(off - whole[100:164, 500:564]).mean() < 10


def test_thumbnail_keeps_aspect(six_level_tiff):
    with Slide(six_level_tiff) as slide:
        thumb = slide.thumbnail(256)
    assert thumb.shape == (192, 256, 3)
    assert thumb.std() > 10


def test_best_level_for_downsample(six_level_tiff):
    with Slide(six_level_tiff) as slide:
        assert slide.best_level_for_downsample(1) == 0
        assert slide.best_level_for_downsample(2.0) == 0  # level 1 is 2.001: not within 2
        assert slide.best_level_for_downsample(4.5) == 2
        assert slide.best_level_for_downsample(1000) == 5


def test_to_srgb_applies_the_embedded_profile(tmp_path, read_path):
    path = write_tiled_tiff(
        tmp_path / "icc.tif",
        [(512, 512), (256, 256)],
        color=(255, 0, 0),
        iccprofile=swapped_primaries_icc(),
    )
    with Slide(path) as raw, Slide(path, to_srgb=True) as srgb:
        assert tuple(raw.read_region(0, 0, 0, 4, 4)[0, 0]) == (255, 0, 0)
        converted = srgb.read_region(0, 0, 0, 4, 4)
        assert tuple(converted[0, 0]) == (0, 0, 255)
        assert srgb.metadata()["srgb"] and not raw.metadata()["srgb"]


def test_to_srgb_on_an_srgb_profile_changes_little(dicom_volume, svs_file):
    with Slide(dicom_volume) as raw, Slide(dicom_volume, to_srgb=True) as srgb:
        a = raw.read_region(0, 500, 500, 128, 128).astype(int)
        b = srgb.read_region(0, 500, 500, 128, 128).astype(int)
    assert np.abs(a - b).max() <= 3
    with Slide(svs_file, to_srgb=True) as no_profile:  # nothing to convert from
        assert no_profile.metadata()["srgb"] is False


def test_concurrent_reads_agree_with_serial_reads(dicom_volume, read_path):
    """One Slide shared by threads (napari's dask pool, the engine's prefetch) reads correctly."""
    with Slide(dicom_volume, to_srgb=True) as slide:
        positions = [(x, y) for x in range(0, 1900, 300) for y in range(0, 2600, 400)]
        serial = {p: slide.read_region(0, *p, 240, 240) for p in positions}
        results, errors = {}, []

        def work(chunk):
            try:
                for p in chunk:
                    results[p] = slide.read_region(0, *p, 240, 240)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(positions[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    for p in positions:
        np.testing.assert_array_equal(results[p], serial[p])


def test_one_corrupt_tile_costs_one_block_not_the_slide(tmp_path, read_path):
    """OpenSlide's errors are sticky; Slide reopens so later reads still work."""
    path = write_tiled_tiff(
        tmp_path / "corrupt.tif", [(1024, 1024), (512, 512)], corrupt_tiles={0: {5}}
    )
    with Slide(path) as slide:
        slide.check_readable()
        with pytest.raises(SlideError, match=r"corrupt.tif: cannot decode pixels at level 0"):
            slide.read_region(0, 256, 256, 256, 256)  # tile 5 = row 1, column 1
        assert tuple(slide.read_region(0, 0, 0, 8, 8)[0, 0]) == (200, 120, 180)
        assert tuple(slide.read_region(0, 600, 600, 8, 8)[0, 0]) == (200, 120, 180)


def test_closed_slide_raises_a_slide_error(svs_file):
    slide = Slide(svs_file)
    slide.close()
    slide.close()  # idempotent
    assert slide.closed and "closed" in repr(slide)
    with pytest.raises(SlideError, match=r"CMU-1-Small-Region\.svs: slide is closed"):
        slide.read_region(0, 0, 0, 8, 8)


def test_no_level_and_invalid_arguments(svs_file):
    with Slide(svs_file) as slide, pytest.raises(SlideError, match="no level 3"):
        slide.read_region(3, 0, 0, 8, 8)


@pytest.mark.parametrize(
    "path", [SVS, TIFF_6_LEVELS, FIXTURES / "boxes.tiff"], ids=lambda p: p.name
)
def test_tiff_family_levels_are_decoded_directly_as_openslide_does(path):
    """Stored tiles decoded here equal OpenSlide's pixels, at every level and any position."""
    osr = openslide.OpenSlide(str(path))
    with Slide(path) as slide:
        assert slide.metadata()["direct_tile_levels"] == list(range(slide.level_count))
        for level in range(slide.level_count):
            w, h = slide.level_dimensions[level]
            truth = np.asarray(osr.read_region((0, 0), level, (w, h)))[..., :3]
            assert slide.reads_stored_pixels(level)
            np.testing.assert_array_equal(slide.read_level_region(level, 0, 0, w, h), truth)
            for x, y in [(7, 3), (w // 2 + 1, h // 3), (w - 20, h - 9), (-5, -7)]:
                block = slide.read_level_region(level, x, y, 40, 30)
                expected = np.full((30, 40, 3), 255, np.uint8)  # white outside the level
                x0, y0 = max(x, 0), max(y, 0)
                piece = truth[y0 : y + 30, x0 : x + 40]
                expected[y0 - y : y0 - y + piece.shape[0], x0 - x : x0 - x + piece.shape[1]] = piece
                np.testing.assert_array_equal(block, expected)


def test_ycbcr_jpeg_tiles_and_missing_tiles_decode_as_openslide_does(tmp_path):
    """JFIF YCbCr JPEG with 2x2 chroma subsampling (what tifffile and most converters write):
    decoded into reused buffers, equal to OpenSlide's pixels; a tile the file has no data for
    reads as white glass, not as the last tile decoded into the same buffer."""
    rng = np.random.default_rng(0)
    image = np.repeat(np.repeat(rng.integers(0, 256, (100, 120, 3), np.uint8), 4, 0), 4, 1)
    path = tmp_path / "ycbcr.tiff"
    tifffile.imwrite(
        path, image, tile=(128, 128), compression="jpeg", photometric="ycbcr", subsampling=(2, 2)
    )
    truth = np.asarray(openslide.OpenSlide(str(path)).read_region((0, 0), 0, (480, 400)))[..., :3]
    with Slide(path) as slide:
        assert slide.reads_stored_pixels(0)
        np.testing.assert_array_equal(slide.read_level_region(0, 0, 0, 480, 400), truth)
        np.testing.assert_array_equal(
            slide.read_level_region(0, 50, 70, 300, 200), truth[70:270, 50:350]
        )
        tiles = slide.tiles
        level = tiles._levels[0]
        offsets = list(level.offsets)
        offsets[5] = 0  # row 1, column 1: no data
        tiles._levels[0] = dataclasses.replace(level, offsets=tuple(offsets))
        got = tiles.read(0, 0, 0, 384, 384)
    expected = truth[:384, :384].copy()
    expected[128:256, 128:256] = 255
    np.testing.assert_array_equal(got, expected)


def test_other_formats_and_opting_out_stay_with_openslide(dicom_folder, six_level_tiff):
    with Slide(dicom_folder) as dicom, Slide(six_level_tiff, direct_tiles=False) as tiff:
        assert dicom.metadata()["direct_tile_levels"] == []
        assert tiff.metadata()["direct_tile_levels"] == []
        assert tiff.reads_stored_pixels(0) and not tiff.reads_stored_pixels(1)  # 2.0011


def test_corrupt_tile_decoded_directly_costs_that_read_only(tmp_path):
    path = write_tiled_tiff(
        tmp_path / "corrupt.tif", [(1024, 1024), (512, 512)], corrupt_tiles={0: {5}}
    )
    with Slide(path) as slide:
        assert slide.metadata()["direct_tile_levels"] == [0, 1]
        with pytest.raises(SlideError, match=r"corrupt.tif: cannot decode pixels at level 0"):
            slide.read_level_region(0, 256, 256, 256, 256)  # tile 5 = row 1, column 1
        assert tuple(slide.read_level_region(0, 0, 0, 8, 8)[0, 0]) == (200, 120, 180)
        assert tuple(slide.read_level_region(0, 600, 600, 8, 8)[0, 0]) == (200, 120, 180)


def test_to_srgb_applies_to_direct_reads(tmp_path):
    path = write_tiled_tiff(
        tmp_path / "icc.tif", [(512, 512)], color=(255, 0, 0), iccprofile=swapped_primaries_icc()
    )
    with Slide(path, to_srgb=True) as srgb:
        assert srgb.metadata()["direct_tile_levels"] == [0]
        assert tuple(srgb.read_level_region(0, 0, 0, 4, 4)[0, 0]) == (0, 0, 255)
