"""The engine on synthetic slides whose truth is known pixel by pixel, with the darkness model.

The darkness model's tumour probability is the mean darkness of the patch it sees, so for black
shapes on white glass each patch's probability must equal the black fraction of its level-0 box.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import shapely
import tifffile
import torch
from engine_helpers import write_darkness_model, write_pyramid_tiff
from shared_data import DICOM_DIR, SVS, TIFF_6_LEVELS
from synthetic_slides import blocky_noise, write_aperio_svs, write_tiled_tiff

from napari_metastasis.errors import SlideError
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.models import load_model
from napari_metastasis.models.transforms import resize_batch, resize_patch
from napari_metastasis.pipeline import (
    CancelToken,
    PatchReader,
    make_grid,
    plan_cells,
    predict_slide,
    run_inference,
)
from napari_metastasis.pipeline.reader import RegionReader, cpu_forward_threads
from napari_metastasis.pipeline.slide_outputs import write_patch_csv
from napari_metastasis.slides.slide import Slide
from napari_metastasis.slides.tissue import tissue_mask


def _shapes_image() -> np.ndarray:
    """White 1300 x 1000 px with a big black square, a black bar and a small dot."""
    image = np.full((1000, 1300, 3), 255, np.uint8)
    image[200:600, 300:752] = 0  # edges on multiples of 4: exact on every pyramid level
    image[800:860, 100:1200] = 0
    image[100:120, 1000:1020] = 0
    return image


@pytest.fixture(scope="module")
def darkness(tmp_path_factory):
    folder = write_darkness_model(tmp_path_factory.mktemp("m") / "darkness", 32, spacing=1.0)
    return load_model(folder, device="cpu")


@pytest.fixture(scope="module")
def shapes():
    return _shapes_image()


def _expected(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Black fraction of each level-0 box (outside the image counts as white)."""
    dark = (image[..., 0] == 0).astype(np.float64)
    out = []
    for x, y, w, h in boxes:
        out.append(dark[y : y + h, x : x + w].sum() / (w * h))
    return np.array(out)


@pytest.mark.parametrize(("mpp", "level", "atol"), [(0.25, 2, 2e-3), (0.3, 1, 0.04)])
def test_probabilities_match_shapes_at_their_coordinates(
    tmp_path, darkness, shapes, mpp, level, atol
):
    # The model works at 1 µm/px; the slide is 0.25 (exact 4x: level 2 is read as is) or 0.3 µm/px
    # (3.33x: level 1 is read and resized), so both paths of the resolution handling are checked.
    path = write_pyramid_tiff(tmp_path / "shapes.tiff", shapes, mpp=mpp, levels=3)
    with Slide(path) as slide:
        grid = make_grid(slide, darkness)
        assert grid.patch_level0 == pytest.approx((32 / mpp, 32 / mpp))
        assert PatchReader(slide, grid, darkness.input_size).level == level
        result = predict_slide(slide, darkness, tissue=False, batch_size=16)
    table = result.table
    assert not result.cancelled and len(table) == grid.shape[0] * grid.shape[1]
    boxes = table[["minx", "miny", "width", "height"]].to_numpy()
    np.testing.assert_allclose(table["prob_tumor"], _expected(shapes, boxes), atol=atol)
    np.testing.assert_allclose(table["prob_tumor"] + table["prob_normal"], 1.0, atol=1e-5)
    # Geometry maps back exactly: each row's box is its cell's, and the map holds its probability.
    cells = table[["row", "col"]].to_numpy()
    np.testing.assert_array_equal(grid.cell_boxes(cells), boxes)
    np.testing.assert_array_equal(
        result.prob_map.values[cells[:, 0], cells[:, 1]], table["prob_tumor"]
    )
    # Inside the big square the patch is all black; far from the shapes all white.
    centre = grid.cells_in_rect(500, 380, 1, 1)[0]
    assert result.prob_map.values[tuple(centre)] > 0.99
    assert result.prob_map.values[0, 0] < 0.01


