"""Runs analysis requests one after another in napari thread workers, and reports as Qt signals.

The runner owns the queue (clicks can pile up), the worker, the cancel flag and the clock; it applies
the pipeline's events to the probability map on the GUI thread (each batch, the model's deposit
rule) and turns every failure into one readable sentence. It knows nothing about layers or
controls: the dock widget listens to its signals.

While runs are under way the objects alive when they started (napari's, Qt's, torch's, the
model's: hundreds of thousands) are out of the cyclic garbage collector's sight (``gc.freeze``):
a full collection of a napari process's heap holds the GIL, and so the GUI thread, for 0.2–0.6 s
on a laptop, and a run's allocations trigger several (issue 21, D7). They are handed back when
the last run ends (``gc.unfreeze``), so nothing stays uncollectable.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from napari_metastasis.errors import MetastasisError, ResolutionError
from napari_metastasis.errors.policy import user_message
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.widgets.jobs import (
    Batch,
    Failed,
    JobRequest,
    Planned,
    Resources,
    RunClock,
    Stage,
    run_job,
)
from napari_metastasis.widgets.session import AnalysisStore

log = logging.getLogger(__name__)

#: What a viewer user does about a slide that states no µm/px (the CLI says ``--mpp``).
OPEN_AND_GIVE_MPP = (
    "open the slide and enter its µm/px in the dock's µm/px field "
    "(e.g. 0.25 at 40x, 0.5 at 20x), then run again."
)


@dataclass
class Progress:
    """After a batch: patches done of total, speed and the time left."""

    request: JobRequest
    prob_map: ProbabilityMap
    done: int
    total: int
    rate: float  # patches per second
    remaining_s: float | None
    queued: int
    #: the full model is checking the patches around candidates after the run's first pass
    #: (done and total count those)
    checking: bool = False

    @property
    def fraction(self) -> float:
        """How far the run is, 0-1 (every patch is classified once the check starts)."""
        if self.checking:
            return 1.0
        return self.done / self.total if self.total else 1.0


@dataclass
class RunSummary:
    """How a run ended."""

    request: JobRequest
    prob_map: ProbabilityMap | None  # None when it stopped before the map was known
    total: int  # patches planned
    done: int  # patches classified
    reused: int
    background: int  # patches of the region left out as background (no tissue)
    seconds: float
    cancelled: bool
    error: str | None  # the message shown to the user, if it failed


#: Runs under way, of any runner (the dock's, the case list's): the heap is frozen while > 0.
_RUNS_FROZEN = 0


def freeze_heap() -> None:
    """A run starts: the objects alive now leave the collector's generations until it ends."""
    global _RUNS_FROZEN
    gc.freeze()
    _RUNS_FROZEN += 1


def thaw_heap() -> None:
    """A run ended: once none is under way, the frozen objects are collectable again."""
    global _RUNS_FROZEN
    _RUNS_FROZEN = max(0, _RUNS_FROZEN - 1)
    if _RUNS_FROZEN == 0:
        gc.unfreeze()


def error_message(exc: BaseException, batch_size: int) -> str:
    """One sentence for the user: ours as they are, out-of-memory with advice, anything else named."""
    text = str(exc)
    if "OutOfMemory" in type(exc).__name__ or "out of memory" in text.lower():
        return (
            f"Out of GPU memory with batch size {batch_size}: try a smaller batch size "
            f"(e.g. {max(1, batch_size // 2)}) or the CPU device."
        )
    if isinstance(exc, ResolutionError):  # the library's advice names the CLI's flag
        return text.split("; pass --mpp")[0] + f"; {OPEN_AND_GIVE_MPP}"
    if isinstance(exc, MetastasisError):
        return text
    log.error("analysis failed", exc_info=(type(exc), exc, exc.__traceback__))
    return f"Analysis failed: {user_message(exc)}"  # the sentence the CLI prints


