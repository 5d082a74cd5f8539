"""Inference: planned cells through the reader and the model, streamed batch by batch.

Batches go to the model's device as uint8 (pinned memory and non-blocking copies on CUDA), are
normalised there, and run under AMP and channels-last on CUDA. Results are yielded batch by batch;
``progress(done, total)`` is called after each batch; ``cancel`` (a :class:`CancelToken` or a
:class:`threading.Event`) is checked before every batch, and a cancelled run simply stops yielding:
everything yielded so far stands. Closing the generator early (``break``) also stops the readers.
Errors reading the slide surface as :class:`~napari_metastasis.errors.SlideError` from the iterator.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from napari_metastasis.defaults import DEFAULT_BATCH_SIZE
from napari_metastasis.models import LoadedModel
from napari_metastasis.models.loading import ForwardPool
from napari_metastasis.models.networks import combine_passes
from napari_metastasis.models.output_check import check_probabilities
from napari_metastasis.pipeline.cancel import Cancel, is_cancelled
from napari_metastasis.pipeline.reader import (
    DEFAULT_PREFETCH_BATCHES,
    READERS,
    ThreadTuner,
    cpu_forward_threads,
    thread_policy,
    torch_threads,
)
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Slide

Progress = Callable[[int, int], None]

#: One :class:`ThreadTuner` per loaded model: a run starts with what the model's last run found.
_TUNERS: weakref.WeakKeyDictionary[LoadedModel, ThreadTuner] = weakref.WeakKeyDictionary()
#: ... and one for its first pass, whose batches cost a quarter as much (a probe must compare like
#: with like)
_FIRST_PASS_TUNERS: weakref.WeakKeyDictionary[LoadedModel, ThreadTuner] = (
    weakref.WeakKeyDictionary()
)


def thread_tuner(
    model: LoadedModel, *, fresh: bool = False, first_pass: bool = False
) -> ThreadTuner:
    """The tuner that chooses the forward threads of ``model``'s CPU runs (made on first use;
    ``fresh``: a new one, as a new process would start with; ``first_pass``: its first pass's)."""
    tuners = _FIRST_PASS_TUNERS if first_pass else _TUNERS
    tuner = tuners.get(model)
    if tuner is None or fresh:
        tuner = tuners[model] = ThreadTuner()
    return tuner


@dataclass
class BatchResult:
    """One classified batch: its cells, their level-0 boxes and class probabilities."""

    cells: np.ndarray  # (N, 2) row, col
    boxes: np.ndarray  # (N, 4) level-0 x, y, width, height
    probabilities: np.ndarray  # (N, num_classes) softmax
    positive_index: int
    done: int  # patches finished so far in this run, this batch included
    total: int  # patches planned for this run
    #: the probabilities are the model's cheap first pass's, not the full model's: for the whole
    #: batch, or (N,) per patch (a first-pass batch whose uncertain patches the full model took)
    first_pass: bool | np.ndarray = False

    @property
    def positive(self) -> np.ndarray:
        """(N,) probability of the positive (tumour) class."""
        return self.probabilities[:, self.positive_index]