def test_prob_map_file_round_trip_and_csv(tmp_path, darkness, shapes):
    path = write_pyramid_tiff(tmp_path / "shapes.tiff", shapes, mpp=0.3)
    with Slide(path) as slide:
        result = predict_slide(slide, darkness, tissue=False)
    saved = ProbabilityMap.load(result.prob_map.save(tmp_path / "shapes.prob.tiff"))
    assert saved.grid == result.grid
    np.testing.assert_array_equal(saved.values, result.prob_map.values)
    csv = write_patch_csv(result.table, tmp_path / "shapes.csv")
    header = csv.read_text().splitlines()[0]
    assert header == "minx,miny,width,height,prob_normal,prob_tumor"


def test_regions_rectangle_polygon_and_microns(tmp_path, darkness, shapes):
    path = write_pyramid_tiff(tmp_path / "shapes.tiff", shapes, mpp=0.25)
    with Slide(path) as slide:
        grid = make_grid(slide, darkness)  # patches of 128 level-0 px
        rect = plan_cells(slide, grid, (200, 200, 200, 100), tissue=False)
        # Cells centred on multiples of 128 px: x 200-400 overlaps columns 2 (192-320) and 3
        # (320-448); y 200-300 lies in row 2.
        assert rect.tolist() == [[2, 2], [2, 3]]
        same_in_um = plan_cells(slide, grid, (50, 50, 50, 25), region_units="um", tissue=False)
        assert same_in_um.tolist() == rect.tolist()
        triangle = shapely.Polygon([(0, 0), (640, 0), (0, 640)])
        tri = plan_cells(slide, grid, triangle, tissue=False)
        centres = grid.cell_centres_level0(tri)
        assert len(tri) > 0 and np.all(centres.sum(axis=1) < 640)
        result = predict_slide(slide, darkness, region=triangle, tissue=False)
    assert set(map(tuple, result.table[["row", "col"]].to_numpy())) == set(map(tuple, tri))
    assert result.prob_map.n_analysed == len(tri)


def test_tissue_filter_skips_glass(tmp_path, darkness):
    image = np.full((1000, 1300, 3), 245, np.uint8)
    rng = np.random.default_rng(1)
    image[224:736, 224:608] = rng.normal((190, 110, 170), 12, (512, 384, 3)).clip(0, 255)
    # At 0.5 µm/px the block is 256 x 192 µm, above the smallest tissue piece kept.
    path = write_pyramid_tiff(tmp_path / "tissue.tiff", image, mpp=0.5)
    with Slide(path) as slide:
        grid = make_grid(slide, darkness)  # patches of 64 level-0 px
        mask = tissue_mask(slide)
        cells = plan_cells(slide, grid, tissue=mask, tissue_min_fraction=0.5)
        assert plan_cells(slide, grid, tissue=True, tissue_min_fraction=0.5).tolist() == (
            cells.tolist()
        )
    boxes = grid.cell_boxes(cells)
    # Exactly the 6 x 8 cells of the tissue block (it is aligned on the 64-px grid, whose cells
    # are centred on multiples of 64 px).
    assert len(cells) == 48
    assert boxes[:, 0].min() == 224 and (boxes[:, 0] + boxes[:, 2]).max() == 608
    assert boxes[:, 1].min() == 224 and (boxes[:, 1] + boxes[:, 3]).max() == 736


def test_cancel_keeps_finished_batches_and_resume_fills_the_rest(tmp_path, darkness, shapes):
    path = write_pyramid_tiff(tmp_path / "shapes.tiff", shapes, mpp=0.25)
    token = CancelToken()
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if done >= 16:
            token.cancel()

    with Slide(path) as slide:
        first = predict_slide(
            slide, darkness, tissue=False, batch_size=8, progress=progress, cancel=token
        )
        assert first.cancelled and first.n_done == 16 and first.n_planned == 99
        assert first.prob_map.n_analysed == 16
        assert calls[0] == (0, 99) and calls[-1] == (16, 99)
        kept = first.prob_map.values.copy()
        # Resuming on the same map classifies only what is missing.
        second = predict_slide(slide, darkness, tissue=False, prob_map=first.prob_map)
    assert not second.cancelled and second.n_done == 99 - 16
    assert second.prob_map.n_analysed == 99
    analysed_first = ~np.isnan(kept)
    np.testing.assert_array_equal(second.prob_map.values[analysed_first], kept[analysed_first])
    boxes = second.grid.cell_boxes(second.grid.all_cells())
    np.testing.assert_allclose(second.prob_map.values.ravel(), _expected(shapes, boxes), atol=2e-3)


