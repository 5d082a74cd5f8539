"""Reading: the pixels of planned patches, in batches, ahead of the model.

Patches come from the finest pyramid level that is not coarser than the model needs (the *read
level*, ``slide.best_level_for_downsample(grid.read_downsample)``) and are resized to the network's
input size, so a 0.25 µm/px slide and a 0.5 µm/px slide give the model the same field of view.

:class:`RegionReader` (the engine's reader) reads tile-aligned regions of the read level, each
decoded once, and cuts the patches out of them:

* **Regions.** The read level is split into column chunks of about ``CHUNK_PX`` px (whole tiles);
  a region is one tile row of one chunk, and only the tiles under a planned patch are read (runs of
  neighbouring tiles in one call). TIFF-family slides decode their stored tiles directly
  (:mod:`napari_metastasis.slides.tiff_tiles`); every other format reads the same runs through OpenSlide.
  A patch belongs to the chunk of its first column; one that crosses into the next chunk reads
  that chunk's first tile column too, so a tile is decoded at most twice, and only there.
* **Order.** Patches are cut chunk by chunk, row by row, so a region is released as soon as the
  rows below it start. Results name their cells, so the order is the reader's own.
* **Cut and resize.** Patches are copied with numpy into one batch buffer (pinned on CUDA), a row
  of neighbouring patches at a time (one fancy-indexed copy of whole pixel rows, not a Python step
  per patch: 3x cheaper), and the whole batch is resized at once with torch (antialiased bilinear:
  PIL's pixels at whole-number ratios, within two grey levels at others; see
  :func:`~napari_metastasis.models.transforms.resize_batch`) on the model's device, in the
  consumer's thread, one call per crop size.
* **Concurrency.** A pool of threads decodes regions ahead (imagecodecs and OpenSlide release the
  GIL; threads measured faster than processes, which must ship every decoded pixel back), while one
  producer thread cuts batches ahead of the model. On the CPU, torch (the batched resize, and the
  forward pass in :func:`run_inference`) gets only the cores the readers leave
  (:func:`cpu_forward_threads`).
* **Memory.** Regions decoded ahead of the patch being cut hold at most ``REGION_BUDGET_BYTES``
  (64 MB; at least one region per reader thread), each region at most ``tile height x (CHUNK_PX +
  tile width + patch width)`` RGB pixels (3.4 MB for 256-px tiles, 7 MB for 512-px ones), plus the
  one or two tile rows the current patch spans, ``prefetch_batches`` batches waiting for the
  model and one reused tile buffer per reader thread (TIFF-family JPEG): under 100 MB whatever the
  slide's size (see docs/benchmarks.md).

:class:`PatchReader` is the per-patch reader it replaced (one ``read_region`` per patch, resized
with PIL, read ahead in threads): kept as the reference the region reader is tested against.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from napari_metastasis.models.transforms import resize_batch, resize_patch
from napari_metastasis.pipeline.cancel import Cancel, is_cancelled
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Slide

#: Batches read ahead of the model; bounds memory at about this many batches of uint8 patches.
DEFAULT_PREFETCH_BATCHES = 4
#: Regions are one tile row of a column chunk about this wide (level px, rounded to whole tiles).
CHUNK_PX = 4096
#: Bytes of regions decoded ahead of the patch being cut (at least one region per reader thread).
REGION_BUDGET_BYTES = 64 * 2**20
#: Side of the blocks read from slides that state no tile size (or huge strips).
UNTILED_BLOCK = 512

#: What a reader yields: the indices (into the boxes given) of a batch and its uint8 (n, H, W, 3)
#: pixels at the network's input size.
ReadBatch = tuple[np.ndarray, torch.Tensor]


def default_num_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


_THREADS_LOCK = threading.Lock()
_THREADS_HELD: list[int] = []  # torch's own count, saved while runs on the CPU hold it changed


def cpu_forward_threads(num_workers: int | None = None) -> int:
    """torch's intra-op threads for a run (and the reader's resize) on the CPU: the cores the reader threads leave, at least
    one. OpenMP's thread teams stall whenever one of their threads waits for a core (every
    parallel op waits for the slowest), so sharing cores with the readers costs far more than it
    gains: 3-10x slower forward passes were measured on 2 shared cores."""
    return max(1, (os.cpu_count() or 1) - (num_workers or default_num_workers()))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block (None: unchanged); restored when
    the last block running in any thread ends."""
    if n is None:
        yield
        return
    with _THREADS_LOCK:
        _THREADS_HELD.append(torch.get_num_threads() if not _THREADS_HELD else _THREADS_HELD[0])
        torch.set_num_threads(n)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            original = _THREADS_HELD.pop()
            if not _THREADS_HELD:
                torch.set_num_threads(original)


