"""Whole runs collected in memory: one slide (or a region of it) in one call.

:func:`predict_slide` drives the one pipeline (:func:`.run_slide`) and returns the probability map,
the patch table (WSInfer's columns plus row and col) and what was left undone if cancelled;
:func:`collect` is its consumer, which the ``predict`` command shares. Writing files is
:mod:`napari_metastasis.pipeline.slide_outputs`'s job.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.models import LoadedModel
from napari_metastasis.pipeline.cancel import Cancel
from napari_metastasis.pipeline.first_pass import FirstPass, cells_for_full_model
from napari_metastasis.pipeline.inference import DEFAULT_BATCH_SIZE, Progress
from napari_metastasis.pipeline.plan import DEFAULT_TISSUE_MIN_FRACTION, Region, Tissue
from napari_metastasis.pipeline.run import Batch, Event, Planned, Store, run_slide
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Resolution, Slide
from napari_metastasis.slides.tissue import TissueMask

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


def predict_slide(
    slide: Slide,
    model: LoadedModel,
    *,
    region: Region = None,
    region_units: str = "px",
    tissue: Tissue = True,
    tissue_min_fraction: float = DEFAULT_TISSUE_MIN_FRACTION,
    prob_map: ProbabilityMap | None = None,
    resolution: Resolution | None = None,
    stride_um: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    progress: Progress | None = None,
    cancel: Cancel = None,
    on_batch: Store | None = None,
    shortcut: FirstPass | None = None,
) -> PredictionResult:
    """Plan, classify and collect in one call: :func:`.run_slide`'s events through :func:`collect`.

    With ``prob_map`` (an earlier result on the same grid) only cells it lacks are classified and
    the map is updated in place; the table then lists only the newly classified patches.
    ``stride_um`` sets the grid step of a new map (None: patches side by side). ``on_batch`` is
    called with each :class:`.Batch` as it is classified (the ``predict`` command's store).
    ``shortcut``: the first-pass shortcut (:mod:`.first_pass`); None classifies every patch with
    the full model.
    """
    started = time.perf_counter()
    events = run_slide(
        slide,
        model,
        region=region,
        region_units=region_units,
        tissue=tissue,
        tissue_min_fraction=tissue_min_fraction,
        prob_map=prob_map,
        resolution=resolution,
        stride_um=stride_um,
        batch_size=batch_size,
        num_workers=num_workers,
        cancel=cancel,
        store=on_batch,
        progress=progress,
        shortcut=shortcut,
    )
    return collect(events, model, started)


def collect(
    events: Iterable[Event], model: LoadedModel, started: float | None = None
) -> PredictionResult:
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
        else np.empty((0, model.config.num_classes), np.float32),
        model.class_names,
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
