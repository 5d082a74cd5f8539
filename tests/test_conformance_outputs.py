"""``make conformance`` on real outputs: ``predict --sample`` (the bundled CMU-1-Small-Region slide,
also in the shared data, with the bundled model) and ``evaluate`` of its map, run through the
field's reference code: Camelyon16's ``Evaluation_FROC.py`` (port of commit f8587b4,
``camelyon16_froc_reference.py``) with a reference mask from ASAP's recipe (``asap_mask_recipe.py``),
tifffile 2026.3, ome-zarr-py 0.18, and Camelyon17's stages format read back by ``evaluate --stages``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from asap_mask_recipe import annotation_to_mask
from camelyon16_froc_reference import (
    compute_evaluation_mask,
    compute_fp_tp_probs,
    compute_froc,
    compute_itc_list,
    froc_score,
    level_points,
    read_csv_content,
)
from shapely.geometry import Point

from napari_metastasis.annotations import Annotation, write_annotations
from napari_metastasis.cli import main
from napari_metastasis.maps.probability import ProbabilityMap

# every test reads the outputs of one whole `predict --sample` run (the module fixture)
pytestmark = [pytest.mark.conformance, pytest.mark.slow]
STEM = "CMU-1-Small-Region"


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    out = tmp_path_factory.mktemp("conformance") / "run"
    assert main(["predict", "--sample", "--out", str(out), "--tiles"]) == 0
    return out


@pytest.fixture(scope="module")
def summary(predicted):
    return json.loads((predicted / f"{STEM}.summary.json").read_text())


def test_detection_file_is_read_by_the_official_script_and_lies_on_the_slide(predicted, summary):
    width, height = summary["dimensions_px"]
    (path,) = (predicted / "camelyon16").iterdir()
    assert path.name == f"{STEM}.csv"
    probs, xs, ys = read_csv_content(path.read_text())
    assert probs == sorted(probs, reverse=True) and len(probs) >= 1
    assert all(0 <= x < width for x in xs) and all(0 <= y < height for y in ys)
    # the script's lookups at level 0 and level 5 of a mask the size of the slide: no IndexError
    for level in (0, 5):
        shape = (-(-height // 2**level), -(-width // 2**level))
        mask = np.ones(shape, np.int64)
        compute_fp_tp_probs(ys, xs, probs, True, mask, [], level)


def test_evaluate_froc_equals_the_official_script_on_predict_output(predicted, summary, tmp_path):
    width, height = summary["dimensions_px"]
    mpp = summary["mpp"][0]
    probs, xs, ys = read_csv_content((predicted / "camelyon16" / f"{STEM}.csv").read_text())
    # a reference: a lesion under the most probable detection, one elsewhere, one isolated cell
    lesions = [
        Point(xs[0] + 37.3, ys[0] - 21.6).buffer(700.0),
        Point(400.5, 400.5).buffer(600.0),
        Point(1800.2, 300.7).buffer(60.0),
    ]
    xml = write_annotations(
        tmp_path / f"{STEM}.xml", [Annotation(g, classification="Tumor") for g in lesions]
    )
    out = tmp_path / "eval"
    prob_tiff = predicted / f"{STEM}.prob.tiff"
    assert (
        main(["evaluate", "--maps", str(prob_tiff), "--annotations", str(xml), "--out", str(out)])
        == 0
    )
    ours = json.loads((out / "metrics.json").read_text())["slides"]["froc"]

    shape = (-(-height // 32), -(-width // 32))
    level5 = annotation_to_mask(xml.read_bytes(), level_points(shape, 5)).reshape(shape)
    # the script's L0_RESOLUTION is 0.243 µm/px for every slide; this one is scanned at 0.499
    official = compute_evaluation_mask(level5, mpp, 5)
    itc = compute_itc_list(official, mpp, 5)
    fp, tp, n = compute_fp_tp_probs(ys, xs, probs, True, official, itc, 5)
    total_fps, sensitivity = compute_froc([fp], [list(tp)], [n], 1)
    assert ours["n_lesions"] == n == 2
    assert ours["froc_score"] == pytest.approx(froc_score(total_fps, sensitivity), abs=1e-9)


def test_prob_tiff_and_zarr_are_placed_in_micrometres(predicted):
    import tifffile
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    prob = ProbabilityMap.load(predicted / f"{STEM}.prob.tiff")
    with tifffile.TiffFile(predicted / f"{STEM}.prob.tiff") as tif:
        px_per_um = tif.pages[0].get_resolution(tifffile.RESUNIT.MICROMETER)
    assert px_per_um == pytest.approx((1 / prob.grid.step_um,) * 2)
    (node,) = list(Reader(parse_url(str(predicted / f"{STEM}.prob.zarr")))())
    transforms = {t["type"]: t[t["type"]] for t in node.metadata["coordinateTransformations"][0]}
    cell = np.array([3, 5])
    placed = cell * np.array(transforms["scale"]) + np.array(transforms.get("translation", 0.0))
    x, y = prob.grid.cell_centres_level0(cell[None])[0]
    assert placed == pytest.approx([y * prob.grid.mpp_y, x * prob.grid.mpp_x])


def test_tiles_say_qupaths_tumor_and_stages_read_back(predicted, tmp_path, capsys):
    tiles = json.loads((predicted / f"{STEM}.tiles.geojson").read_text())["features"]
    classes = {f["properties"]["classification"]["name"] for f in tiles}
    assert "tumor" not in classes and classes <= {"Tumor", "normal"}
    stages = predicted / "stages.csv"
    assert stages.read_text().splitlines()[0] == "patient,stage"
    capsys.readouterr()
    assert main(["evaluate", "--stages", str(stages), str(stages)]) == 0
    assert "kappa" in capsys.readouterr().out
