"""Reading: the pixels of planned patches, read ahead of the model in batches.

Each patch is read from the finest pyramid level that is not coarser than the model needs
(``slide.best_level_for_downsample(grid.read_downsample)``) and resized to the network's input size,
so a 0.25 µm/px slide and a 0.5 µm/px slide give the model the same field of view. A pool of reader
threads (OpenSlide and PIL release the GIL) works ahead of the consumer; at most
``prefetch_batches`` batches are in flight, so memory stays bounded whatever the slide size.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from ..grid import PatchGrid
from ..models.transforms import resize_patch
from ..slide import Slide
from .cancel import Cancel, is_cancelled

#: Batches read ahead of the model; bounds memory at about this many batches of uint8 patches.
DEFAULT_PREFETCH_BATCHES = 4


def default_num_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


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
        resample: int = 2,
    ):
        self.slide = slide
        self.resample = resample  # Pillow filter code of the config's Resize (2: bilinear)
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
        return resize_patch(patch, self.input_size, self.resample)

    def batches(
        self, boxes: np.ndarray, batch_size: int, cancel: Cancel = None
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
                yield slice(start, stop), batch
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