class AnalysisRunner(QObject):
    """Queue + thread worker for :func:`.jobs.run_job`."""

    #: a status message before patches flow (loading the model, finding tissue)
    stage = Signal(str)
    #: the cells are planned (a :class:`.jobs.Planned`)
    planned = Signal(object)
    #: a batch was written into its map (a :class:`Progress`)
    progressed = Signal(object)
    #: the run failed (the message; :attr:`finished` follows)
    failed = Signal(str)
    #: the run ended, whatever the reason (a :class:`RunSummary`)
    finished = Signal(object)

    def __init__(
        self, store: AnalysisStore, resources: Resources, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.store = store
        self.resources = resources
        self.queue: deque[JobRequest] = deque()
        self._worker = None
        self._cancel: threading.Event | None = None
        self._request: JobRequest | None = None
        self._planned: Planned | None = None
        self._clock: RunClock | None = None
        self._started = 0.0
        self._done = 0
        self._cancelled = False
        self._error: str | None = None

    @property
    def is_running(self) -> bool:
        return self._worker is not None

    @property
    def current(self) -> JobRequest | None:
        return self._request

    def submit(self, request: JobRequest) -> None:
        """Run ``request`` now, or after the runs already queued."""
        self.queue.append(request)
        if not self.is_running:
            self._start_next()

    def cancel(self) -> bool:
        """Stop after the current batch (finished patches stay) and drop the queue."""
        self.queue.clear()
        if self._worker is None:
            return False
        self._cancelled = True
        self._cancel.set()
        self._worker.quit()
        return True

    # --- the worker -----------------------------------------------------------------------------
    def _start_next(self) -> None:
        if not self.queue:
            return
        self._request = self.queue.popleft()
        self._planned = None
        self._clock = None
        self._started = time.perf_counter()
        self._done = 0
        self._cancelled = False
        self._error = None
        self._cancel = threading.Event()
        freeze_heap()
        worker = create_worker(
            run_job, self._request, self._map_for, self.resources, self._cancel, _start_thread=False
        )
        worker.yielded.connect(self._on_yielded)
        worker.errored.connect(self._on_error)  # only if run_job itself breaks its promise
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def _map_for(
        self, slide_path: str, model_name: str, grid: PatchGrid, class_name: str
    ) -> ProbabilityMap:
        """Called on the worker thread: the shared map of this slide and model."""
        return self.store.get_or_create(slide_path, model_name, grid, class_name)

    def _on_yielded(self, event: Stage | Planned | Batch | Failed) -> None:
        event.apply()  # the map is written here, on the GUI thread only (see engine.run)
        if isinstance(event, Batch):
            checking = event.checking
            if checking and (self._clock is None or self._clock.total != event.total):
                self._clock = RunClock(event.total)  # the check: its own count and rate
                self._clock.start()
            # every planned patch was classified before the full model checks some again
            self._done = self._planned.total if checking and self._planned else event.done
            clock = self._clock
            self.progressed.emit(
                Progress(
                    self._request,  # type: ignore[arg-type]
                    event.prob_map,
                    event.done,
                    event.total,
                    clock.rate(event.done) if clock else 0.0,
                    clock.remaining_s(event.done) if clock else None,
                    len(self.queue),
                    checking,
                )
            )
        elif isinstance(event, Planned):
            self._planned = event
            self._clock = RunClock(event.total)
            self._clock.start()
            self.planned.emit(event)
        elif isinstance(event, Stage):
            self.stage.emit(event.message)
        elif isinstance(event, Failed):
            self._on_error(event.error)

    def _on_error(self, exc: BaseException) -> None:
        request = self._request
        self._error = error_message(exc, request.batch_size if request else 0)
        if request is not None and isinstance(exc, MetastasisError):
            self.resources.forget_model(request.model_ref)  # e.g. a fixed folder is reloaded
        self.queue.clear()  # later requests would most likely fail the same way
        self.failed.emit(self._error)

    def _on_finished(self) -> None:
        planned = self._planned
        summary = RunSummary(
            request=self._request,  # type: ignore[arg-type]
            prob_map=planned.prob_map if planned else None,
            total=planned.total if planned else 0,
            done=self._done,
            reused=planned.reused if planned else 0,
            background=planned.background if planned else 0,
            seconds=time.perf_counter() - self._started,
            cancelled=self._cancelled,
            error=self._error,
        )
        self._worker = None
        self._cancel = None
        self._request = None
        try:
            self.finished.emit(summary)
            if self.queue:
                self._start_next()
        finally:
            thaw_heap()  # after the next run froze it again, if one started
