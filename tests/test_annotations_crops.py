"""Region crops: one image per region, from the right level, with the outline drawn."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from shapely.geometry import LineString, Point, Polygon

from napari_metastasis.annotations import Annotation
from napari_metastasis.annotations.crops import export_region_crops
from napari_metastasis.errors import AnnotationError
from napari_metastasis.slides.slide import Slide

TRIANGLE = Polygon([(1000, 1200), (1300, 1200), (1150, 1500)])


def test_level0_crop_is_the_bounding_box_and_the_outline_is_drawn(svs_file, tmp_path):
    ann = Annotation(TRIANGLE, "Tumor", "lesion A")
    with Slide(svs_file) as slide:
        plain = export_region_crops(slide, [ann], tmp_path / "plain", level=0, outline=False)
        drawn = export_region_crops(slide, [ann], tmp_path / "drawn", level=0)
        truth = slide.read_region(0, 1000, 1200, 300, 300)
    assert [p.name for p in drawn] == ["001_Tumor_lesion-A.png"]
    plain_px = np.asarray(Image.open(plain[0]).convert("RGB"))
    drawn_px = np.asarray(Image.open(drawn[0]).convert("RGB"))
    assert plain_px.shape == (300, 300, 3)
    np.testing.assert_array_equal(plain_px, truth)
    red = np.all(drawn_px == (200, 0, 0), axis=-1)
    assert red[0, 100:200].all()  # the top edge y=1200 lies on the first row
    assert red.sum() > 3 * 300  # three edges
    assert not red[150, 20]  # outside the triangle: slide pixels, untouched
    np.testing.assert_array_equal(drawn_px[~red], plain_px[~red])


def test_automatic_level_fits_max_side_and_tiff_output(six_level_tiff, tmp_path):
    big = Annotation(Polygon([(0, 0), (2000, 0), (2000, 1500), (0, 1500)]), "Tumor", id="9")
    small = Annotation(Polygon([(10, 10), (110, 10), (110, 60)]), None)
    with Slide(six_level_tiff) as slide:
        paths = export_region_crops(slide, [big, small], tmp_path, fmt="tiff", max_side=300)
        ds = slide.level_downsamples
    big_img, small_img = (Image.open(p) for p in paths)
    assert big_img.format == "TIFF" and paths[0].name == "001_Tumor_9.tiff"
    assert max(big_img.size) <= 300 and max(big_img.size) > 300 / 2.1  # level 3 (ds ~8)
    assert big_img.size == (int(np.ceil(2000 / ds[3])), int(np.ceil(1500 / ds[3])))
    assert small_img.size == (100, 50) and paths[1].name == "002_unclassified.tiff"


def test_points_need_a_margin_and_lines_get_crops(svs_file, tmp_path):
    anns = [
        Annotation(Point(500, 500), "Mitosis"),
        Annotation(LineString([(100, 100), (140, 130)]), None, "ruler"),
    ]
    with Slide(svs_file) as slide:
        assert [p.name for p in export_region_crops(slide, anns, tmp_path / "a")] == [
            "002_unclassified_ruler.png"
        ]
        with_margin = export_region_crops(slide, anns, tmp_path / "b", margin_px=32)
    assert Image.open(with_margin[0]).size == (64, 64)
    assert Image.open(with_margin[1]).size == (104, 94)


def test_regions_outside_the_slide_are_clipped_or_skipped(svs_file, tmp_path):
    anns = [
        Annotation(Polygon([(2100, 2900), (2500, 2900), (2500, 3100)]), "Tumor"),
        Annotation(Polygon([(5000, 5000), (5100, 5000), (5100, 5100)]), "Tumor"),
    ]
    with Slide(svs_file) as slide:
        paths = export_region_crops(slide, anns, tmp_path)
    assert len(paths) == 1 and Image.open(paths[0]).size == (120, 67)


def test_bad_arguments(svs_file, tmp_path):
    with Slide(svs_file) as slide:
        with pytest.raises(AnnotationError, match="no level 3"):
            export_region_crops(slide, [Annotation(TRIANGLE)], tmp_path, level=3)
        with pytest.raises(AnnotationError, match="PNG or TIFF, not 'jpg'"):
            export_region_crops(slide, [Annotation(TRIANGLE)], tmp_path, fmt="jpg")
