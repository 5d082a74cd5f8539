"""``predict``'s files for other tools: Camelyon16's detection CSV and QuPath's tiles GeoJSON."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest
from _annotation_checks import check_geojson
from engine_helpers import write_darkness_model, write_pyramid_tiff
from shapely.geometry import box, shape

from napari_metastasis.annotations import read_annotations
from napari_metastasis.annotations.exchange import (
    camelyon16_csv,
    camelyon16_name,
    tile_annotations,
)
from napari_metastasis.cli import main
from napari_metastasis.maps.detections import detections_from_map
from napari_metastasis.maps.probability import ProbabilityMap

BLOCK = (320, 200, 800, 600)  # x0, y0, x1, y1 of the dark block, level-0 px


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """predict --tiles on a 0.3 µm/px slide with one dark block, with a model that sees darkness."""
    root = tmp_path_factory.mktemp("exchange")
    model = write_darkness_model(root / "darkness", 32, spacing=1.0)
    image = np.full((1000, 1300, 3), 255, np.uint8)
    image[BLOCK[1] : BLOCK[3], BLOCK[0] : BLOCK[2]] = 0
    image[760:990, 1040:1290] = 0  # a second, smaller lesion
    slide = write_pyramid_tiff(root / "tumor_901.tiff", image, mpp=0.3)
    out = root / "out"
    args = ["predict", str(slide), "--out", str(out), "--model", str(model), "--tiles"]
    assert main([*args, "--tissue-min-fraction", "0", "--threshold", "0.5"]) == 0
    return out


def read_csv_content(path):
    """Camelyon16's Evaluation_FROC.py readCSVContent: every line is Confidence, X, Y."""
    probs, xs, ys = [], [], []
    for line in path.read_text().splitlines(keepends=True):
        elems = line.rstrip().split(",")
        probs.append(float(elems[0]))
        xs.append(int(elems[1]))
        ys.append(int(elems[2]))
    return probs, xs, ys


def test_camelyon16_detection_file_reads_as_evaluation_froc_reads_it(predicted):
    folder = predicted / "camelyon16"
    # the script reads every .csv of the folder and takes the slide's name from the file's
    assert [p.name for p in folder.iterdir()] == ["Tumor_901.csv"]  # the challenge's spelling
    probs, xs, ys = read_csv_content(folder / "Tumor_901.csv")
    prob_map = ProbabilityMap.load(predicted / "tumor_901.prob.tiff")
    expected = detections_from_map(prob_map, 0.5)
    assert len(probs) == len(expected) >= 2  # the block and the small lesion
    assert probs == sorted(probs, reverse=True)
    assert max(probs) == pytest.approx(np.nanmax(prob_map.values), abs=1e-6)
    # Evaluation_FROC looks detections up in a level-5 mask at (int(y / 32), int(x / 32))
    mask = np.zeros((1000 // 32 + 1, 1300 // 32 + 1), bool)
    x0, y0, x1, y1 = BLOCK
    mask[y0 // 32 : y1 // 32, x0 // 32 : x1 // 32] = True
    assert mask[int(ys[0] / 32), int(xs[0] / 32)]
    assert box(*BLOCK).contains(shape({"type": "Point", "coordinates": [xs[0], ys[0]]}))


def test_camelyon16_csv_has_no_header_and_whole_pixels():
    text = camelyon16_csv(np.array([[10.4, 20.6, 0.5], [100.0, 200.0, 0.93]]))
    assert text == "0.930000,100,200\n0.500000,10,20\n"  # floored, as the script divides
    assert camelyon16_csv(np.empty((0, 3))) == ""


def test_tiles_geojson_is_what_qupath_measurement_maps_need(predicted):
    collection = json.loads((predicted / "tumor_901.tiles.geojson").read_text())
    check_geojson(collection)
    table = pd.read_csv(predicted / "tumor_901.csv")
    features = collection["features"]
    assert len(features) == len(table)
    for feature, row in zip(features, table.itertuples(index=False), strict=True):
        props = feature["properties"]
        assert props["objectType"] == "tile"
        assert str(uuid.UUID(feature["id"])) == feature["id"]
        assert set(props["measurements"]) == {"prob_normal", "prob_tumor"}
        assert props["measurements"]["prob_tumor"] == pytest.approx(row.prob_tumor, abs=1e-6)
        top = "Tumor" if row.prob_tumor > row.prob_normal else "normal"  # QuPath's Tumor
        assert props["classification"]["name"] == top
        assert shape(feature["geometry"]).equals(
            box(row.minx, row.miny, row.minx + row.width, row.miny + row.height)
        )
    back = read_annotations(predicted / "tumor_901.tiles.geojson")
    assert {a.object_type for a in back} == {"tile"}
    assert {a.classification for a in back} == {"normal", "Tumor"}


def test_tiles_from_a_wsinfer_csv():
    table = pd.DataFrame(
        {"minx": [0], "miny": [10], "width": [5], "height": [5], "prob_a": [0.2], "prob_b": [0.8]}
    )
    (tile,) = tile_annotations(table)
    assert tile.classification == "b" and tile.measurements == {"prob_a": 0.2, "prob_b": 0.8}
    assert tile.geometry.bounds == (0, 10, 5, 15)


@pytest.mark.conformance
def test_f7_camelyon16_names_and_qupath_tumor_class(predicted):
    """F7: Camelyon16's ``Evaluation_FROC.py`` (commit f8587b4, 2016) scores a result file as a
    tumour slide only when its name starts with ``Tumor`` (``case[0:5] == 'Tumor'``), though the
    challenge's mirrors name the slides ``tumor_901.tif``; QuPath's built-in class (0.5) is
    ``Tumor``, the class our regions carry, so tiles say it too (WSInfer's ``prob_tumor`` stays)."""
    (name,) = [p.name for p in (predicted / "camelyon16").iterdir()]
    case = name
    assert case[0:5] == "Tumor" and case[0:-4] + "_Mask.tif" == "Tumor_901_Mask.tif"
    assert (
        camelyon16_name("normal_012") == "Normal_012" and camelyon16_name("TEST_001") == "Test_001"
    )
    assert camelyon16_name("patient_004_node_4") == "patient_004_node_4"
    regions = json.loads((predicted / "tumor_901.geojson").read_text())["features"]
    tiles = json.loads((predicted / "tumor_901.tiles.geojson").read_text())["features"]
    region_classes = {f["properties"]["classification"]["name"] for f in regions}
    tile_classes = {f["properties"]["classification"]["name"] for f in tiles}
    assert region_classes == {"Tumor"} and "Tumor" in tile_classes and "tumor" not in tile_classes
    assert all("prob_tumor" in f["properties"]["measurements"] for f in tiles)


def test_f7_validation_slides_match_whatever_their_case():
    from napari_metastasis.training.split import split_by_slide

    slides = np.array(["Tumor_064", "Tumor_064", "tumor_001", "Normal_002"])
    train, val = split_by_slide(slides, np.array([1, 0, 1, 0]), val_slides=["tumor_064"])
    assert val.tolist() == [0, 1] and train.tolist() == [2, 3]
