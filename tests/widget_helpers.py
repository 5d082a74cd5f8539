"""Support for the viewer tests: a tiny TorchScript model, a gate to pause it, a slide in a viewer.

The model is the engine tests' darkness model (tumour probability = 1 - mean intensity of the patch),
so a run's result is known from the pixels without any training, and a whole-slide run of the
sample takes well under a second on a CPU.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from engine_helpers import CONFIRM_EVERY_CANDIDATE, write_darkness_model

from napari_metastasis._napari.sample_data import SAMPLE_SLIDE
from napari_metastasis._napari.slide_reader import slide_layer_data
from napari_metastasis.slides.slide import Slide

#: 64 px at 2 µm/px: 128 µm patches, a 9 × 12 grid on the sample slide.
PATCH_PX = 64
SPACING_UM = 2.0


def write_test_model(folder: Path, name: str = "darkness") -> Path:
    """The engine tests' darkness model (probability = 1 - mean intensity) as ``folder/name``."""
    return write_darkness_model(Path(folder) / name, patch_size=PATCH_PX, spacing=SPACING_UM)


class Gate:
    """Makes a loaded model's forward pass wait for a permit per batch, so the test sets the pace.

    It wraps the model's ``forward``, which every inference path of the engine calls once a
    batch (a CPU run splits the batch over threads inside it, so the network itself may run
    several times a batch); :meth:`restore` puts the real one back and lets waiting batches
    through.
    """

    def __init__(self, model):
        self.model = model
        self.real_forward = model.forward
        self.permits = threading.Semaphore(0)
        self.calls = 0
        model.forward = self

    def __call__(self, x, *args, **kwargs):
        if not self.permits.acquire(timeout=30):
            raise TimeoutError("test gate never opened")
        self.calls += 1
        return self.real_forward(x, *args, **kwargs)

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.permits.release()

    def restore(self) -> None:
        self.model.forward = self.real_forward
        self.release(10_000)


def fail_inference(model, error: Exception):
    """Make every batch of ``model`` raise ``error`` (e.g. CUDA out of memory); returns an undo."""
    real_module = model.module

    def broken(x):
        raise error

    model.module = broken

    def undo():
        model.module = real_module

    return undo


def add_sample_slide(viewer, path: Path = SAMPLE_SLIDE):
    """Add the sample slide layer exactly as the reader makes it; returns the layer."""
    data, kwargs, _ = slide_layer_data(Slide(path))
    return viewer.add_image(data, **kwargs)


def confirm_every_candidate(prob_map):
    """Stamp ``prob_map`` with the test models' deposit rule (every candidate region confirmed), for
    tests of regions, sizes and files rather than of the decision itself."""
    from napari_metastasis.clinical.decision import stamp_rule

    stamp_rule(prob_map, {"napari_metastasis_decision": CONFIRM_EVERY_CANDIDATE})
    return prob_map


def docked_widget(make_napari_viewer, tmp_path, monkeypatch, *, sample: bool = True):
    """A shown viewer (hidden canvases screenshot black) of 1400 x 1000 px with the sample slide
    (unless ``sample`` is False) and the dock widget, its remembered analyses kept under
    ``tmp_path``. Returns (viewer, widget, the slide layer or None)."""
    from napari_metastasis.widgets.detection import MetastasisWidget
    from napari_metastasis.widgets.session import ANALYSES_DIR_ENV

    monkeypatch.setenv(ANALYSES_DIR_ENV, str(tmp_path / "analyses"))
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
    layer = add_sample_slide(viewer) if sample else None
    widget = MetastasisWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Metastasis detection")
    return viewer, widget, layer


def analysed_cells(prob_map) -> set[tuple[int, int]]:
    rows, cols = np.nonzero(~np.isnan(prob_map.values))
    return set(zip(rows.tolist(), cols.tolist(), strict=True))


def threads_calling(monkeypatch, real, *places) -> list:
    """Put a recorder of ``real`` at each ``(module, name)`` of ``places``; returns the list of the
    threads it was called on (to check that work is done off the GUI thread)."""
    import threading

    threads: list = []

    def recorded(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    for module, name in places:
        monkeypatch.setattr(module, name, recorded, raising=False)
    return threads
