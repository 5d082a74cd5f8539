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
  producer thread cuts batches ahead of the model. They sleep once ``prefetch_batches`` batches
  wait (the producer on the full queue, the decoders on an empty pool), so a forward-bound run
  leaves them idle. On the CPU the resize runs on one torch thread and the forward pass in
  :func:`run_inference` on as many threads as :class:`ThreadTuner` measures fastest, each with
  its own part of the batch.
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
from typing import Any

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


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_num_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


#: Environment variable choosing torch's threads for CPU runs: ``auto`` (default: measured,
#: :class:`ThreadTuner`), ``readers`` (the cores the reader threads leave, the old fixed split) or
#: a whole number.
THREADS_ENV_VAR = "NAPARI_METASTASIS_TORCH_THREADS"


def cpu_forward_threads(num_workers: int | None = None) -> int:
    """The cores the reader threads leave, at least one: the fixed split runs used before
    :class:`ThreadTuner` (``NAPARI_METASTASIS_TORCH_THREADS=readers`` restores it).

    It starves a forward-bound run: readers 500x faster than the model sleep nearly all the time,
    yet hold half of a two-core machine away from torch."""
    return max(1, (os.cpu_count() or 1) - (num_workers or default_num_workers()))


def thread_policy(value: str | None = None) -> str | int:
    """``auto``, ``readers`` or a whole number of threads, from ``value`` or the environment
    variable :data:`THREADS_ENV_VAR` (unset or empty: ``auto``)."""
    text = (os.environ.get(THREADS_ENV_VAR, "") if value is None else value).strip().lower()
    if text in ("", "auto"):
        return "auto"
    if text == "readers":
        return "readers"
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ValueError(
        f"{THREADS_ENV_VAR} must be 'auto', 'readers' or a whole number of threads, got {text!r}"
    )