#: Which patches of a first-pass batch the full model must classify now, from their (N,)
#: first-pass probabilities of the positive class: a (N,) bool mask.
Check = Callable[[np.ndarray], np.ndarray]


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
    cancel: Cancel = None,
    reader: str = "regions",
    forward_threads: int | None = None,
    first_pass: bool = False,
    check: Check | None = None,
) -> Iterator[BatchResult]:
    """Classify ``cells`` of ``grid`` and yield a :class:`BatchResult` per batch.

    Batches come in the reader's order (``"regions"``: region by region; ``"patches"``, the
    per-patch reference reader: the order of ``cells``); each names its cells. ``device`` moves
    the model first (default: leave it where :func:`load_model` put it). On the CPU the forward
    pass gets ``forward_threads`` torch threads while the run lasts; by default (the environment
    variable ``NAPARI_METASTASIS_TORCH_THREADS`` unset or ``auto``) each batch is split into
    parts run at once, one torch thread each (:class:`~napari_metastasis.models.loading.ForwardPool`),
    and the model's :func:`thread_tuner` measures the run batch by batch to choose how many parts
    (all cores for a forward-bound model; one where the readers are the bottleneck); ``readers``
    restores the old fixed split (:func:`cpu_forward_threads`), a number fixes torch's count.
    ``first_pass``: the model's cheap first pass (:attr:`.LoadedModel.first_pass`) classifies;
    with ``check``, the patches of each batch it picks get the rest of the model's views at once,
    while their pixels are at hand (no second read), and come back with the full model's answer
    (the result's ``first_pass`` is then a per-patch mask: False for those).
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
    source = READERS[reader](
        slide,
        grid,
        model.input_size,
        num_workers=num_workers,
        prefetch_batches=prefetch_batches,
        device=model.device,
        pin_memory=model.device.type == "cuda",
        resample=model.config.resize_interpolation,
    )
    batches = source.batches(grid.read_boxes(cells), batch_size, cancel)  # type: ignore[attr-defined]
    # On CUDA the forward pass is asynchronous: launching batch k+1 before collecting batch k keeps
    # the GPU busy while the reader assembles and copies the next batch.
    lag = 1 if model.device.type == "cuda" else 0
    in_flight: deque[tuple[np.ndarray, torch.Tensor, bool | np.ndarray]] = deque()
    done = 0

    def collect() -> BatchResult:
        nonlocal done
        part, probs, is_first_pass = in_flight.popleft()
        probabilities = probs.cpu().numpy()
        check_probabilities(probabilities, boxes[part], model.name, slide.path.name)
        done += len(part)
        result = BatchResult(
            cells[part],
            boxes[part],
            probabilities,
            model.positive_class_index,
            done,
            total,
            is_first_pass,
        )
        if progress:
            progress(done, total)
        return result

    threads: int | None = None
    tuner: ThreadTuner | None = None
    pool: ForwardPool | None = None
    if model.device.type == "cpu":
        policy = forward_threads or thread_policy()
        if policy == "auto":
            # torch runs one thread per part of a batch (ForwardPool): as many parts as the
            # tuner finds fastest; the resize and normalisation here run on one.
            tuner = thread_tuner(model, first_pass=first_pass)
            tuner.start_run()
            threads = 1
            pool = ForwardPool(max(tuner.candidates))
            pool.width = tuner.threads
        elif policy == "readers":
            threads = cpu_forward_threads(source.num_workers)  # type: ignore[attr-defined]
        else:
            threads = int(policy)
    try:
        with torch_threads(threads):
            while True:
                started = time.perf_counter()  # asking the reader included: a read-bound run
                item = next(batches, None)  # waits there, and the tuner must see it
                if item is None or is_cancelled(cancel):
                    break
                part, pixels = item
                got = time.perf_counter()
                x = model.prepare(pixels)
                split = pool if tuner is not None and not tuner.cheap else None
                if first_pass:
                    probs = model.forward(x, split, first_pass=True)
                else:
                    probs = model.forward(x) if split is None else model.forward(x, split)
                if first_pass and check is not None:
                    in_flight.append(_checked(model, x, part, probs, split, check))
                else:
                    in_flight.append((part, probs, first_pass))
                if tuner is not None and pool is not None:  # the CPU's pass is done on return
                    done_at = time.perf_counter()
                    tuner.record(len(part), done_at - started, done_at - got)
                    pool.width = tuner.threads
                while len(in_flight) > lag:
                    yield collect()
            while in_flight:  # launched before a cancel: finished work is kept
                yield collect()
    finally:
        batches.close()
        if pool is not None:
            pool.close()


def _checked(
    model: LoadedModel,
    x: torch.Tensor,
    part: np.ndarray,
    first: torch.Tensor,
    pool: ForwardPool | None,
    check: Check,
) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """A first-pass batch after ``check``: the patches it leaves keep the first pass's
    probabilities; those it picks get the rest of the views, combined into the full model's.
    Returns the batch's cells, probabilities and per-patch first-pass mask."""
    picked = np.asarray(check(first[:, model.positive_class_index].cpu().numpy()), bool)
    probs = first
    if picked.any():
        index = torch.from_numpy(picked).to(x.device)
        rest = model.forward(x[index], pool, rest_pass=True)
        views = len(model.first_pass.views), len(model.rest_pass.views)  # type: ignore[union-attr]
        probs = first.clone()
        probs[index] = combine_passes(first[index], rest, *views)
    return part, probs, ~picked
