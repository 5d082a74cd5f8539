"""The inference engine: which patches to classify, reading them ahead of the model, streaming results.

One engine serves the napari dock widget (a background thread that updates an overlay batch by batch
and can be cancelled) and headless runs (the ``predict`` command). One module per job:

* :mod:`.plan`: :func:`make_grid` and :func:`plan_cells`, the one planner (region, cells already
  analysed, tissue);
* :mod:`.reader`: the patches' pixels, cut from tile-aligned regions decoded once, in batches
  ahead of the model, memory bounded;
* :mod:`.inference`: :func:`run_inference`, batches through the model on its device, streamed
  (on the CPU, each batch split over as many threads as a :class:`ThreadTuner` measures fastest);
* :mod:`.predict`: :func:`predict_slide`, a whole run collected into a map and a patch table;
* :mod:`.cancel`: :class:`CancelToken`, checked before every batch.

The steps can be used separately::

    from napari_metastasis.engine import CancelToken, make_grid, plan_cells, run_inference
    from napari_metastasis.models import load_model
    from napari_metastasis.probability import ProbabilityMap

    model = load_model("default")                  # device="auto": CUDA, else MPS, else CPU
    grid = make_grid(slide, model)                 # PatchGrid at the model's µm/px and patch size
    prob = ProbabilityMap.empty(grid, class_name=model.positive_class, model_name=model.name)
    cells = plan_cells(slide, grid, region=polygon, tissue=True, skip=prob)  # (N, 2) row, col
    token = CancelToken()                          # token.cancel() from any thread (the GUI)
    for batch in run_inference(slide, model, cells, grid, cancel=token, progress=print):
        prob.update(batch.cells, batch.positive)   # BatchResult: cells, boxes, probabilities

or all at once, keeping every finished batch if cancelled::

    result = predict_slide(slide, model, region=(x, y, w, h), cancel=token)
    result.prob_map, result.table, result.cancelled

The engine holds no global state; one model may serve several slides one after the other.
"""

from .cancel import CancelToken
from .inference import (
    DEFAULT_BATCH_SIZE,
    BatchResult,
    Progress,
    cpu_forward_threads,
    run_inference,
    torch_threads,
)
from .plan import (
    DEFAULT_TISSUE_MIN_FRACTION,
    PlanCounts,
    Region,
    check_analysable,
    detect_tissue,
    make_grid,
    plan_cells,
    region_to_level0,
)
from .predict import BOX_COLUMNS, PredictionResult, patch_table, predict_slide
from .reader import (
    DEFAULT_PREFETCH_BATCHES,
    PatchReader,
    RegionReader,
    ThreadTuner,
    default_num_workers,
    read_level,
)

__all__ = [
    "BOX_COLUMNS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_PREFETCH_BATCHES",
    "DEFAULT_TISSUE_MIN_FRACTION",
    "BatchResult",
    "CancelToken",
    "PatchReader",
    "PlanCounts",
    "PredictionResult",
    "Progress",
    "Region",
    "RegionReader",
    "ThreadTuner",
    "check_analysable",
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
    "torch_threads",
]