def thread_candidates(cores: int) -> list[int]:
    """The thread counts :class:`ThreadTuner` tries on ``cores`` cores: all of them, half, and one
    (each once, most first)."""
    cores = max(1, cores)
    return sorted({cores, max(1, cores // 2), 1}, reverse=True)


class ThreadTuner:
    """How many threads run the forward pass of a CPU run, chosen by measuring the run's rate.

    No fixed split of the cores is right everywhere: the bundled model is ~500x slower than the
    reader and wants every core, a cheap model leaves the cores to the decoders (where splitting
    its tiny batches only adds hand-offs), and a machine's other programs take cores too. So the
    tuner measures instead of guessing. It tries each of :func:`thread_candidates` for a *probe*
    (at least ``probe_batches`` batches and ``probe_seconds`` seconds of the run: patches per
    second from asking the reader for a batch to the model's answer), keeps the fastest, and
    holds it for ``hold_batches`` batches before probing again, since the load of the machine
    changes. Each round that confirms the choice doubles the hold (quadruples it where the choice
    was ``clear_lead`` times faster than every other count; up to ``max_hold_batches``), so a
    15,000-patch slide probes four to six times; a challenger must be ``margin`` times faster to
    replace the held count. The first batch of
    every run (:meth:`start_run`) is not measured: the readers start then. A model whose forward
    pass takes under ``min_split_seconds`` a batch runs on one thread without probing: splitting
    could save at most that much per batch, while the hand-offs cost about as much and the
    readers, its bottleneck, want the cores (a read-bound model ran at 0.73x the reader's rate
    split in two on two cores).

    :func:`~napari_metastasis.pipeline.inference.run_inference` uses the count as the number of
    parts a batch is split into, each run by its own thread with one torch thread
    (:class:`~napari_metastasis.models.loading.ForwardPool`). One tuner serves one model through
    consecutive runs (slides), so a run starts with what the last one found. Pure bookkeeping:
    :meth:`record` is told what happened; the tests feed it.
    """

    def __init__(
        self,
        cores: int | None = None,
        *,
        probe_batches: int = 1,
        probe_seconds: float = 0.25,
        hold_batches: int = 8,
        max_hold_batches: int = 1024,
        margin: float = 1.05,
        clear_lead: float = 1.5,
        min_split_seconds: float = 0.005,
    ):
        self.candidates = thread_candidates(cores or available_cores())
        self.probe_batches = probe_batches
        self.probe_seconds = probe_seconds
        self.base_hold = hold_batches
        self.max_hold = max_hold_batches
        self.margin = margin
        self.clear_lead = clear_lead
        self.min_split_seconds = min_split_seconds
        self.cheap = False  # the forward pass is too short to split: one thread, no probes
        self._largest = 0  # the most patches a batch has held
        self.chosen: int | None = None  # the held count (None: the first round is under way)
        self.rates: dict[int, float] = {}  # patches/s of each count's last probe
        self.rounds = 0  # probe rounds finished
        self._hold = hold_batches
        self._queue = list(self.candidates)  # counts left to probe in this round
        self._held = 0  # batches run at the chosen count since the last round
        self._skip = 1
        self._window = [0, 0.0, 0]  # patches, seconds, batches of the current probe

    @property
    def threads(self) -> int:
        """The count to run the next batch with."""
        return self._queue[0] if self._queue else self.chosen  # type: ignore[return-value]

    @property
    def probing(self) -> bool:
        return bool(self._queue)

    def start_run(self) -> None:
        """A run begins: its first batch is not measured."""
        self._skip = 1

    def record(self, patches: int, seconds: float, forward_seconds: float | None = None) -> None:
        """One batch of ``patches`` took ``seconds`` at :attr:`threads`, ``forward_seconds`` of
        them in the forward pass."""
        self._largest = max(self._largest, patches)
        if forward_seconds is not None and not self.cheap and patches == self._largest:
            # (judged on full batches: a run's last, short batch says little)
            self.cheap = forward_seconds * self.threads < self.min_split_seconds
            if self.cheap:
                self.chosen, self._queue, self._window = 1, [], [0, 0.0, 0]
                return
        if self._skip:
            self._skip -= 1
            return
        if not self._queue:
            self._held += 1
            if (
                self._held >= self._hold and not self.cheap
            ):  # probe again: the challengers first, the held count last
                self._queue = [c for c in self.candidates if c != self.chosen] + [self.chosen]  # type: ignore[list-item]
                self._held = 0
            return
        window = self._window
        window[0] += patches
        window[1] += seconds
        window[2] += 1
        if window[2] < self.probe_batches or window[1] < self.probe_seconds:
            return
        self.rates[self._queue.pop(0)] = window[0] / window[1] if window[1] > 0 else float("inf")
        self._window = [0, 0.0, 0]
        if not self._queue:
            self._decide()

    def _decide(self) -> None:
        best = max(self.rates, key=lambda c: (self.rates[c], c))
        held = self.chosen
        if held is not None and self.rates[best] < self.margin * self.rates.get(held, 0.0):
            best = held
        others = [r for c, r in self.rates.items() if c != best]
        lead = self.rates[best] / max(others) if others and max(others) > 0 else 1.0
        if best == held:  # confirmed: held longer, much longer where it leads clearly
            self._hold = min(self.max_hold, (4 if lead >= self.clear_lead else 2) * self._hold)
        else:
            self._hold = self.base_hold
        self.chosen = best
        self.rounds += 1

    def summary(self) -> dict:
        """What was measured and chosen (for benchmarks' JSON)."""
        return {
            "candidates": self.candidates,
            "chosen": self.chosen,
            "threads_now": self.threads,
            "too_cheap_to_split": self.cheap,
            "rounds": self.rounds,
            "patches_per_s": {str(c): round(r, 1) for c, r in sorted(self.rates.items())},
        }


_THREADS_LOCK = threading.Lock()
_THREADS_HELD: list[int] = []  # torch's own count, saved while runs on the CPU hold it changed


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


class _Reader:
    """What both readers are given: the slide, the grid and its read level, the model's input
    size and resampling, the reading threads and how far ahead they read, and the device."""

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


class RegionReader(_Reader):
    """Reads planned patches by tile-aligned regions of the read level (see the module notes)."""

    def __init__(self, slide: Slide, grid: PatchGrid, input_size: tuple[int, int], **kwargs: Any):
        super().__init__(slide, grid, input_size, **kwargs)
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
        sx, sy = plan.shift
        return [
            (
                c0 * tw,
                self.slide.read_level_region(self.level, c0 * tw - sx, row * th - sy, n * tw, th),
            )
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
    def _produce(
        self,
        plan: _RegionPlan,
        batch_size: int,
        out: queue.Queue,
        stop: threading.Event,
        cancel: Cancel,
    ) -> None:
        def put(item: ReadBatch | BaseException | None) -> bool:
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

    def _cut(
        self,
        plan: _RegionPlan,
        batch_size: int,
        pool: ThreadPoolExecutor,
        stop: threading.Event,
        cancel: Cancel,
    ) -> Iterator[ReadBatch]:
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
    def _cut_rows(
        out: np.ndarray,
        plan: _RegionPlan,
        patches: np.ndarray,
        runs: list[tuple[int, int, np.ndarray]],
        top: int,
        th: int,
    ) -> None:
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


class PatchReader(_Reader):
    """Reads each patch with its own ``read_region`` call, resized with PIL, ahead in threads.

    The reader :class:`RegionReader` replaced; the tests check the two give the same answers.
    Batches come in the order of the boxes given.
    """

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
    Patches of the grid's first row and column start before the slide's edge: positions here are
    shifted by ``shift`` (x, y; whole tiles) so that none is negative, and the tiles before the
    edge read as white.
    """

    def __init__(self, crops: np.ndarray, tile_size: tuple[int, int], chunk_columns: int):
        tw, th = tile_size
        crops = np.array(crops, dtype=np.int64).reshape(-1, 4)
        lowest = crops[:, :2].min(axis=0) if len(crops) else np.zeros(2, np.int64)
        self.shift = (-(min(0, int(lowest[0])) // tw) * tw, -(min(0, int(lowest[1])) // th) * th)
        crops[:, 0] += self.shift[0]
        crops[:, 1] += self.shift[1]
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
