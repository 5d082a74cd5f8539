"""Probability maps as OME-Zarr (NGFF 0.4, placed on the slide in µm), written batch by batch so
``predict --resume`` continues a run; OME-TIFF export; the npe2 reader puts maps on their slide."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile
from engine_helpers import write_darkness_model, write_pyramid_tiff

from napari_metastasis._napari.map_reader import get_map_reader, is_probability_map
from napari_metastasis.cli import main
from napari_metastasis.maps import store as map_store
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.maps.store import ZarrMapWriter, load_zarr, save_ome_tiff, save_zarr
from napari_metastasis.slides.grid import PatchGrid


def _map() -> ProbabilityMap:
    grid = PatchGrid(1000, 700, 0.25, 0.3, patch_px=32, spacing_um=1.0)
    prob = ProbabilityMap.empty(grid, class_name="tumor", model_name="m", slide_path="s.svs")
    prob.values[1:4, 2:5] = np.linspace(0.1, 0.9, 9).reshape(3, 3)
    prob.extra["threshold"] = 0.5
    return prob


def test_ome_zarr_round_trip_with_its_ngff_transforms(tmp_path):
    prob = _map()
    path = save_zarr(prob, tmp_path / "s.prob.zarr", ["normal", "tumor"])
    attrs = json.loads((path / ".zattrs").read_text())
    (multiscale,) = attrs["multiscales"]
    assert multiscale["version"] == "0.4"
    assert [(a["name"], a["type"], a["unit"]) for a in multiscale["axes"]] == [
        ("y", "space", "micrometer"),
        ("x", "space", "micrometer"),
    ]
    (dataset,) = multiscale["datasets"]
    # one 32 µm step per map pixel, and no translation: cell (0, 0) is centred on the corner
    (scale,) = dataset["coordinateTransformations"]
    assert scale == {"type": "scale", "scale": [32.0, 32.0]}
    zarray = json.loads((path / dataset["path"] / ".zarray").read_text())
    assert zarray["zarr_format"] == 2 and zarray["dimension_separator"] == "/"
    # cell (r, c)'s patch centre on the slide, in µm, is where the transforms put pixel (r, c)
    cell = np.array([[2, 3]])
    centre_px = prob.grid.cell_centres_level0(cell)[0]
    centre_um = (centre_px[1] * 0.3, centre_px[0] * 0.25)
    placed = np.array(scale["scale"]) * cell[0]
    np.testing.assert_allclose(placed, centre_um)
    back = load_zarr(path)
    assert back.grid == prob.grid and back.model_name == "m" and back.extra == prob.extra
    np.testing.assert_array_equal(back.values, prob.values)  # NaN where not analysed
    assert ProbabilityMap.load(path).n_analysed == 9  # the widget's loader reads it too


def test_a_map_on_an_older_corner_grid_keeps_its_translation(tmp_path):
    prob = _map()
    old = ProbabilityMap(
        PatchGrid.from_dict({**prob.grid.to_dict(), "anchor": "corner"}), prob.values[:-1, :-1]
    )
    path = save_zarr(old, tmp_path / "old.prob.zarr", ["normal", "tumor"])
    (multiscale,) = json.loads((path / ".zattrs").read_text())["multiscales"]
    scale, translation = multiscale["datasets"][0]["coordinateTransformations"]
    assert scale == {"type": "scale", "scale": [32.0, 32.0]}
    assert translation == {"type": "translation", "translation": [16.0, 16.0]}  # cell centres
    assert load_zarr(path).grid.anchor == "corner"


def test_batches_are_on_disk_as_soon_as_written(tmp_path):
    prob = ProbabilityMap.empty(_map().grid, class_name="tumor")
    writer = ZarrMapWriter.create(tmp_path / "run.prob.zarr", prob, ["normal", "tumor"])
    writer.write(np.array([[0, 0], [5, 7]]), np.array([[0.4, 0.6], [0.9, 0.1]]))
    # another process (a crashed run's successor) sees the batch without any close or flush
    reopened = ZarrMapWriter.resume(tmp_path / "run.prob.zarr")
    assert reopened.prob_map.n_analysed == 2
    assert reopened.prob_map.values[0, 0] == pytest.approx(0.6)
    np.testing.assert_allclose(reopened.class_probabilities()[5, 7], [0.9, 0.1])
    assert (
        json.loads((tmp_path / "run.prob.zarr" / ".zattrs").read_text())["napari-metastasis"][
            "complete"
        ]
        is False
    )


def test_ome_tiff_export_has_the_physical_pixel_size(tmp_path):
    prob = _map()
    path = save_ome_tiff(prob, tmp_path / "s.ome.tif")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        ome = tif.ome_metadata
        values = tif.asarray()
    assert 'PhysicalSizeX="32.0"' in ome and 'PhysicalSizeY="32.0"' in ome
    assert 'PhysicalSizeXUnit="µm"' in ome
    np.testing.assert_array_equal(values, prob.values)


def test_convert_writes_a_map_as_ome_tiff_and_zarr(tmp_path, capsys):
    source = _map().save(tmp_path / "s.prob.tiff")
    assert main(["convert", str(source), str(tmp_path / "s.ome.tiff")]) == 0
    assert "(OME-TIFF): 8 x 9 cells of 32 µm, 9 analysed" in capsys.readouterr().out
    assert main(["convert", str(source), str(tmp_path / "copy.prob.zarr")]) == 0
    assert load_zarr(tmp_path / "copy.prob.zarr").n_analysed == 9


def test_reader_claims_maps_and_declines_other_files(svs_file, tmp_path):
    prob = _map()
    tiff = prob.save(tmp_path / "s.prob.tiff")
    zarr_path = save_zarr(prob, tmp_path / "s.prob.zarr")
    assert is_probability_map(tiff) and is_probability_map(zarr_path)
    assert get_map_reader(str(zarr_path)) is not None and get_map_reader([str(tiff)]) is not None
    assert get_map_reader(str(svs_file)) is None
    other = tmp_path / "other.zarr"
    other.mkdir()
    assert get_map_reader(str(other)) is None
    (layer_data,) = get_map_reader(str(zarr_path))(str(zarr_path))
    _data, kwargs, kind = layer_data
    assert kind == "image" and kwargs["scale"] == (32.0, 32.0)
    assert kwargs["translate"] == (0.0, 0.0) and kwargs["contrast_limits"] == (0.0, 1.0)


# --- predict: the map on disk grows batch by batch; --resume continues ------------------------------
@pytest.fixture(scope="module")
def slide_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    image = np.full((700, 900, 3), 255, np.uint8)
    image[100:500, 200:700] = 30
    slide = write_pyramid_tiff(root / "resumable.tiff", image, mpp=0.5)
    return slide, write_darkness_model(root / "darkness", 32, spacing=1.0)


def _predict(slide, model, out, *extra):
    args = ["predict", str(slide), "--out", str(out), "--model", str(model)]
    return main([*args, "--tissue-min-fraction", "0", "--batch-size", "16", *extra])


def test_an_interrupted_predict_resumes_where_it_stopped(
    tmp_path, slide_and_model, monkeypatch, capsys
):
    slide, model = slide_and_model
    full = tmp_path / "full"
    assert _predict(slide, model, full) == 0
    reference = load_zarr(full / "resumable.prob.zarr")
    reference_table = pd.read_csv(full / "resumable.csv")

    out = tmp_path / "crash"
    write = ZarrMapWriter.write
    calls = []

    def crash_after_three_batches(self, cells, probabilities, **marks):
        write(self, cells, probabilities, **marks)
        calls.append(len(cells))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the machine goes down mid-run

    monkeypatch.setattr(ZarrMapWriter, "write", crash_after_three_batches)
    assert _predict(slide, model, out) == 130
    monkeypatch.setattr(ZarrMapWriter, "write", write)
    assert not (out / "resumable.prob.zarr").exists()  # the outputs are a set: none yet
    partial = load_zarr(out / ".resumable.resume.zarr")  # the run's own map, batch by batch
    assert partial.n_analysed == 3 * 16  # everything up to the crash is on disk
    np.testing.assert_array_equal(
        partial.values[partial.analysed], reference.values[partial.analysed]
    )

    resumed = []
    monkeypatch.setattr(
        ZarrMapWriter,
        "write",
        lambda self, c, p, **marks: (resumed.append(len(c)), write(self, c, p, **marks)),
    )
    assert _predict(slide, model, out, "--resume") == 0
    assert sum(resumed) == reference.n_analysed - 3 * 16  # only the missing patches
    final = load_zarr(out / "resumable.prob.zarr")
    np.testing.assert_allclose(final.values, reference.values, equal_nan=True, atol=1e-6)
    table = pd.read_csv(out / "resumable.csv")  # the CSV lists every patch, old ones included
    key = ["minx", "miny"]
    pd.testing.assert_frame_equal(
        table.sort_values(key).reset_index(drop=True),
        reference_table.sort_values(key).reset_index(drop=True),
        atol=1e-5,
    )
    attrs = json.loads((out / "resumable.prob.zarr" / ".zattrs").read_text())
    assert attrs["napari-metastasis"]["complete"] is True
    assert not (out / ".resumable.resume.zarr").exists()  # gone once the set is complete
    # resuming a complete run classifies nothing and writes the same set again
    resumed.clear()
    assert _predict(slide, model, out, "--resume") == 0
    assert sum(resumed) == 0


def test_resume_refuses_a_map_from_another_model(tmp_path, slide_and_model):
    slide, model = slide_and_model
    out = tmp_path / "out"
    assert _predict(slide, model, out) == 0
    other = write_darkness_model(tmp_path / "other", 16, spacing=2.0)
    assert _predict(slide, other, out, "--resume") == 1


def test_resume_refuses_a_map_on_an_earlier_builds_corner_grid(tmp_path, slide_and_model, capsys):
    """A map from before grids were centred keeps its geometry (it opens and shows as made), but
    the run's cells are not its cells: one sentence, no traceback, and the map is left alone."""
    slide, model = slide_and_model
    out = tmp_path / "out"
    assert _predict(slide, model, out) == 0
    made = load_zarr(out / "resumable.prob.zarr")
    stored = {k: v for k, v in made.grid.to_dict().items() if k != "anchor"}  # an earlier build's
    old = ProbabilityMap.empty(PatchGrid.from_dict(stored), class_name="tumor", model_name="m")
    shutil.rmtree(out / "resumable.prob.zarr")
    save_zarr(old, out / "resumable.prob.zarr", ["normal", "tumor"])
    assert load_zarr(out / "resumable.prob.zarr").grid.anchor == "corner"
    capsys.readouterr()
    assert _predict(slide, model, out, "--resume") == 1
    err = capsys.readouterr().err
    assert "earlier build whose patches started at the slide's corner" in err
    assert "Traceback" not in err
    assert load_zarr(out / "resumable.prob.zarr").grid.anchor == "corner"