def test_threading_event_cancels_before_any_batch(tmp_path, darkness, shapes):
    path = write_pyramid_tiff(tmp_path / "shapes.tiff", shapes, mpp=0.25)
    event = threading.Event()
    event.set()
    with Slide(path) as slide:
        grid = make_grid(slide, darkness)
        batches = list(run_inference(slide, darkness, grid.all_cells(), grid, cancel=event))
    assert batches == []


def test_streaming_reads_ahead_boundedly_and_stops_readers(tmp_path, darkness):
    # 8192 px square at 1 µm/px, 256-px tiles: 32 x 32 tiles, regions of 16 tiles, 257 x 257
    # patches (centred on multiples of 32 px, so the first and last rows and columns are halves).
    path = write_tiled_tiff(tmp_path / "big.tif", [(8192, 8192), (4096, 4096)], mpp=1.0)
    with Slide(path) as slide:
        grid = make_grid(slide, darkness)
        reads = []
        original = slide.read_level_region
        slide.read_level_region = lambda *a: reads.append(a) or original(*a)
        stream = run_inference(
            slide, darkness, grid.all_cells(), grid, batch_size=4, prefetch_batches=2, num_workers=2
        )
        first = next(stream)
        assert first.done == 4 and first.total == 257 * 257 and len(first.cells) == 4
        threading.Event().wait(0.3)  # give the readers time to run ahead if they were unbounded
        ahead = RegionReader(slide, grid, darkness.input_size).regions_ahead(32)
        assert ahead == 64 * 2**20 // (256 * (4096 + 256 + 32) * 3) == 19
        assert len(reads) <= ahead + 2  # of 64 regions
        # one tile row of 16 tiles, and the next chunk's first tile column: the patches are
        # centred on multiples of 32 px, so one straddles each chunk's edge
        assert {(a[3], a[4]) for a in reads} == {(4096 + 256, 256)}
        stream.close()
        assert not any(t.name.startswith("region-") for t in threading.enumerate())


@pytest.fixture(scope="module")
def bundled():
    return load_model("default", device="cpu")


def _tissue_pyramid(folder):
    """The sample's real tissue as a JPEG-tiled pyramid of exact halvings at 0.25 µm/px."""
    with Slide(SVS) as svs:
        w, h = svs.dimensions
        tissue = svs.read_region(0, 0, 0, w // 4 * 4, h // 4 * 4)  # exact halvings
    path = folder / "tissue.tiff"
    with tifffile.TiffWriter(path) as tw:
        for i in range(3):
            tw.write(
                np.ascontiguousarray(tissue[:: 2**i, :: 2**i]),
                tile=(256, 256),
                photometric="rgb",
                compression="jpeg",
                resolution=(1e4 / (0.25 * 2**i),) * 2,
                resolutionunit="CENTIMETER",
                subfiletype=1 if i else 0,
                metadata=None,
            )
    return path


def _probabilities(slide, model, reader, every: int = 1) -> np.ndarray:
    """The positive probability of every ``every``-th cell (NaN elsewhere)."""
    grid = make_grid(slide, model)
    cells = grid.all_cells()[::every]
    probs = np.full(grid.shape, np.nan)
    for batch in run_inference(slide, model, cells, grid, batch_size=48, reader=reader):
        probs[batch.cells[:, 0], batch.cells[:, 1]] = batch.positive
    assert np.isfinite(probs[cells[:, 0], cells[:, 1]]).all()
    return probs[cells[:, 0], cells[:, 1]]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("slide_path", "mpp", "level", "zoom"),
    [
        (SVS, None, 0, 2),  # JPEG tiles at 0.5 µm/px, twice the model's input, resized
        (DICOM_DIR, None, 0, 2),  # not TIFF: regions read through OpenSlide
        (TIFF_6_LEVELS, 0.5, 0, 2),  # a 6-level TIFF read at level 0 (2.0011 is too coarse)
        ("synthetic", None, 2, 1),  # JPEG pyramid at 0.25 µm/px, level 2 read as is
    ],
    ids=["svs", "dicom", "tiff", "synthetic"],
)
def test_region_reader_gives_the_per_patch_answers(tmp_path, bundled, slide_path, mpp, level, zoom):
    """Same model, same cells: the region reader's probabilities are today's per-patch reader's
    within 0.02, on the real shared slides and a synthetic pyramid."""
    if slide_path == "synthetic":
        slide_path = _tissue_pyramid(tmp_path)
    with Slide(slide_path, mpp=mpp) as slide:
        grid = make_grid(slide, bundled)
        reader = RegionReader(slide, grid, bundled.input_size)
        assert reader.level == level
        crop = reader.crops(grid.cell_boxes(np.array([[1, 1]])))[0, 3]  # a whole patch
        assert abs(crop - zoom * bundled.input_size[0]) <= 1
        regions = _probabilities(slide, bundled, "regions", every=3)
        patches = _probabilities(slide, bundled, "patches", every=3)
    difference = np.abs(regions - patches)
    assert difference.max() <= 0.02, (difference.max(), difference.mean())
    assert regions.std() > 0.01  # the model saw tissue, not a blank


