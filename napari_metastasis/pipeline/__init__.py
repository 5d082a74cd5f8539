"""The inference engine: the one pipeline of a run, its steps, and the finish step.

One pipeline serves the napari dock widget (a background thread whose events the GUI thread
applies, batch by batch, and which can be cancelled) and headless runs (the ``predict`` command,
its dask workers, :func:`predict_slide`). One module per job:

* :mod:`.run`: :func:`run_slide`, the one pipeline of a run (plan, read, classify, store) as a
  generator of events (:class:`Stage`, :class:`Planned`, :class:`Batch`), cancelled by a token,
  resumed from a map; it never writes the map, its consumers apply the events (``event.apply()``);
* :mod:`.plan`: :func:`make_grid` and :func:`plan_cells`, the one planner (region, cells already
  analysed, tissue);
* :mod:`.reader`: the patches' pixels, cut from tile-aligned regions decoded once, in batches
  ahead of the model, memory bounded;
* :mod:`.inference`: :func:`run_inference`, batches through the model on its device, streamed
  and checked;
* :mod:`.predict`: :func:`predict_slide`, a whole run collected into a map and a patch table
  (:func:`collect`, which the ``predict`` command shares);
* :mod:`.answer`: :func:`answer_slide`, the finish step: a map's regions at a threshold, their
  deposit decision and the slide summary, from one region list (the files and the viewer alike);
* :mod:`.first_pass`: :class:`FirstPass`, the shortcut that runs the full model only where a
  cheap first pass is not plainly normal (the default of ``predict`` and the viewer);
* :mod:`.cancel`: :class:`CancelToken`, checked before every batch.

A run, event by event::

    from napari_metastasis.pipeline import Batch, CancelToken, Planned, answer_slide, run_slide
    from napari_metastasis.models import load_model

    model = load_model("default")                  # device="auto": CUDA, else MPS, else CPU
    token = CancelToken()                          # token.cancel() from any thread (the GUI)
    for event in run_slide(slide, model, region=polygon, cancel=token, prob_map=earlier):
        event.apply()                              # on the thread that owns the map
        if isinstance(event, Planned):
            prob_map = event.prob_map              # the map filled (``earlier``, else a new one)
        elif isinstance(event, Batch):             # cells, boxes, probabilities, done, total
            print(event.done, "of", event.total)
    answer = answer_slide(prob_map, threshold=0.5)  # regions, rule, summary(...), detections()

or all at once, keeping every finished batch if cancelled::

    result = predict_slide(slide, model, region=(x, y, w, h), cancel=token)
    result.prob_map, result.table, result.cancelled

The steps can also be used separately (:func:`make_grid`, :func:`plan_cells`,
:func:`run_inference`). The engine holds no global state; one model may serve several slides one
after the other.
"""

from napari_metastasis.pipeline.answer import SlideAnswer, answer_slide
from napari_metastasis.pipeline.cancel import CancelToken
from napari_metastasis.pipeline.first_pass import FirstPass, cells_for_full_model
from napari_metastasis.pipeline.inference import (
    DEFAULT_BATCH_SIZE,
    BatchResult,
    Progress,
    cpu_forward_threads,
    run_inference,
    torch_threads,
)
from napari_metastasis.pipeline.plan import (
    DEFAULT_TISSUE_MIN_FRACTION,
    PlanCounts,
    Region,
    check_analysable,
    detect_tissue,
    make_grid,
    plan_cells,
    region_to_level0,
)
from napari_metastasis.pipeline.predict import (
    BOX_COLUMNS,
    PredictionResult,
    collect,
    patch_table,
    predict_slide,
)
from napari_metastasis.pipeline.reader import (
    DEFAULT_PREFETCH_BATCHES,
    PatchReader,
    RegionReader,
    ThreadTuner,
    default_num_workers,
    read_level,
)
from napari_metastasis.pipeline.run import Batch, Event, Planned, Stage, run_slide

__all__ = [
    "BOX_COLUMNS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_PREFETCH_BATCHES",
    "DEFAULT_TISSUE_MIN_FRACTION",
    "Batch",
    "BatchResult",
    "CancelToken",
    "Event",
    "FirstPass",
    "PatchReader",
    "PlanCounts",
    "Planned",
    "PredictionResult",
    "Progress",
    "Region",
    "RegionReader",
    "SlideAnswer",
    "Stage",
    "ThreadTuner",
    "answer_slide",
    "cells_for_full_model",
    "check_analysable",
    "collect",
    "cpu_forward_threads",
    "default_num_workers",
    "detect_tissue",
    "make_grid",
    "patch_table",
    "plan_cells",
    "predict_slide",
    "read_level",
    "region_to_level0",
    "run_inference",
    "run_slide",
    "torch_threads",
]