def test_map_store_module_documents_zarr_version():
    assert map_store.NGFF_VERSION == "0.4"


@pytest.mark.gui
def test_the_reader_puts_a_zarr_map_on_top_of_its_slide(svs_file, make_napari_viewer, tmp_path):
    from napari_metastasis.slides.slide import Slide

    with Slide(svs_file) as slide:
        width, height = slide.dimensions
        mpp = slide.require_resolution()
    grid = PatchGrid(width, height, mpp.mpp_x, mpp.mpp_y, patch_px=48, spacing_um=1.0)
    prob = ProbabilityMap.empty(grid, class_name="tumor", model_name="default")
    prob.values[10:20, 5:15] = 0.95
    path = save_zarr(prob, tmp_path / "CMU-1-Small-Region.prob.zarr", ["normal", "tumor"])
    viewer = make_napari_viewer(show=True)
    (slide_layer,) = viewer.open(svs_file, plugin="napari-metastasis")
    (map_layer,) = viewer.open(str(path), plugin="napari-metastasis")
    assert [layer.name for layer in viewer.layers] == [
        slide_layer.name,
        "CMU-1-Small-Region · default tumor probability",
    ]
    np.testing.assert_array_equal(map_layer.data, prob.values)
    # every map pixel sits on the centre of its patch on the slide
    cells = np.array([[0, 0], [10, 5], [19, 14], [grid.shape[0] - 1, grid.shape[1] - 1]])
    for (row, col), (x, y) in zip(cells, grid.cell_centres_level0(cells), strict=True):
        on_map = np.asarray(map_layer.data_to_world((row, col)))
        on_slide = np.asarray(slide_layer.data_to_world((y, x)))  # level 0 is data level 0
        np.testing.assert_allclose(on_map, on_slide, atol=1e-6)
    # and it is drawn there: the red block over the slide, the rest tinted or transparent
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    red = (shot[..., 0] > 180) & (shot[..., 1] < 90) & (shot[..., 2] < 90)
    assert red.sum() > 200
