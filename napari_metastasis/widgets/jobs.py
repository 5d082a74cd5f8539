"""One analysis run as a generator for napari's thread worker: load the model, open the slide, and
drive the one pipeline (:func:`napari_metastasis.pipeline.run_slide`).

Everything slow (loading the model, opening the slide, detecting tissue, reading and classifying
patches) happens here, off the GUI thread. The generator forwards the pipeline's events (its
:class:`Planned` with the request added); the runner applies them on the GUI thread
(``event.apply()``), so the probability map is only ever written there and the overlay can be
redrawn between batches while the viewer keeps panning and zooming.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shapely.geometry.base import BaseGeometry

from napari_metastasis import pipeline as engine
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.models import LoadedModel, load_model, resolve_threshold
from napari_metastasis.models.trust import TrustCheck
from napari_metastasis.pipeline.run import Batch, Stage
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Slide
from napari_metastasis.slides.tissue import TissueMask
from napari_metastasis.widgets.selection import Rect


@dataclass(frozen=True)
class JobRequest:
    """What to analyse and how; built on the GUI thread from the widget's controls."""

    slide_path: str
    model_ref: str  # a registered model name or a model folder
    model_name: str
    description: str  # "visible region", "1000 µm field", "2 drawn shapes", "whole slide"
    region: Rect | BaseGeometry | None  # level-0 px; None = the whole slide
    device: str = "auto"
    batch_size: int = engine.DEFAULT_BATCH_SIZE
    tissue_min_fraction: float = engine.DEFAULT_TISSUE_MIN_FRACTION
    overlap: float = 0.0  # of neighbouring patches: 0 side by side, 0.5 a step of half a patch
    mpp: float | None = None  # µm/px given for a slide whose file states none
    #: every patch through the full model (False: the first-pass shortcut at the model's threshold,
    #: or at ``threshold`` where the slide's slider is lower, so its regions there are exact)
    exhaustive: bool = False
    threshold: float | None = None
    #: the model's trust state when the user asked to run it: the loader checks the file still has
    #: the digest the user trusted, and a newly trusted file is remembered only once it has loaded
    trust: TrustCheck | None = None


# --- events the worker yields: the pipeline's Stage and Batch, and these ---------------------------
@dataclass
class Planned:
    """The cells to classify are known (the pipeline's :class:`engine.Planned` of ``request``);
    ``prob_map`` is the map they will be written into."""

    request: JobRequest
    event: engine.Planned

    @property
    def prob_map(self) -> ProbabilityMap:
        return self.event.prob_map

    @property
    def total(self) -> int:
        """Patches to classify in this run."""
        return self.event.total

    @property
    def reused(self) -> int:
        """Patches of the region already analysed earlier (not classified again)."""
        return self.event.reused

    @property
    def background(self) -> int:
        """Patches of the region left out as background."""
        return self.event.background

    def apply(self) -> None:
        self.event.apply()


@dataclass
class Failed:
    """The run stopped on an error (the batches before it stand)."""

    error: Exception

    def apply(self) -> None:
        """Nothing to write into the map."""


# --- caches shared by runs ---------------------------------------------------------------------
class Resources:
    """Models and tissue masks kept between runs: a click should not reload the model."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str, str | None], LoadedModel] = {}
        self._tissue: dict[str, TissueMask] = {}
        self._lock = threading.Lock()

    def model(self, ref: str, device: str, sha256: str | None = None) -> LoadedModel:
        """The loaded model (cached); ``sha256``: the digest its file must still have."""
        key = (ref, device, sha256)
        with self._lock:
            model = self._models.get(key)
        if model is None:
            model = load_model(ref, device=device, sha256=sha256)
            with self._lock:
                self._models[key] = model
        return model

    def tissue(self, slide: Slide, grid: PatchGrid) -> TissueMask:
        key = str(slide.path)
        with self._lock:
            mask = self._tissue.get(key)
        if mask is None:
            mask = engine.detect_tissue(slide, grid)
            with self._lock:
                self._tissue[key] = mask
        return mask

    def forget_model(self, ref: str) -> None:
        with self._lock:
            for key in [k for k in self._models if k[0] == ref]:
                del self._models[key]


MapFor = Callable[[str, str, PatchGrid, str], ProbabilityMap]


def run_job(
    request: JobRequest,
    map_for: MapFor,
    resources: Resources,
    cancel: threading.Event,
) -> Iterator[Stage | Planned | Batch | Failed]:
    """The generator a napari thread worker runs. ``map_for(slide, model, grid, class)`` gives the
    shared :class:`ProbabilityMap` of this slide and model, so cells analysed earlier are skipped.
    The map is never written here: the consumer applies each event (``event.apply()``) on the GUI
    thread.

    Errors are yielded as :class:`Failed`, never raised: the thread worker silently drops a
    RuntimeError (it takes it for a deleted Qt object), and CUDA's out-of-memory error is one.
    """
    try:
        yield from _run_job(request, map_for, resources, cancel)
    except Exception as exc:  # noqa: BLE001 - reported as Failed, never raised (see above)
        yield Failed(exc)


def _run_job(
    request: JobRequest, map_for: MapFor, resources: Resources, cancel: threading.Event
) -> Iterator[Stage | Planned | Batch]:
    yield Stage(f"Loading model {request.model_name}…")
    trust = request.trust
    model = resources.model(request.model_ref, request.device, trust.sha256 if trust else None)
    if trust is not None:
        trust.confirm()  # remembered only now: a model the loader refuses is never trusted
    if cancel.is_set():
        return
    yield Stage(f"Opening {Path(request.slide_path).name}…")
    with Slide(request.slide_path, mpp=request.mpp) as slide:
        grid = engine.make_grid(slide, model, stride_um=stride_for(model, request.overlap))
        region = request.region.as_tuple() if isinstance(request.region, Rect) else request.region
        for event in engine.run_slide(
            slide,
            model,
            region=region,
            tissue=lambda: resources.tissue(slide, grid),  # one mask per slide, kept between runs
            tissue_min_fraction=request.tissue_min_fraction,
            prob_map=map_for(request.slide_path, model.name, grid, model.positive_class),
            batch_size=request.batch_size,
            cancel=cancel,
            shortcut=None if request.exhaustive else shortcut_for(model, request.threshold),
        ):
            yield Planned(request, event) if isinstance(event, engine.Planned) else event


def shortcut_for(model: LoadedModel, slider: float | None) -> engine.FirstPass:
    """The first-pass shortcut of a viewer run: at the model's threshold, or at the slide's
    slider where that is lower (the regions the pathologist looks at are then exact)."""
    threshold = resolve_threshold(None, model).value
    if slider is not None:
        threshold = min(threshold, float(slider))
    return engine.FirstPass.for_model(model.config.extra, threshold)


def stride_for(model: LoadedModel, overlap: float) -> float | None:
    """The grid step (µm) for an overlap of neighbouring patches; None (side by side) for none."""
    if not overlap:
        return None
    if not 0 < overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    config = model.config
    return config.patch_size_pixels * config.spacing_um_px * (1 - overlap)


@dataclass
class RunClock:
    """Patches per second and time left, measured from the first classified batch."""

    total: int
    started: float = 0.0
    done_at_start: int = 0

    def start(self) -> None:
        self.started = time.perf_counter()

    def rate(self, done: int) -> float:
        elapsed = time.perf_counter() - self.started
        return (done - self.done_at_start) / elapsed if elapsed > 0 else 0.0

    def remaining_s(self, done: int) -> float | None:
        rate = self.rate(done)
        return (self.total - done) / rate if rate > 0 else None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
