"""Whole runs collected in memory: one slide (or a region of it) in one call.

:func:`predict_slide` drives the one pipeline (:func:`.run_slide`) and returns the probability map,
the patch table (WSInfer's columns plus row and col) and what was left undone if cancelled;
:func:`collect` is its consumer, which the ``predict`` command shares. Writing files is
:mod:`napari_metastasis.pipeline.slide_outputs`'s job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import wraps
from typing import ParamSpec

import numpy as np
import pandas as pd

from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.pipeline.first_pass import cells_for_full_model
from napari_metastasis.pipeline.run import Batch, Event, Planned, run_slide
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.tissue import TissueMask

P = ParamSpec("P")

#: WSInfer's patch columns (level-0 px), before one ``prob_<class>`` column per class.
BOX_COLUMNS = ("minx", "miny", "width", "height")


@dataclass
class PredictionResult:
    """What :func:`predict_slide` produced; a cancelled run holds every batch that finished."""

    prob_map: ProbabilityMap
    table: (
        pd.DataFrame
    )  # one row per patch classified in this run, row by row (:func:`patch_table`)
    n_planned: int
    cancelled: bool
    seconds: float
    tissue: TissueMask | None = None  # the mask planning used (None: none was needed)
    extra: dict = field(default_factory=dict)

    @property
    def grid(self) -> PatchGrid:
        return self.prob_map.grid

    @property
    def n_done(self) -> int:
        return len(self.table)


def _collected(run: Callable[P, Iterator[Event]]) -> Callable[P, PredictionResult]:
    """``run``'s signature, its events collected (:func:`collect`): one list of keywords, kept by
    :func:`.run_slide` alone, so an option added there reaches every in-memory run."""

    @wraps(run)
    def collected(*args: P.args, **kwargs: P.kwargs) -> PredictionResult:
        started = time.perf_counter()
        return collect(run(*args, **kwargs), started)

    return collected


predict_slide = _collected(run_slide)
predict_slide.__doc__ = """Plan, classify and collect in one call: :func:`.run_slide`'s events
through :func:`collect`, with :func:`.run_slide`'s arguments.

With ``prob_map`` (an earlier result on the same grid) only cells it lacks are classified and the
map is updated in place; the table then lists only the newly classified patches. ``store`` is called
with each :class:`.Batch` as it is classified (the ``predict`` command's OME-Zarr map).
``shortcut``: the first-pass shortcut (:mod:`.first_pass`); None classifies every patch with the
full model.
"""


def collect(events: Iterable[Event], started: float | None = None) -> PredictionResult:
    """Apply a run's events to its map (on this thread) and gather its batches into a
    :class:`PredictionResult` (the patch table row by row, whatever order reading took; a patch
    the first pass classified and the full model then checked holds the full model's answer)."""
    started = time.perf_counter() if started is None else started
    planned: Planned | None = None
    parts: list[Batch] = []
    for event in events:
        event.apply()
        if isinstance(event, Planned):
            planned = event
        elif isinstance(event, Batch):
            parts.append(event)
    if planned is None:
        raise ValueError("the events hold no Planned: not a run's (see run_slide)")
    table = patch_table(
        np.concatenate([p.cells for p in parts]) if parts else np.empty((0, 2), np.int64),
        np.concatenate([p.boxes for p in parts]) if parts else np.empty((0, 4), np.int64),
        np.concatenate([p.probabilities for p in parts])
        if parts
        else np.empty((0, len(planned.class_names)), np.float32),
        planned.class_names,
    )
    table = table.drop_duplicates(["row", "col"], keep="last")  # the full model's, if both
    table = table.sort_values(["row", "col"], ignore_index=True)
    prob_map = planned.prob_map
    unchecked = planned.shortcut is not None and len(
        cells_for_full_model(prob_map.values, prob_map.first_pass_mask, planned.shortcut)
    )
    return PredictionResult(
        planned.prob_map,
        table,
        n_planned=planned.total,
        cancelled=len(table) < planned.total or bool(unchecked),
        seconds=time.perf_counter() - started,
        tissue=planned.tissue,
    )


def patch_table(
    cells: np.ndarray, boxes: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> pd.DataFrame:
    """WSInfer's columns (minx, miny, width, height in level-0 px, then prob_<class>) + row, col."""
    data: dict[str, np.ndarray] = {
        name: np.asarray(boxes[:, i], np.int64) for i, name in enumerate(BOX_COLUMNS)
    }
    for i, name in enumerate(class_names):
        data[f"prob_{name}"] = np.asarray(probabilities[:, i], np.float32)
    data["row"] = np.asarray(cells[:, 0], np.int64)
    data["col"] = np.asarray(cells[:, 1], np.int64)
    return pd.DataFrame(data)
