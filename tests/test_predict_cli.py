"""``predict`` and ``models`` from the command line, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import shapely
from engine_helpers import write_darkness_model, write_pyramid_tiff
from PIL import Image
from shapely.geometry import shape

from napari_metastasis.cli import main
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.models import BUNDLED_DIR
from napari_metastasis.slides.slide import Slide


@pytest.fixture(scope="module")
def darkness_dir(tmp_path_factory):
    return write_darkness_model(tmp_path_factory.mktemp("m") / "darkness", 32, spacing=1.0)


@pytest.fixture(scope="module")
def shapes_slide(tmp_path_factory):
    """0.3 µm/px (the model wants 1 µm/px): a black 480 x 400 px block on white glass."""
    image = np.full((1000, 1300, 3), 255, np.uint8)
    image[200:600, 320:800] = 0
    return write_pyramid_tiff(tmp_path_factory.mktemp("s") / "shapes.tiff", image, mpp=0.3)


def _no_partial_files(folder):
    return not [p for p in folder.iterdir() if p.name.endswith(".part")]


@pytest.mark.slow
def test_sample_end_to_end_with_the_bundled_model(project_env, tmp_path):
    out = tmp_path / "demo"
    env = project_env
    proc = subprocess.run(
        [sys.executable, "-m", "napari_metastasis.cli", "predict", "--sample", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "CMU-1-Small-Region" in proc.stdout
    assert "patch" in proc.stderr  # the tqdm bar went to stderr
    # pN0 from the bundled rule (6 patches of 80 µm) does not exclude isolated tumour cells
    assert "pN0" in proc.stdout and "Note: Isolated tumour cells are not assessed" in proc.stdout
    stem = out / "CMU-1-Small-Region"
    table = pd.read_csv(f"{stem}.csv")
    assert list(table.columns) == ["minx", "miny", "width", "height", "prob_normal", "prob_tumor"]
    prob = ProbabilityMap.load(f"{stem}.prob.tiff")
    assert prob.model_name == "default" and prob.grid.mpp_x == pytest.approx(0.499)
    # Tissue only: fewer patches than the grid has, and each CSV row is its cell in the map.
    assert 50 < len(table) < 0.8 * prob.grid.shape[0] * prob.grid.shape[1]
    assert prob.n_analysed == len(table)
    sx, sy = prob.grid.step_level0
    # cells are centred on multiples of the step (the edge ones clipped to the slide)
    rows = np.rint((table["miny"] + table["height"] / 2) / sy).astype(int)
    cols = np.rint((table["minx"] + table["width"] / 2) / sx).astype(int)
    np.testing.assert_array_equal(
        prob.grid.cell_boxes(np.column_stack([rows, cols])),
        table[["minx", "miny", "width", "height"]].to_numpy(),
    )
    np.testing.assert_allclose(prob.values[rows, cols], table["prob_tumor"], atol=1e-6)
    collection = json.loads((out / "CMU-1-Small-Region.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    for feature in collection["features"]:
        assert feature["properties"]["objectType"] == "annotation"
        measurements = feature["properties"]["measurements"]
        confirmed, seeded = measurements["confirmed"], measurements["seed_patches"] > 0
        expected = "Tumor" if confirmed else "Candidate" if seeded else "Region"
        assert feature["properties"]["classification"]["name"] == expected
        assert feature["properties"]["measurements"]["max_prob"] >= 0.5
        assert shape(feature["geometry"]).within(shapely.box(0, 0, 2220, 2967))
    # issue 20: the bundled sample is skin without metastasis; its candidates are not confirmed
    summary = json.loads((out / "CMU-1-Small-Region.summary.json").read_text())
    assert summary["verdict"] == "negative" and summary["confirmed"] == 0
    # every region above the threshold is exported; candidates are those holding a seed patch
    assert summary["regions_above_threshold"] == len(collection["features"]) > 0
    assert summary["candidates"] <= summary["regions_above_threshold"]
    assert "CMU-1-Small-Region pN0" in proc.stdout
    # the model card's whole-slide check is this very run: the same regions at its threshold
    from napari_metastasis.models.registry import BUNDLED_DIR

    card = json.loads((BUNDLED_DIR / "default" / "model_card.json").read_text())
    assert summary["threshold"] == card["threshold"]
    checked = card["whole_slide_false_positives"]["CMU-1-Small-Region"]
    assert checked["regions at the threshold"] == summary["regions_above_threshold"]
    assert checked["patches"] == summary["patches"]
    heatmap = Image.open(f"{stem}.heatmap.png")
    assert max(heatmap.size) == 1024 and heatmap.mode == "RGB"
    assert _no_partial_files(out)
    # Atomic writes go through a 0600 temporary file; the result has the usual permissions.
    assert (out / "CMU-1-Small-Region.csv").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_csv_and_geojson_match_the_drawn_shapes(tmp_path, capsys, darkness_dir, shapes_slide):
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(shapes_slide),
            "--out",
            str(out),
            "--model",
            str(darkness_dir),
            "--tissue-min-fraction",
            "0",
            "--threshold",
            "0.9",
        ]
    )
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out / "shapes.csv")
    prob = ProbabilityMap.load(out / "shapes.prob.tiff")
    assert prob.grid.patch_level0 == pytest.approx((32 / 0.3, 32 / 0.3))
    dark = np.zeros((1000, 1300))
    dark[200:600, 320:800] = 1
    for minx, miny, w, h, p in table[["minx", "miny", "width", "height", "prob_tumor"]].itertuples(
        index=False
    ):
        assert p == pytest.approx(dark[miny : miny + h, minx : minx + w].sum() / (w * h), abs=0.04)
    # One region: the cells lying wholly inside the block (>= 0.9 dark), within the block.
    features = json.loads((out / "shapes.geojson").read_text())["features"]
    assert len(features) == 1
    region = shape(features[0]["geometry"])
    block = shapely.box(320, 200, 800, 600)
    assert region.within(block.buffer(1e-6))
    assert region.area >= 0.35 * block.area
    assert features[0]["properties"]["measurements"]["area_um2"] == pytest.approx(
        region.area * 0.09, rel=1e-6
    )


def test_region_limits_the_patches(tmp_path, capsys, darkness_dir, shapes_slide):
    out = tmp_path / "out"
    args = ["predict", str(shapes_slide), "--out", str(out), "--model", str(darkness_dir)]
    assert main([*args, "--region", "0,0,200,150", "--tissue-min-fraction", "0"]) == 0
    table = pd.read_csv(out / "shapes.csv")
    # Cells of 106.7 px centred on its multiples: the rectangle overlaps columns 0-2 (the first
    # clipped at the slide's edge: -53 to 53, 53 to 160, 160 to 267) and rows 0-1.
    assert sorted(zip(table.minx, table.miny, strict=True)) == [
        (0, 0),
        (0, 53),
        (53, 0),
        (53, 53),
        (160, 0),
        (160, 53),
    ]


def test_bad_slides_are_reported_and_the_others_processed(
    format_fixtures, tmp_path, capsys, darkness_dir, shapes_slide
):
    out = tmp_path / "out"
    bad = [
        format_fixtures / "unreadable.svs",
        format_fixtures / "boxes.png",
        tmp_path / "missing.svs",
    ]
    code = main(
        [
            "predict",
            *map(str, bad),
            str(shapes_slide),
            "--out",
            str(out),
            "--model",
            str(darkness_dir),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 3
    for path, line in zip(bad, errors, strict=True):
        assert path.name in line
    assert "Traceback" not in err
    assert (out / "shapes.csv").is_file() and (out / "shapes.prob.tiff").is_file()
    assert not (out / "unreadable.csv").exists()
    assert _no_partial_files(out)


def test_slide_without_resolution_is_refused_unless_mpp_given(
    six_level_tiff, tmp_path, capsys, darkness_dir
):
    out = tmp_path / "out"
    args = ["predict", str(six_level_tiff), "--out", str(out), "--model", str(darkness_dir)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "CropBreastSlide.tiff: no usable resolution" in err and "pass --mpp" in err
    assert main([*args, "--mpp", "0.5"]) == 0
    prob = ProbabilityMap.load(out / "CropBreastSlide.prob.tiff")
    assert prob.grid.mpp_x == 0.5 and prob.extra["resolution_source"] == "user"


def test_objective_power_fallback_warns(tmp_path, capsys, monkeypatch, darkness_dir, shapes_slide):
    monkeypatch.setattr(Slide, "resolution", property(lambda self: None))
    monkeypatch.setattr(Slide, "objective_power", property(lambda self: 40.0))
    out = tmp_path / "out"
    code = main(["predict", str(shapes_slide), "--out", str(out), "--model", str(darkness_dir)])
    assert code == 0
    assert "assuming 0.25 µm/px from its 40x objective (pass --mpp" in capsys.readouterr().err
    assert ProbabilityMap.load(out / "shapes.prob.tiff").grid.mpp_x == 0.25


def test_the_model_is_loaded_once(tmp_path, monkeypatch, darkness_dir, shapes_slide):
    from napari_metastasis import models
    from napari_metastasis.pipeline import slide_outputs as predict_files

    loads = []
    real = models.load_model

    def counting(*args, **kwargs):
        loads.append(args)
        return real(*args, **kwargs)

    # the command imports load_model when it runs (a cheap --help), so patch it where it is found
    monkeypatch.setattr(models, "load_model", counting)
    monkeypatch.setattr(predict_files, "load_model", counting)
    slides = [str(shapes_slide), str(shapes_slide)]
    assert main(["predict", *slides, "--out", str(tmp_path), "--model", str(darkness_dir)]) == 0
    assert len(loads) == 1


def test_failed_write_leaves_no_partial_file(
    tmp_path, capsys, monkeypatch, darkness_dir, shapes_slide
):
    from napari_metastasis.pipeline import slide_outputs as predict_files

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(predict_files, "render_heatmap", broken)
    out = tmp_path / "out"
    code = main(["predict", str(shapes_slide), "--out", str(out), "--model", str(darkness_dir)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"error: cannot write {out}/shapes.*: disk full" in err  # not a hidden temporary
    assert _no_partial_files(out) and not (out / "shapes.heatmap.png").exists()
    assert not list(out.glob("shapes.*"))  # none of the set
    # only the classified map stays hidden, for `predict --resume` (it lost nothing)
    assert [p.name for p in out.glob(".shapes.*")] == [".shapes.resume.zarr"]


def test_bad_model_and_bad_arguments(tmp_path, capsys, shapes_slide):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"spec_version": "1.0"}))
    code = main(["predict", str(shapes_slide), "--out", str(tmp_path), "--model", str(folder)])
    err = capsys.readouterr().err
    assert code == 1 and "missing required field 'architecture'" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["predict", "--out", str(tmp_path)]) == 1
    assert "pass one or more SLIDE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(shapes_slide), "--out", str(tmp_path), "--region", "1,2,3"])
    assert exit_info.value.code == 2
    assert "expected X,Y,W,H" in capsys.readouterr().err


def test_models_lists_the_bundled_default(capsys, monkeypatch, darkness_dir):
    monkeypatch.setenv("NAPARI_METASTASIS_MODELS", str(darkness_dir.parent))
    assert main(["models"]) == 0
    lines = dict(line.split("\t", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["default"].startswith(str(BUNDLED_DIR / "default"))
    assert lines["darkness"].startswith(str(darkness_dir))
    assert "32 px at 1 µm/px" in lines["darkness"]


@pytest.mark.slow
def test_dask_distributed_batch_matches_local_run(tmp_path, capsys, darkness_dir, shapes_slide):
    """Slides spread over a dask.distributed LocalCluster give the same files as a local run."""
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a slide at all")
    local, spread = tmp_path / "local", tmp_path / "spread"
    args = ["--model", str(darkness_dir)]
    assert main(["predict", str(shapes_slide), "--out", str(local), *args]) == 0
    code = main(
        ["predict", str(shapes_slide), str(bad), "--out", str(spread), "--dask", "local:2", *args]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.svs" in err and "1 of 2 slides failed" in err
    assert (spread / "shapes.csv").read_text() == (local / "shapes.csv").read_text()
    assert (spread / "shapes.geojson").read_text() == (local / "shapes.geojson").read_text()


def test_threshold_defaults_to_the_model_cards(tmp_path, capsys, darkness_dir, shapes_slide):
    """Without --threshold, regions use the card's threshold; an explicit one wins."""
    import shutil

    model = tmp_path / "carded"
    shutil.copytree(darkness_dir, model)
    (model / "model_card.json").write_text(json.dumps({"threshold": 0.8}))
    args = [str(shapes_slide), "--model", str(model), "--tissue-min-fraction", "0"]
    assert main(["predict", *args, "--out", str(tmp_path / "card")]) == 0
    assert "regions >= 0.8 " in capsys.readouterr().out
    assert main(["predict", *args, "--out", str(tmp_path / "own"), "--threshold", "0.3"]) == 0
    assert "regions >= 0.3 " in capsys.readouterr().out
    saved = json.loads((tmp_path / "card" / "shapes.geojson").read_text())
    assert saved["features"]
    assert all(f["properties"]["measurements"]["max_prob"] >= 0.8 for f in saved["features"])
