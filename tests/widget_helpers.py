"""Support for the viewer tests: a tiny TorchScript model, a gate to pause it, a slide in a viewer.

The model answers from the pixels (darker patch -> higher tumour probability), so a run's result is
known without any training, and it is fast enough that a whole-slide run of the sample takes well
under a second on a CPU.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch

from napari_metastasis._reader import slide_layer_data
from napari_metastasis._sample_data import SAMPLE_SLIDE
from napari_metastasis.slide import Slide

#: 64 px at 2 µm/px: 128 µm patches, a 9 × 12 grid on the sample slide.
PATCH_PX = 64
SPACING_UM = 2.0


class DarknessNet(torch.nn.Module):
    """logits = (0, 12 * (darkness - 0.2)), darkness = 1 - mean intensity of the patch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        darkness = 1.0 - x.mean(dim=(1, 2, 3))
        positive = 12.0 * (darkness - 0.2)
        return torch.stack([torch.zeros_like(positive), positive], dim=1)


def write_test_model(folder: Path, name: str = "darkness") -> Path:
    """A valid model folder (config.json + TorchScript) named ``name`` under ``folder``."""
    model_dir = Path(folder) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.jit.script(DarknessNet()).save(str(model_dir / "torchscript_model.pt"))
    config = {
        "spec_version": "1.0",
        "architecture": "darkness",
        "num_classes": 2,
        "class_names": ["notumor", "tumor"],
        "patch_size_pixels": PATCH_PX,
        "spacing_um_px": SPACING_UM,
        "transform": [
            {"name": "Resize", "arguments": {"size": PATCH_PX}},
            {"name": "ToTensor"},
        ],
    }
    (model_dir / "config.json").write_text(json.dumps(config))
    return model_dir


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