def read_level(slide: Slide, grid: PatchGrid) -> int:
    """The finest pyramid level that is not coarser than the grid's patches need."""
    return slide.best_level_for_downsample(grid.read_downsample)


class RegionReader:
    """Reads planned patches by tile-aligned regions of the read level (see the module notes)."""

    def __init__(
        self,
        slide: Slide,
        grid: PatchGrid,
        input_size: tuple[int, int],
        *,
        num_workers: int | None = None,
        prefetch_batches: int = DEFAULT_PREFETCH_BATCHES,
        device: str | torch.device = "cpu",
        pin_memory: bool = False,
        resample: int = 2,
    ):
        self.slide = slide
        self.grid = grid
        self.input_size: tuple[int, int] = (int(input_size[0]), int(input_size[1]))
        self.resample = resample  # Pillow filter code of the config's Resize (2: bilinear)
        self.num_workers = num_workers or default_num_workers()
        self.prefetch_batches = max(1, prefetch_batches)
        self.device = torch.device(device)
        self.pin_memory = pin_memory
        self.level = read_level(slide, grid)
        self.level_downsample = slide.level_downsamples[self.level]
        tile = slide.tile_size(self.level)
        if tile is None or min(tile) <= 0 or max(tile) > 8 * UNTILED_BLOCK:
            tile = (UNTILED_BLOCK, UNTILED_BLOCK)
        self.tile_size = tile  # (w, h)
        self.chunk_columns = max(1, round(CHUNK_PX / tile[0]))

    def crops(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) x, y, width, height of level-0 boxes at the read level, in whole pixels: the
        nearest pixel for the corner, the size as the per-patch reader reads it."""
        boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        at_level = np.rint(boxes / self.level_downsample).astype(np.int64)
        at_level[:, 2:] = np.maximum(at_level[:, 2:], 1)
        return at_level

    def plan(self, boxes: np.ndarray) -> _RegionPlan:
        """The regions under ``boxes`` and the order patches are cut in."""
        return _RegionPlan(self.crops(boxes), self.tile_size, self.chunk_columns)

    def regions_ahead(self, crop_width: int) -> int:
        """How many regions to decode ahead: the memory budget over the largest region's size."""
        tw, th = self.tile_size
        largest = th * (self.chunk_columns * tw + tw + crop_width) * 3
        return max(self.num_workers, REGION_BUDGET_BYTES // largest)

    def read_region(self, plan: _RegionPlan, index: int) -> list[tuple[int, np.ndarray]]:
        """One region: its runs of neighbouring tiles as (level x of the run, pixels)."""
        tw, th = self.tile_size
        row, runs = plan.regions[index]
        return [
            (c0 * tw, self.slide.read_level_region(self.level, c0 * tw, row * th, n * tw, th))
            for c0, n in runs
        ]

    def batches(
        self, boxes: np.ndarray, batch_size: int, cancel: Cancel = None
    ) -> Iterator[ReadBatch]:
        """Yield (indices into ``boxes``, uint8 (n, H, W, 3) tensor on the device) per batch."""
        if len(boxes) == 0:
            return
        plan = self.plan(boxes)
        out: queue.Queue = queue.Queue(maxsize=self.prefetch_batches)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce,
            args=(plan, batch_size, out, stop, cancel),
            name="region-cutter",
            daemon=True,
        )
        producer.start()
        # torch's thread count is the caller's to set (run_inference holds it for the whole run,
        # forward pass and resize alike); setting it here too would override the caller's.
        try:
            yield from self._consume(out, plan)
        finally:
            stop.set()  # a producer waiting on a full queue sees it within 0.1 s
            producer.join()

    def _consume(self, out: queue.Queue, plan: _RegionPlan) -> Iterator[ReadBatch]:
        while True:
            item = out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            part, crops = item
            # Resized here, in the consumer's thread: torch's CPU kernels then run in one thread
            # at a time (the forward pass's), not in two competing thread teams.
            pixels = crops.to(self.device, non_blocking=self.pin_memory)
            yield self._resize(part, pixels, plan.h[part], plan.w[part])

    # --- the producer thread ------------------------------------------------------------------
    def _produce(self, plan, batch_size, out: queue.Queue, stop, cancel) -> None:
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="region-reader")
        try:
            for batch in self._cut(plan, batch_size, pool, stop, cancel):
                if not put(batch):
                    return
            put(None)
        except BaseException as exc:  # noqa: BLE001 - delivered to the consumer, raised there
            put(exc)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _cut(self, plan, batch_size, pool, stop, cancel) -> Iterator[ReadBatch]:
        th = self.tile_size[1]
        ch, cw = int(plan.h.max()), int(plan.w.max())
        ahead = self.regions_ahead(cw)
        futures: dict[int, Future] = {}
        loaded: dict[int, list[tuple[int, int, np.ndarray]]] = {}
        submitted = released = 0
        n_regions = len(plan.regions)
        for start in range(0, len(plan.order), batch_size):
            if stop.is_set() or is_cancelled(cancel):
                return
            part = plan.order[start : start + batch_size]
            crops = torch.empty(
                (len(part), ch, cw, 3), dtype=torch.uint8, pin_memory=self.pin_memory
            )
            view = crops.numpy()
            # Patches side by side on one row of one chunk share their regions and top: each
            # such run is cut with a few numpy calls, not one per patch.
            for j0, j1 in plan.row_runs(part):
                first, last = int(plan.first_region[part[j0]]), int(plan.last_region[part[j0]])
                while released < first:  # regions above this row are done with
                    futures.pop(released, None)
                    loaded.pop(released, None)
                    released += 1
                target = min(n_regions, last + 1 + ahead)
                while submitted < target:
                    futures[submitted] = pool.submit(self.read_region, plan, submitted)
                    submitted += 1
                for r in range(first, last + 1):
                    if r not in loaded:
                        loaded[r] = [
                            (x0, x0 + pixels.shape[1], np.ascontiguousarray(pixels))
                            for x0, pixels in futures.pop(r).result()
                        ]
                    top = plan.regions[r][0] * th
                    self._cut_rows(view[j0:j1], plan, part[j0:j1], loaded[r], top, th)
            yield part, crops

    @staticmethod
    def _cut_rows(out: np.ndarray, plan: _RegionPlan, patches: np.ndarray, runs, top, th) -> None:
        """Copy the rows of one region under a row of patches into ``out``.

        Each patch row (``width x 3`` contiguous bytes) is handled as one opaque numpy item, so
        the patches of one size are one fancy-indexed copy of whole rows, not of single pixels.
        (Grid boxes round to two sizes a side, so a row holds at most four sizes.)
        """
        py = int(plan.y[patches[0]])
        xs, hs, ws = plan.x[patches], plan.h[patches], plan.w[patches]
        sizes = _size_keys(hs, ws)
        placed = 0
        for size in np.unique(sizes).tolist():
            same = np.flatnonzero(sizes == size)
            ph, pw = int(hs[same[0]]), int(ws[same[0]])
            a, b = max(py, top), min(py + ph, top + th)
            targets = _row_items(out, pw)[..., 0]  # (patches, slot rows): each slot from column 0
            for x0, x1, pixels in runs:
                inside = same[(xs[same] >= x0) & (xs[same] + pw <= x1)]
                if len(inside) == 0:
                    continue
                sources = _row_items(pixels[a - top : b - top], pw)  # (rows, window starts)
                targets[inside, a - py : b - py] = sources[:, xs[inside] - x0].T
                placed += len(inside)
        if placed != len(patches):  # cannot happen: every tile under a patch is in one run
            raise RuntimeError(f"patches on row {py} are not all inside one run of region {top}")

    def _resize(
        self, part: np.ndarray, crops: torch.Tensor, heights: np.ndarray, widths: np.ndarray
    ) -> ReadBatch:
        """Each crop (top-left ``height x width`` of its slot) to the input size, one torch call
        per crop size (grid boxes round to two sizes a side, so at most four).

        Crops of one size are gathered whole slots at a time and resized into consecutive rows of
        the result, so the batch comes back grouped by size and ``part`` reordered to match: on a
        0.499 µm/px slide, where 128- and 129-px crops mix, indexing the crops and scattering the
        results patch by patch cost 4x the resizing itself.
        """
        sizes = _size_keys(heights, widths)
        if (sizes == sizes[0]).all():
            h, w = int(heights[0]), int(widths[0])
            return part, resize_batch(crops[:, :h, :w], self.input_size, self.resample)
        order = np.argsort(sizes, kind="stable")
        bounds = [0, *(np.flatnonzero(np.diff(sizes[order])) + 1).tolist(), len(order)]
        out = torch.empty((len(crops), *self.input_size, 3), dtype=torch.uint8, device=crops.device)
        for k0, k1 in itertools.pairwise(bounds):
            index = order[k0:k1]
            h, w = int(heights[index[0]]), int(widths[index[0]])
            group = crops.index_select(0, torch.from_numpy(index).to(crops.device))
            out[k0:k1] = resize_batch(group[:, :h, :w], self.input_size, self.resample)
        return part[order], out


