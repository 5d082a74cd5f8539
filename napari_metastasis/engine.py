"""The inference engine: which patches to classify, reading them ahead of the model, streaming results.

One engine serves the napari dock widget (a background thread that updates an overlay batch by batch
and can be cancelled) and headless batch runs (the ``predict`` command). It is built from three
steps that can be used separately::

    from napari_metastasis.engine import CancelToken, make_grid, plan_cells, run_inference
    from napari_metastasis.models import load_model
    from napari_metastasis.probability import ProbabilityMap

    model = load_model("default")                  # device="auto": CUDA, else MPS, else CPU
    grid = make_grid(slide, model)                 # PatchGrid at the model's µm/px and patch size
    prob = ProbabilityMap.empty(grid, class_name=model.positive_class, model_name=model.name)
    cells = plan_cells(slide, grid, region=polygon, tissue=True, skip=prob)  # (N, 2) row, col
    token = CancelToken()                          # token.cancel() from any thread (the GUI)
    for batch in run_inference(slide, model, cells, grid, cancel=token, progress=print):
        prob.update(batch.cells, batch.positive)   # BatchResult: cells, boxes, probabilities

or all at once, keeping every finished batch if cancelled::

    result = predict_slide(slide, model, region=(x, y, w, h), cancel=token)
    result.prob_map, result.table, result.cancelled

Design points:

* **Grid.** Cells come from :class:`~napari_metastasis.grid.PatchGrid`, anchored at the slide's
  top-left, so runs over overlapping regions land on the same cells and ``skip=prob_map`` reuses
  every cell already analysed.
* **Resolution.** A patch covers ``patch_size_pixels * spacing_um_px`` µm whatever the slide's µm/px.
  It is read from the finest pyramid level that is not coarser than the model's spacing
  (``slide.best_level_for_downsample(grid.read_downsample)``) and resized to the network's input
  size, so a 0.25 µm/px slide and a 0.5 µm/px slide give the model the same field of view.
* **Throughput.** A pool of reader threads (OpenSlide and PIL release the GIL) reads, decodes and
  resizes patches ahead of the model. At most ``prefetch_batches`` batches are in flight, so memory
  stays bounded whatever the slide size. Batches go to the model's device as uint8 (pinned memory
  and non-blocking copies on CUDA), are normalised there, and run under AMP and channels-last on CUDA.
* **Streaming and cancel.** Results are yielded batch by batch; ``progress(done, total)`` is called
  after each batch; ``cancel`` (a :class:`CancelToken` or a :class:`threading.Event`) is checked
  before every batch, and a cancelled run simply stops yielding: everything yielded so far stands.
  Closing the generator early (``break``) also stops the readers.

The engine holds no global state; one model may serve several slides one after the other. Errors
reading the slide surface as :class:`~napari_metastasis.errors.SlideError` from the iterator.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
import torch
from shapely.geometry import box as shapely_box
from shapely.geometry.base import BaseGeometry

from .atomic import atomic_path
from .grid import PatchGrid
from .models import LoadedModel, ModelConfig
from .models.transforms import resize_patch
from .probability import ProbabilityMap
from .slide import Resolution, Slide
from .tissue import TissueMask, tissue_mask

DEFAULT_BATCH_SIZE = 64
#: Patches with less tissue than this (fraction of their area) are not classified.
DEFAULT_TISSUE_MIN_FRACTION = 0.25
#: Batches read ahead of the model; bounds memory at about this many batches of uint8 patches.
DEFAULT_PREFETCH_BATCHES = 4

#: A region: None (whole slide), a rectangle (x, y, width, height), or a shapely geometry.
Region = tuple[float, float, float, float] | BaseGeometry | None
Progress = Callable[[int, int], None]

#: WSInfer's CSV columns, before one ``prob_<class>`` column per class.
BOX_COLUMNS = ("minx", "miny", "width", "height")


def default_num_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class CancelToken:
    """Set from any thread to stop a run at the next batch; compatible with ``threading.Event``."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    set = cancel  # so code written for threading.Event works

    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def _is_cancelled(cancel: CancelToken | threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


# --- planning ---------------------------------------------------------------------------------
def make_grid(
    slide: Slide,
    model: LoadedModel | ModelConfig,
    *,
    resolution: Resolution | None = None,
    stride_um: float | None = None,
) -> PatchGrid:
    """The patch grid of ``slide`` for ``model``'s patch size and µm/px.

    ``resolution`` defaults to ``slide.require_resolution()`` (metadata, the user's ``mpp=`` given to
    :class:`Slide`, else the objective power; a slide with none raises ResolutionError).
    """
    config = model.config if isinstance(model, LoadedModel) else model
    res = resolution or slide.require_resolution()
    width, height = slide.dimensions
    return PatchGrid(
        width,
        height,
        res.mpp_x,
        res.mpp_y,
        patch_px=config.patch_size_pixels,
        spacing_um=config.spacing_um_px,
        stride_um=stride_um,
    )


def region_to_level0(region: Region, grid: PatchGrid, units: str = "px") -> BaseGeometry | None:
    """A region as a level-0 shapely geometry (``units`` "px" = level-0 pixels, or "um")."""
    if region is None:
        return None
    if units not in ("px", "um"):
        raise ValueError(f"region units must be 'px' or 'um', got {units!r}")
    if isinstance(region, BaseGeometry):
        geometry = region
    else:
        x, y, w, h = (float(v) for v in region)
        if w <= 0 or h <= 0:
            raise ValueError(f"region width and height must be positive, got {w} x {h}")
        geometry = shapely_box(x, y, x + w, y + h)
    if units == "um":
        geometry = shapely.transform(geometry, lambda xy: grid.um_to_level0(xy))
    return geometry


def plan_cells(
    slide: Slide,
    grid: PatchGrid,
    region: Region = None,
    *,
    region_units: str = "px",
    tissue: TissueMask | bool | None = True,
    tissue_min_fraction: float = DEFAULT_TISSUE_MIN_FRACTION,
    skip: ProbabilityMap | None = None,
) -> np.ndarray:
    """The (N, 2) (row, col) cells to classify, row by row.

    region:
        None for the whole slide; a rectangle (x, y, width, height) takes every cell its patch
        overlaps; a shapely polygon takes the cells whose patch centre is inside (holes respected).
        Coordinates are level-0 pixels, or µm with ``region_units="um"``.
    tissue:
        True detects tissue on a low-resolution level; a :class:`TissueMask` is used as is (the
        viewer can compute it once); False/None classifies every cell of the region.
    skip:
        A probability map on the same grid: cells it has already analysed are left out.
    """
    geometry = region_to_level0(region, grid, region_units)
    if geometry is None:
        cells = grid.all_cells()
    elif isinstance(region, tuple | list) and region_units == "px":
        x, y, w, h = (float(v) for v in region)
        cells = grid.cells_in_rect(x, y, w, h)
    elif geometry.area > 0 and geometry.equals(shapely_box(*geometry.bounds)):
        minx, miny, maxx, maxy = geometry.bounds
        cells = grid.cells_in_rect(minx, miny, maxx - minx, maxy - miny)
    else:
        cells = grid.cells_in_geometry(geometry)
    if skip is not None:
        if skip.grid != grid:
            raise ValueError("the probability map to reuse was made on a different grid")
        cells = skip.missing(cells)
    if tissue is True:
        tissue = tissue_mask(slide, mpp=None if slide.resolution else grid.mpp_x)
    if isinstance(tissue, TissueMask) and tissue_min_fraction > 0:
        cells = tissue.cells_with_tissue(grid, cells, tissue_min_fraction)
    return np.asarray(cells, dtype=np.int64).reshape(-1, 2)


# --- reading ----------------------------------------------------------------------------------
class PatchReader:
    """Reads grid cells' patches in a thread pool, ahead of whoever consumes the batches.

    Each patch is read from ``level`` (the finest level not coarser than the model needs) and resized
    to ``input_size``. Used by :func:`run_inference`; the benchmark uses it alone to measure reading.
    """

    def __init__(
        self,
        slide: Slide,
        grid: PatchGrid,
        input_size: tuple[int, int],
        *,
        num_workers: int | None = None,
        prefetch_batches: int = DEFAULT_PREFETCH_BATCHES,
        pin_memory: bool = False,
    ):
        self.slide = slide
        self.grid = grid
        self.input_size = tuple(input_size)
        self.num_workers = num_workers or default_num_workers()
        self.prefetch_batches = max(1, prefetch_batches)
        self.pin_memory = pin_memory
        self.level = slide.best_level_for_downsample(grid.read_downsample)
        self.level_downsample = slide.level_downsamples[self.level]

    def read_patch(self, box: np.ndarray) -> np.ndarray:
        """RGB uint8 patch of ``input_size`` for a level-0 box (x, y, width, height)."""
        x, y, w, h = (int(v) for v in box)
        ds = self.level_downsample
        patch = self.slide.read_region(
            self.level, x, y, max(1, round(w / ds)), max(1, round(h / ds))
        )
        return resize_patch(patch, self.input_size)

    def batches(
        self,
        boxes: np.ndarray,
        batch_size: int,
        cancel: CancelToken | threading.Event | None = None,
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Yield (slice of ``boxes``, uint8 (n, H, W, 3) tensor) batch by batch, in order."""
        n = len(boxes)
        window = batch_size * self.prefetch_batches
        h, w = self.input_size
        pending: deque[Future] = deque()
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="patch-reader")
        try:
            submitted = 0
            for start in range(0, n, batch_size):
                if _is_cancelled(cancel):
                    return
                while submitted < min(n, start + window):
                    pending.append(pool.submit(self.read_patch, boxes[submitted]))
                    submitted += 1
                stop = min(start + batch_size, n)
                batch = torch.empty(
                    (stop - start, h, w, 3), dtype=torch.uint8, pin_memory=self.pin_memory
                )
                view = batch.numpy()  # shares the (pinned) memory: patches are copied once
                for i in range(stop - start):
                    view[i] = pending.popleft().result()
                yield slice(start, stop), batch
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


# --- inference --------------------------------------------------------------------------------
@dataclass
class BatchResult:
    """One classified batch: its cells, their level-0 boxes and class probabilities."""

    cells: np.ndarray  # (N, 2) row, col
    boxes: np.ndarray  # (N, 4) level-0 x, y, width, height
    probabilities: np.ndarray  # (N, num_classes) softmax
    positive_index: int
    done: int  # patches finished so far in this run, this batch included
    total: int  # patches planned for this run

    @property
    def positive(self) -> np.ndarray:
        """(N,) probability of the positive (tumour) class."""
        return self.probabilities[:, self.positive_index]


def run_inference(
    slide: Slide,
    model: LoadedModel,
    cells: np.ndarray,
    grid: PatchGrid,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    prefetch_batches: int = DEFAULT_PREFETCH_BATCHES,
    progress: Progress | None = None,
    cancel: CancelToken | threading.Event | None = None,
) -> Iterator[BatchResult]:
    """Classify ``cells`` of ``grid`` and yield a :class:`BatchResult` per batch, in order.

    ``device`` moves the model first (default: leave it where :func:`load_model` put it).
    """
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if device is not None:
        model.to(device)
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    boxes = grid.cell_boxes(cells)  # clipped to the slide: what the results describe
    total = len(cells)
    if progress:
        progress(0, total)
    if total == 0:
        return
    reader = PatchReader(
        slide,
        grid,
        model.input_size,
        num_workers=num_workers,
        prefetch_batches=prefetch_batches,
        pin_memory=model.device.type == "cuda",
    )
    batches = reader.batches(grid.read_boxes(cells), batch_size, cancel)  # whole patches
    # On CUDA the forward pass is asynchronous: launching batch k+1 before collecting batch k keeps
    # the GPU busy while this thread assembles and copies the next batch.
    lag = 1 if model.device.type == "cuda" else 0
    in_flight: deque[tuple[slice, torch.Tensor]] = deque()

    def collect() -> BatchResult:
        part, probs = in_flight.popleft()
        result = BatchResult(
            cells[part],
            boxes[part],
            probs.cpu().numpy(),
            model.positive_class_index,
            part.stop,
            total,
        )
        if progress:
            progress(part.stop, total)
        return result

    try:
        for part, pixels in batches:
            if _is_cancelled(cancel):
                break
            in_flight.append((part, model.forward(model.prepare(pixels))))
            while len(in_flight) > lag:
                yield collect()
        while in_flight:  # launched before a cancel: finished work is kept
            yield collect()
    finally:
        batches.close()


# --- whole runs -------------------------------------------------------------------------------
@dataclass
class PredictionResult:
    """What :func:`predict_slide` produced; a cancelled run holds every batch that finished."""

    prob_map: ProbabilityMap
    table: pd.DataFrame  # one row per patch classified in this run (see :func:`patch_table`)
    n_planned: int
    cancelled: bool
    seconds: float
    tissue: TissueMask | None = None
    extra: dict = field(default_factory=dict)

    @property
    def grid(self) -> PatchGrid:
        return self.prob_map.grid

    @property
    def n_done(self) -> int:
        return len(self.table)


def predict_slide(
    slide: Slide,
    model: LoadedModel,
    *,
    region: Region = None,
    region_units: str = "px",
    tissue: TissueMask | bool | None = True,
    tissue_min_fraction: float = DEFAULT_TISSUE_MIN_FRACTION,
    prob_map: ProbabilityMap | None = None,
    resolution: Resolution | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    progress: Progress | None = None,
    cancel: CancelToken | threading.Event | None = None,
) -> PredictionResult:
    """Plan, classify and collect in one call.

    With ``prob_map`` (an earlier result on the same grid) only cells it lacks are classified and
    the map is updated in place; the table then lists only the newly classified patches.
    """
    started = time.perf_counter()
    grid = prob_map.grid if prob_map is not None else make_grid(slide, model, resolution=resolution)
    mask: TissueMask | None = None
    if tissue is True:
        mask = tissue_mask(slide, mpp=None if slide.resolution else grid.mpp_x)
    elif isinstance(tissue, TissueMask):
        mask = tissue
    cells = plan_cells(
        slide,
        grid,
        region,
        region_units=region_units,
        tissue=mask,
        tissue_min_fraction=tissue_min_fraction,
        skip=prob_map,
    )
    if prob_map is None:
        prob_map = ProbabilityMap.empty(
            grid,
            class_name=model.positive_class,
            model_name=model.name,
            slide_path=str(slide.path),
        )
    parts: list[BatchResult] = []
    for batch in run_inference(
        slide,
        model,
        cells,
        grid,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        cancel=cancel,
    ):
        prob_map.update(batch.cells, batch.positive)
        parts.append(batch)
    done = sum(len(p.cells) for p in parts)
    table = patch_table(
        np.concatenate([p.cells for p in parts]) if parts else np.empty((0, 2), np.int64),
        np.concatenate([p.boxes for p in parts]) if parts else np.empty((0, 4), np.int64),
        np.concatenate([p.probabilities for p in parts])
        if parts
        else np.empty((0, model.config.num_classes), np.float32),
        model.class_names,
    )
    return PredictionResult(
        prob_map,
        table,
        n_planned=len(cells),
        cancelled=done < len(cells),
        seconds=time.perf_counter() - started,
        tissue=mask,
    )


def patch_table(
    cells: np.ndarray, boxes: np.ndarray, probabilities: np.ndarray, class_names
) -> pd.DataFrame:
    """WSInfer's columns (minx, miny, width, height in level-0 px, then prob_<class>) + row, col."""
    data: dict[str, np.ndarray] = {
        name: np.asarray(boxes[:, i], np.int64) for i, name in enumerate(BOX_COLUMNS)
    }
    for i, name in enumerate(class_names):
        data[f"prob_{name}"] = np.asarray(probabilities[:, i], np.float32)
    data["row"] = np.asarray(cells[:, 0], np.int64)
    data["col"] = np.asarray(cells[:, 1], np.int64)
    return pd.DataFrame(data)


def write_patch_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """The WSInfer-compatible CSV (no row/col columns), written atomically."""
    columns = [c for c in table.columns if c in BOX_COLUMNS or c.startswith("prob_")]
    path = Path(path)
    with atomic_path(path) as tmp:
        table[columns].to_csv(tmp, index=False, float_format="%.6f")
    return path
