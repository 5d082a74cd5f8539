"""Regions above a threshold: exact cell outlines, holes, clipping, measurements in µm²."""

from __future__ import annotations

import csv
import uuid

import numpy as np
import pytest
import shapely

from napari_metastasis.annotations.geojson import parse_geojson, to_geojson
from napari_metastasis.clinical.region_annotations import regions_to_annotations
from napari_metastasis.maps.contours import probability_contours
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.slides.grid import PatchGrid


def _map(stride_um=None) -> ProbabilityMap:
    # 0.3 µm/px slide, 32 µm patches: 106.67 level-0 px per cell (not a whole number).
    grid = PatchGrid(1000, 800, 0.3, 0.3, patch_px=32, spacing_um=1.0, stride_um=stride_um)
    prob = ProbabilityMap.empty(grid)
    prob.values[:] = 0.1
    return prob


def test_ring_keeps_its_hole_and_measures_exactly():
    prob = _map()
    prob.values[1:6, 1:6] = 0.9
    prob.values[3, 3] = 0.2  # a hole in the middle
    prob.values[0, 8] = 0.7  # a separate small region
    regions = probability_contours(prob, 0.5)
    assert [r.n_cells for r in regions] == [24, 1]
    ring = regions[0]
    assert ring.id == 1 and ring.max_prob == pytest.approx(0.9)
    assert ring.polygon.geom_type == "Polygon" and len(ring.polygon.interiors) == 1
    assert ring.area_um2 == pytest.approx(24 * 32 * 32)
    step = 32 / 0.3
    # step squares centred on (1 ... 5) x step
    assert ring.polygon.bounds == pytest.approx((0.5 * step, 0.5 * step, 5.5 * step, 5.5 * step))
    hole = shapely.Polygon(ring.polygon.interiors[0])
    assert hole.area == pytest.approx(step * step)
    # The hole cell's centre is outside the region; its neighbours' centres inside.
    centres = prob.grid.cell_centres_level0(np.array([[3, 3], [3, 2]]))
    assert not ring.polygon.contains(shapely.Point(centres[0]))
    assert ring.polygon.contains(shapely.Point(centres[1]))


def test_regions_are_clipped_to_the_slide_and_filtered_by_area():
    prob = _map()
    rows, cols = prob.grid.shape
    prob.values[rows - 1, cols - 1] = 0.95  # the corner cell sticks out of the slide
    regions = probability_contours(prob, 0.5)
    assert len(regions) == 1
    assert regions[0].polygon.within(shapely.box(0, 0, 1000, 800))
    step = 32 / 0.3
    x0, y0 = (cols - 1.5) * step, (rows - 1.5) * step
    assert x0 < 1000 <= x0 + step and y0 < 800 <= y0 + step
    assert regions[0].area_um2 == pytest.approx((1000 - x0) * (800 - y0) * 0.09)
    assert probability_contours(prob, 0.5, min_area_um2=regions[0].area_um2 + 1) == []
    prob.values[:] = 0.1
    prob.values[0, 0] = 0.95  # the first cell is centred on the slide's corner
    (first,) = probability_contours(prob, 0.5)
    assert first.polygon.bounds == pytest.approx((0, 0, step / 2, step / 2))


def test_unanalysed_cells_never_count_and_diagonals_do_not_join():
    prob = _map()
    prob.values[:] = np.nan
    prob.values[2, 2] = prob.values[3, 3] = 0.8  # touching at a corner only: two regions
    assert len(probability_contours(prob, 0.5)) == 2
    assert probability_contours(prob, 0.85) == []


def test_overlapping_patches_use_step_squares():
    prob = _map(stride_um=16.0)  # patches overlap by half
    prob.values[4:6, 4:6] = 0.9
    (region,) = probability_contours(prob, 0.5)
    assert region.area_um2 == pytest.approx(4 * 16 * 16)
    cx, cy = region.centroid
    centres = prob.grid.cell_centres_level0(np.array([[4, 4], [5, 5]]))
    assert (cx, cy) == pytest.approx(tuple(centres.mean(axis=0)))


def test_regions_become_annotations_that_round_trip_geojson():
    prob = _map()
    prob.values[1:3, 1:4] = 0.9
    annotations = regions_to_annotations(probability_contours(prob, 0.5), threshold=0.5)
    collection = to_geojson(annotations, mpp=0.3)
    props = collection["features"][0]["properties"]
    assert props["classification"]["name"] == "Tumor"
    assert props["measurements"]["area_um2"] == pytest.approx(6 * 32 * 32)
    assert props["measurements"]["max_prob"] == pytest.approx(0.9)
    (back,) = parse_geojson(collection, "test")
    assert back.geometry.equals(annotations[0].geometry)


def test_cli_and_widget_write_one_measurement_vocabulary_with_uuid_ids():
    from napari_metastasis.maps.contours import REGION_MEASUREMENTS
    from napari_metastasis.widgets.region_shapes import MEASUREMENTS, region_annotations

    prob = _map()
    prob.values[1:3, 1:4] = 0.9
    prob.values[6, 6] = 0.7
    regions = probability_contours(prob, 0.5)
    cli = regions_to_annotations(regions, threshold=0.5)
    widget = region_annotations(regions, ["Tumor"] * len(regions), threshold=0.5)
    assert MEASUREMENTS == REGION_MEASUREMENTS
    for a, b in zip(cli, widget, strict=True):
        assert set(a.measurements) == set(b.measurements) == set(REGION_MEASUREMENTS)
        assert a.measurements == b.measurements
        assert a.id == b.id and str(uuid.UUID(a.id)) == a.id  # QuPath's kind of id
    assert len({a.id for a in cli}) == len(cli)


def test_convert_geojson_to_csv_fills_the_probability_columns(tmp_path):
    from napari_metastasis.annotations.geojson import write_geojson
    from napari_metastasis.cli import main

    prob = _map()
    prob.values[1:3, 1:4] = 0.9
    prob.values[2, 2] = 0.6
    annotations = regions_to_annotations(probability_contours(prob, 0.5), threshold=0.5)
    source = tmp_path / "regions.geojson"
    write_geojson(source, annotations, mpp=0.3)
    legacy = tmp_path / "legacy.geojson"  # what version 0.1.0's predict wrote
    text = source.read_text().replace('"max_prob"', '"max_probability"')
    legacy.write_text(text.replace('"mean_prob"', '"mean_probability"'))
    for path in (source, legacy):
        table = tmp_path / f"{path.stem}.csv"
        assert main(["convert", str(path), str(table), "--mpp", "0.3"]) == 0
        (row,) = list(csv.DictReader(table.open()))
        assert float(row["max_prob"]) == pytest.approx(0.9)
        assert float(row["mean_prob"]) == pytest.approx((5 * 0.9 + 0.6) / 6, rel=1e-6)
        assert float(row["patches"]) == 6 and float(row["threshold"]) == 0.5
        assert row["id"] == annotations[0].id
        assert "max_probability" not in row