class PatchReader:
    """Reads each patch with its own ``read_region`` call, resized with PIL, ahead in threads.

    The reader :class:`RegionReader` replaced; the tests check the two give the same answers.
    Batches come in the order of the boxes given.
    """

    def __init__(
        self,
        slide: Slide,
        grid: PatchGrid,
        input_size: tuple[int, int],
        *,
        num_workers: int | None = None,
        prefetch_batches: int = DEFAULT_PREFETCH_BATCHES,
        device: str | torch.device = "cpu",
        pin_memory: bool = False,
        resample: int = 2,
    ):
        self.slide = slide
        self.resample = resample  # Pillow filter code of the config's Resize (2: bilinear)
        self.grid = grid
        self.input_size: tuple[int, int] = (int(input_size[0]), int(input_size[1]))
        self.num_workers = num_workers or default_num_workers()
        self.prefetch_batches = max(1, prefetch_batches)
        self.device = torch.device(device)
        self.pin_memory = pin_memory
        self.level = read_level(slide, grid)
        self.level_downsample = slide.level_downsamples[self.level]

    def read_patch(self, box: np.ndarray) -> np.ndarray:
        """RGB uint8 patch of ``input_size`` for a level-0 box (x, y, width, height)."""
        x, y, w, h = (int(v) for v in box)
        ds = self.level_downsample
        patch = self.slide.read_region(
            self.level, x, y, max(1, round(w / ds)), max(1, round(h / ds))
        )
        return resize_patch(patch, self.input_size, self.resample)

    def batches(
        self, boxes: np.ndarray, batch_size: int, cancel: Cancel = None
    ) -> Iterator[ReadBatch]:
        """Yield (indices into ``boxes``, uint8 (n, H, W, 3) tensor on the device) per batch."""
        n = len(boxes)
        window = batch_size * self.prefetch_batches
        h, w = self.input_size
        pending: deque[Future] = deque()
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="patch-reader")
        try:
            submitted = 0
            for start in range(0, n, batch_size):
                if is_cancelled(cancel):
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
                yield np.arange(start, stop), batch.to(self.device, non_blocking=self.pin_memory)
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def _size_keys(heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """One integer per (height, width) pair, equal where both are."""
    return heights * (int(widths.max()) + 1) + widths


def _row_items(pixels: np.ndarray, width: int) -> np.ndarray:
    """A view of RGB ``pixels`` (..., rows, columns, 3), rows contiguous, whose item
    ``[..., i, x]`` is the ``width`` pixels from column ``x`` of row ``i`` as one opaque value."""
    *lead, rows, columns, _ = pixels.shape
    return np.ndarray(
        shape=(*lead, rows, columns - width + 1),
        dtype=np.dtype((np.void, 3 * width)),
        buffer=pixels,
        strides=pixels.strides[:-1],
    )


READERS = {"regions": RegionReader, "patches": PatchReader}


class _RegionPlan:
    """Which regions (tile row, runs of tile columns) each patch needs, in cutting order.

    ``x``, ``y``, ``w``, ``h``: the patches at the read level; ``order``: the patch indices in cutting order
    (chunk, then row, then column); ``regions``: (tile row, [(first column, count), ...]) in
    reading order; ``first_region``/``last_region``: per patch, its consecutive span of regions.
    """

    def __init__(self, crops: np.ndarray, tile_size: tuple[int, int], chunk_columns: int):
        tw, th = tile_size
        self.x, self.y, self.w, self.h = x, y, w, h = crops.T
        col0, col1 = x // tw, (x + w - 1) // tw
        row0, row1 = y // th, (y + h - 1) // th
        chunk = col0 // chunk_columns
        self.order = np.lexsort((x, y, chunk))
        # Every (chunk, tile row, tile column) under some patch, as one sortable integer.
        rows_total, cols_total = int(row1.max()) + 2, int(col1.max()) + 2
        span_r, span_c = int((row1 - row0).max()) + 1, int((col1 - col0).max()) + 1
        keys = []
        for dr in range(span_r):
            for dc in range(span_c):
                inside = (row0 + dr <= row1) & (col0 + dc <= col1)
                keys.append(((chunk * rows_total + row0 + dr) * cols_total + col0 + dc)[inside])
        needed = np.unique(np.concatenate(keys))  # sorted by chunk, row, column
        region_of, cols = np.divmod(needed, cols_total)
        region_keys, starts = np.unique(region_of, return_index=True)
        bounds = [*starts.tolist(), len(needed)]
        self.regions = []
        for r, key in enumerate(region_keys.tolist()):
            run_cols = cols[bounds[r] : bounds[r + 1]]
            breaks = np.flatnonzero(np.diff(run_cols) != 1) + 1
            runs = [(int(c[0]), len(c)) for c in np.split(run_cols, breaks)]
            self.regions.append((key % rows_total, runs))
        # Regions are sorted by (chunk, row): a patch's rows are a consecutive span of them.
        self.first_region = np.searchsorted(region_keys, chunk * rows_total + row0)
        self.last_region = np.searchsorted(region_keys, chunk * rows_total + row1)

    def row_runs(self, part: np.ndarray) -> list[tuple[int, int]]:
        """(start, stop) positions in ``part`` (patches in cutting order) of runs that share a
        row and their regions: the units :meth:`RegionReader._cut` cuts at once."""
        keys = np.stack([self.y[part], self.first_region[part], self.last_region[part]])
        breaks = np.flatnonzero((np.diff(keys, axis=1) != 0).any(axis=0)) + 1
        bounds = [0, *breaks.tolist(), len(part)]
        return list(itertools.pairwise(bounds))
