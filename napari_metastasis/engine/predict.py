"""Whole runs: plan, classify and collect one slide (or a region of it) in one call.

:func:`predict_slide` returns the probability map, the patch table (WSInfer's columns plus row and
col) and what was left undone if cancelled. Writing files from it is
:mod:`napari_metastasis.predict_files`'s job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..deposit_decision import stamp_rule
from ..grid import PatchGrid
from ..models import LoadedModel
from ..probability import ProbabilityMap
from ..slide import Resolution, Slide
from ..tissue import TissueMask
from .cancel import Cancel
from .inference import DEFAULT_BATCH_SIZE, BatchResult, Progress, run_inference
from .plan import DEFAULT_TISSUE_MIN_FRACTION, Region, detect_tissue, make_grid, plan_cells

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
    tissue: TissueMask | None = None
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
    tissue: TissueMask | bool | None = True,
    tissue_min_fraction: float = DEFAULT_TISSUE_MIN_FRACTION,
    prob_map: ProbabilityMap | None = None,
    resolution: Resolution | None = None,
    stride_um: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    progress: Progress | None = None,
    cancel: Cancel = None,
    on_batch: Callable[[BatchResult], None] | None = None,
) -> PredictionResult:
    """Plan, classify and collect in one call.

    With ``prob_map`` (an earlier result on the same grid) only cells it lacks are classified and
    the map is updated in place; the table then lists only the newly classified patches.
    ``stride_um`` sets the grid step of a new map (None: patches side by side). ``on_batch`` is
    called with each batch as it finishes (``predict`` stores it on disk there).
    """
    started = time.perf_counter()
    grid = (
        prob_map.grid
        if prob_map is not None
        else make_grid(slide, model, resolution=resolution, stride_um=stride_um)
    )
    mask = tissue if isinstance(tissue, TissueMask) else None
    if tissue is True:
        mask = detect_tissue(slide, grid)
    cells = plan_cells(
        slide,
        grid,
        region,
        region_units=region_units,
        tissue=mask,
        tissue_min_fraction=tissue_min_fraction,
        skip=prob_map,
    )
    assert isinstance(cells, np.ndarray)  # no return_counts: the cells alone
    if prob_map is None:
        prob_map = ProbabilityMap.empty(
            grid,
            class_name=model.positive_class,
            model_name=model.name,
            slide_path=str(slide.path),
        )
    stamp_rule(prob_map, model.config.extra)  # the map is decided by its model's deposit rule
    parts: list[BatchResult] = []
    for batch in run_inference(
        slide,
        model,
        cells,
        grid,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        cancel=cancel,
    ):
        prob_map.update(batch.cells, batch.positive)
        parts.append(batch)
        if on_batch is not None:
            on_batch(batch)
    done = sum(len(p.cells) for p in parts)
    table = patch_table(
        np.concatenate([p.cells for p in parts]) if parts else np.empty((0, 2), np.int64),
        np.concatenate([p.boxes for p in parts]) if parts else np.empty((0, 4), np.int64),
        np.concatenate([p.probabilities for p in parts])
        if parts
        else np.empty((0, model.config.num_classes), np.float32),
        model.class_names,
    ).sort_values(["row", "col"], ignore_index=True)  # row by row, whatever order reading took
    return PredictionResult(
        prob_map,
        table,
        n_planned=len(cells),
        cancelled=done < len(cells),
        seconds=time.perf_counter() - started,
        tissue=mask,
    )


def patch_table(
    cells: np.ndarray, boxes: np.ndarray, probabilities: np.ndarray, class_names
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