@pytest.mark.slow
def test_at_non_integer_downsamples_the_model_sees_the_stored_level(tmp_path, bundled):
    """Level 1 of an Aperio pyramid at 2.0005: the region reader cuts the level's own pixels
    (the per-patch reader given those pixels agrees to float precision), where the old per-patch
    path gave the model OpenSlide's resampled pixels, slightly blurred."""
    level0 = blocky_noise(4001, 3001, block=6, seed=3)
    level1 = level0[::2, ::2][:1500, :2000].copy()
    path = write_aperio_svs(tmp_path / "aperio.svs", [level0, level1])
    with Slide(path, mpp=0.25) as slide:
        grid = make_grid(slide, bundled)
        reader = RegionReader(slide, grid, bundled.input_size)
        assert reader.level == 1 and slide.level_downsamples[1] == pytest.approx(2.0005, abs=1e-3)
        boxes = grid.read_boxes(grid.all_cells())  # whole patches, as the engine reads them
        crops = reader.crops(boxes)
        stored = np.stack(
            [resize_patch(slide.read_level_region(1, *c), bundled.input_size) for c in crops]
        )
        got = np.empty_like(stored)
        for index, pixels in reader.batches(boxes, 64):
            got[index] = pixels.numpy()
        np.testing.assert_array_equal(got, stored)  # torch's batched resize = PIL's, per patch
        old = _probabilities(slide, bundled, "patches").ravel()
    new = bundled.predict(got)[:, bundled.positive_class_index]
    assert np.abs(new - old).mean() < 0.05


@pytest.mark.parametrize(
    ("reader_format", "mpp"), [("tiff", 1.0), ("openslide", 1.0), ("tiff", 0.97)]
)
def test_region_reader_cuts_each_patch_pixel_for_pixel(
    tmp_path, darkness, monkeypatch, reader_format, mpp
):
    """Overlapping patches (a 20-µm step for 32-µm patches) at every offset from the 128-px
    tiles, a random two thirds of them, in 256-px chunks: every patch crosses tile rows, tile
    columns or chunks somewhere, and each must be exactly the level's own pixels under it. At
    0.97 µm/px crops of 32 and 33 px mix (as 128 and 129 do on a 0.499 µm/px scan) and each is
    resized from its own size (by torch's kernel, as the batch is: see test_transforms for how
    close that is to PIL)."""
    monkeypatch.setattr("napari_metastasis.pipeline.reader.CHUNK_PX", 256)
    level0 = blocky_noise(1500, 1100, block=3, seed=5)
    path = write_tiled_tiff(tmp_path / "noise.tif", [level0], tile=128, mpp=mpp)
    with Slide(path, direct_tiles=reader_format == "tiff") as slide:
        grid = make_grid(slide, darkness, stride_um=20)
        cells = grid.all_cells()
        cells = cells[np.random.default_rng(1).random(len(cells)) < 2 / 3]
        reader = RegionReader(slide, grid, darkness.input_size, num_workers=2)
        assert reader.chunk_columns == 2
        boxes = grid.read_boxes(cells)
        crops = reader.crops(boxes)
        sizes = {tuple(size) for size in crops[:, 2:].tolist()}
        assert sizes == {(32, 32)} if mpp == 1.0 else len(sizes) >= 3  # widths x heights mix
        got = np.full((len(boxes), 32, 32, 3), 7, np.uint8)
        seen = np.zeros(len(boxes), bool)
        for index, pixels in reader.batches(boxes, 50):
            got[index] = pixels.numpy()
            seen[index] = True
        assert seen.all()
        for i in np.flatnonzero(seen):
            stored = torch.from_numpy(slide.read_level_region(0, *crops[i]))
            expected = resize_batch(stored[None], (32, 32))[0].numpy()
            np.testing.assert_array_equal(got[i], expected, str(i))


