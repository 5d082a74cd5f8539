"""Inference: planned cells through the reader and the model, streamed batch by batch.

Batches go to the model's device as uint8 (pinned memory and non-blocking copies on CUDA), are
normalised there, and run under AMP and channels-last on CUDA. Results are yielded batch by batch;
``progress(done, total)`` is called after each batch; ``cancel`` (a :class:`CancelToken` or a
:class:`threading.Event`) is checked before every batch, and a cancelled run simply stops yielding:
everything yielded so far stands. Closing the generator early (``break``) also stops the readers.
Errors reading the slide surface as :class:`~napari_metastasis.errors.SlideError` from the iterator.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from napari_metastasis.defaults import DEFAULT_BATCH_SIZE
from napari_metastasis.models import LoadedModel
from napari_metastasis.models.output_check import check_probabilities
from napari_metastasis.pipeline.cancel import Cancel, is_cancelled
from napari_metastasis.pipeline.reader import (
    DEFAULT_PREFETCH_BATCHES,
    READERS,
    cpu_forward_threads,
    torch_threads,
)
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Slide

Progress = Callable[[int, int], None]


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
    cancel: Cancel = None,
    reader: str = "regions",
    forward_threads: int | None = None,
) -> Iterator[BatchResult]:
    """Classify ``cells`` of ``grid`` and yield a :class:`BatchResult` per batch.

    Batches come in the reader's order (``"regions"``: region by region; ``"patches"``, the
    per-patch reference reader: the order of ``cells``); each names its cells. ``device`` moves
    the model first (default: leave it where :func:`load_model` put it). On the CPU the forward
    pass gets ``forward_threads`` torch threads while the run lasts (default
    :func:`cpu_forward_threads`).
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
    in_flight: deque[tuple[np.ndarray, torch.Tensor]] = deque()
    done = 0

    def collect() -> BatchResult:
        nonlocal done
        part, probs = in_flight.popleft()
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
        )
        if progress:
            progress(done, total)
        return result

    threads = None
    if model.device.type == "cpu":
        threads = forward_threads or cpu_forward_threads(source.num_workers)  # type: ignore[attr-defined]
    try:
        with torch_threads(threads):
            for part, pixels in batches:
                if is_cancelled(cancel):
                    break
                in_flight.append((part, model.forward(model.prepare(pixels))))
                while len(in_flight) > lag:
                    yield collect()
            while in_flight:  # launched before a cancel: finished work is kept
                yield collect()
    finally:
        batches.close()
