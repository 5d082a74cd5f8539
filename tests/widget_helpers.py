"""Support for the viewer tests: a tiny TorchScript model, a gate to pause it, a slide in a viewer.

The model is the engine tests' darkness model (tumour probability = 1 - mean intensity of the patch),
so a run's result is known from the pixels without any training, and a whole-slide run of the
sample takes well under a second on a CPU.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from engine_helpers import write_darkness_model

from napari_metastasis._reader import slide_layer_data
from napari_metastasis._sample_data import SAMPLE_SLIDE
from napari_metastasis.slide import Slide

#: 64 px at 2 µm/px: 128 µm patches, a 9 × 12 grid on the sample slide.
PATCH_PX = 64
SPACING_UM = 2.0


def write_test_model(folder: Path, name: str = "darkness") -> Path:
    """The engine tests' darkness model (probability = 1 - mean intensity) as ``folder/name``."""
    return write_darkness_model(Path(folder) / name, patch_size=PATCH_PX, spacing=SPACING_UM)


class Gate:
    """Makes a loaded model's ``predict`` wait for a permit, so the test decides the pace.

    It patches the instance (the engine checks the model's type, so a wrapper would not do);
    :meth:`restore` puts the model back as it was.
    """

    def __init__(self, model):
        self.model = model
        self.permits = threading.Semaphore(0)
        self.calls = 0
        real_predict = model.predict

        def predict(batch):
            if not self.permits.acquire(timeout=30):
                raise TimeoutError("test gate never opened")
            self.calls += 1
            return real_predict(batch)

        model.predict = predict

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.permits.release()

    def restore(self) -> None:
        del self.model.predict
        self.release(10_000)


def add_sample_slide(viewer, path: Path = SAMPLE_SLIDE):
    """Add the sample slide layer exactly as the reader makes it; returns the layer."""
    data, kwargs, _ = slide_layer_data(Slide(path))
    return viewer.add_image(data, **kwargs)


def analysed_cells(prob_map) -> set[tuple[int, int]]:
    rows, cols = np.nonzero(~np.isnan(prob_map.values))
    return set(zip(rows.tolist(), cols.tolist(), strict=True))