def test_bad_slide_reports_slide_error(format_fixtures, tmp_path, darkness):
    with (
        pytest.raises(SlideError, match=r"unreadable\.svs"),
        Slide(format_fixtures / "unreadable.svs") as s,
    ):
        s.check_readable()
        predict_slide(s, darkness, tissue=False)


def test_empty_plan_yields_nothing(svs_file, darkness):
    with Slide(svs_file) as slide:
        grid = make_grid(slide, darkness)
        result = predict_slide(slide, darkness, region=(-500, -500, 100, 100), tissue=False)
        assert grid == result.grid
    assert result.n_planned == 0 and result.n_done == 0 and not result.cancelled
    assert list(result.table.columns[:6]) == [
        "minx",
        "miny",
        "width",
        "height",
        "prob_normal",
        "prob_tumor",
    ]


def test_plan_counts_reused_and_background_and_calls_tissue_only_when_needed(tmp_path, darkness):
    image = np.full((1000, 1300, 3), 245, np.uint8)
    rng = np.random.default_rng(1)
    image[224:736, 224:608] = rng.normal((190, 110, 170), 12, (512, 384, 3)).clip(0, 255)
    path = write_pyramid_tiff(tmp_path / "tissue.tiff", image, mpp=0.5)
    with Slide(path) as slide:
        grid = make_grid(slide, darkness)  # patches of 64 level-0 px
        mask = tissue_mask(slide)
        calls = []

        def tissue():
            calls.append(1)
            return mask

        prob = ProbabilityMap.empty(grid, class_name="tumor")
        rect = (288, 288, 128, 128)  # 2 x 2 cells (centred on 320 and 384 px), all tissue
        cells, counts = plan_cells(slide, grid, rect, tissue=tissue, skip=prob, return_counts=True)
        assert counts == (4, 0, 0, 4) and len(cells) == 4 and len(calls) == 1
        prob.update(cells, np.zeros(len(cells)))
        cells, counts = plan_cells(slide, grid, rect, tissue=tissue, skip=prob, return_counts=True)
        assert counts == (4, 4, 0, 0) and len(cells) == 0 and len(calls) == 1  # not asked again
        everything, counts = plan_cells(
            slide, grid, tissue=tissue, tissue_min_fraction=0.5, skip=prob, return_counts=True
        )
        assert counts.reused == 4 and counts.planned == 48 - 4 == len(everything)
        assert counts.region == grid.shape[0] * grid.shape[1]
        assert counts.background == counts.region - 48


@pytest.mark.parametrize("reader", ["regions", "patches"])
def test_the_forward_pass_runs_with_the_threads_the_caller_gave(
    svs_file, darkness, monkeypatch, reader
):
    """``forward_threads`` holds for every batch; the region reader once overrode it with its own
    count while its batches were being drawn."""
    seen: list[int] = []
    forward = darkness.forward

    def counting(x):
        seen.append(torch.get_num_threads())
        return forward(x)

    monkeypatch.setattr(darkness, "forward", counting)
    before = torch.get_num_threads()
    wanted = max(before, cpu_forward_threads()) + 2  # neither torch's count nor the reader's own
    with Slide(svs_file) as slide:
        grid = make_grid(slide, darkness)
        cells = grid.all_cells()[:200]
        results = list(
            run_inference(
                slide, darkness, cells, grid, batch_size=32, reader=reader, forward_threads=wanted
            )
        )
    assert sum(len(r.cells) for r in results) == len(cells)
    assert seen and set(seen) == {wanted}
    assert torch.get_num_threads() == before
