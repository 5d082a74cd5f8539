"""The one pipeline of a run: plan, read, classify and store a slide (or a region of it), as events.

:func:`run_slide` is every run of the package: the ``predict`` command (and each dask worker, which
runs it through :func:`napari_metastasis.pipeline.slide_outputs.predict_to_files`), :func:`.predict_slide`
and the viewer's analysis jobs (:mod:`napari_metastasis.widgets.jobs`) all drive it and differ only
in where its events go: a progress bar and a store on disk, a map and a patch table in memory, or
the GUI thread. It yields small events:

* :class:`Stage`: a step before patches flow (finding tissue), a status message;
* :class:`Planned`: the map the run fills, how many patches it will classify, how many of the
  region it reuses from the map and how many it leaves out as background;
* :class:`Batch`: one classified batch (cells, level-0 boxes, every class's probability).

What it does once for every caller: the grid comes from the map given (else the slide and the model);
cells the map already holds are skipped (``prob_map=`` resumes an earlier or interrupted run); the
tissue mask is made only when cells are left to classify (``tissue=`` a mask or a function giving one
lets the viewer keep one per slide); every batch the model returns is checked for NaN, infinity or
a wrong number of results (:func:`~napari_metastasis.models.output_check.check_probabilities`, in
:func:`.run_inference`); ``cancel`` is checked before every batch, and everything yielded before it
stands; ``store`` (a sink: the ``predict`` command's OME-Zarr map) gets each batch on the run's own
thread before the batch is yielded, so a killed run loses at most one batch; ``progress(done,
total)`` is called once planned and after every batch.

Who writes the map: **never** :func:`run_slide`. It yields what to write, and whoever consumes the
events applies them (``event.apply()``: a batch's positive-class column into its cells, the model's
deposit rule into the map) on the thread that owns the map. The viewer runs the generator on a
worker thread while the GUI thread redraws the overlay and copies the map for its regions; applying
the events there (:mod:`napari_metastasis.widgets.runner`) means the map is written on one thread
only, with no lock and no half-written batch on screen. Headless consumers apply them at once, on
their own thread. Regions, the deposit decision and the summary of a finished map are the one
finish step, :func:`napari_metastasis.pipeline.answer.answer_slide`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from napari_metastasis.clinical.decision import stamp_rule
from napari_metastasis.defaults import DEFAULT_BATCH_SIZE, DEFAULT_TISSUE_MIN_FRACTION
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.models import LoadedModel
from napari_metastasis.pipeline.cancel import Cancel, is_cancelled
from napari_metastasis.pipeline.first_pass import MAX_ROUNDS, FirstPass, cells_for_full_model
from napari_metastasis.pipeline.inference import Progress, run_inference
from napari_metastasis.pipeline.plan import Region, Tissue, detect_tissue, make_grid, plan_cells
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Resolution, Slide
from napari_metastasis.slides.tissue import TissueMask

#: The status message while the tissue mask is found (before any patch is classified).
FINDING_TISSUE = "Finding tissue…"


def checking_message(count: int) -> str:
    """The status message when the full model starts on the patches the first pass left."""
    return f"Checking {count:,} patch{'es' if count != 1 else ''} with the full model…"


class Event:
    """Something a run reports; :meth:`apply` writes what it carries into the run's map."""

    def apply(self) -> None:
        """Write this event into the run's map (call it on the thread that owns the map)."""


@dataclass
class Stage(Event):
    """A step before patches flow (loading the model, finding tissue): a status message."""

    message: str


@dataclass
class Planned(Event):
    """The cells to classify are known; ``prob_map`` is the map they will be written into."""

    prob_map: ProbabilityMap
    total: int  # patches to classify in this run
    reused: int  # patches of the region the map already holds (not classified again)
    background: int  # patches of the region left out as background
    tissue: TissueMask | None = None  # the mask planning used (None: not needed, or none asked)
    #: the config.json ``extra`` of the model filling the map: its deposit rule is stamped on apply
    model_extra: Mapping = field(default_factory=dict, repr=False)
    #: the first-pass shortcut this run takes (None: every patch through the full model)
    shortcut: FirstPass | None = None
    #: the model's classes, in the order of each batch's probabilities
    class_names: tuple[str, ...] = ()

    @property
    def grid(self) -> PatchGrid:
        return self.prob_map.grid

    def apply(self) -> None:
        """Stamp the model's deposit rule into the map: its regions are decided by that rule,
        wherever the map goes (saved, reloaded, in the viewer); and the shortcut taken, if any."""
        stamp_rule(self.prob_map, self.model_extra)
        if self.shortcut is not None:
            self.prob_map.extra["first_pass"] = self.shortcut.to_dict()


@dataclass
class Batch(Event):
    """One classified batch; :meth:`apply` writes its positive-class probabilities into the map."""

    prob_map: ProbabilityMap
    cells: np.ndarray  # (N, 2) row, col
    boxes: np.ndarray  # (N, 4) level-0 x, y, width, height (clipped to the slide)
    probabilities: np.ndarray  # (N, num_classes) softmax
    positive_index: int
    done: int  # patches classified so far in this pass of the run, this batch included
    total: int  # patches planned for this pass
    #: the cheap first pass's probabilities (the cells are marked so in the map), not the model's:
    #: for the whole batch, or (N,) per cell
    first_pass: bool | np.ndarray = False
    #: the full model checking, after the first pass, the patches around candidate regions
    #: (``done``/``total`` count those)
    checking: bool = False

    @property
    def positive(self) -> np.ndarray:
        """(N,) probability of the positive (tumour) class."""
        return self.probabilities[:, self.positive_index]

    def apply(self) -> None:
        self.prob_map.update(self.cells, self.positive, first_pass=self.first_pass)


#: Where each batch is stored as it is classified (called before the batch is yielded).
Store = Callable[[Batch], None]


def run_slide(
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
    cancel: Cancel = None,
    store: Store | None = None,
    progress: Progress | None = None,
    shortcut: FirstPass | None = None,
) -> Iterator[Stage | Planned | Batch]:
    """Plan, read and classify ``slide`` with ``model``, yielding a :class:`Planned` and then one
    :class:`Batch` per classified batch (after a :class:`Stage` if tissue is to be found).

    prob_map:
        The map to fill (its grid is the run's): cells it already holds are not classified again, so
        a map from an earlier or interrupted run is resumed. None: a new empty map on the grid of
        ``resolution`` (default: the slide's) and ``stride_um`` (None: patches side by side).
    region, region_units, tissue, tissue_min_fraction:
        As :func:`.plan_cells`; ``tissue`` True detects it (only if cells are left to classify).
    cancel:
        A :class:`.CancelToken` or :class:`threading.Event`, checked before every batch: the run
        stops yielding, and every batch yielded before stands.
    store:
        Called with each :class:`Batch` before it is yielded (on the thread running the generator).
    progress:
        ``progress(done, total)``: once planned (0 done), then after every batch; from 0 again
        when the full model starts on what the first pass left.
    shortcut:
        Classify with the model's cheap first pass and run the full model only where it is needed
        (:mod:`.first_pass`; ignored for a model without one). None: every patch through the full
        model, and cells an earlier shortcut run settled are classified again.

    The map is never written here: apply each event (``event.apply()``), see the module's doc.
    """
    if prob_map is None:
        grid = make_grid(slide, model, resolution=resolution, stride_um=stride_um)
        prob_map = ProbabilityMap.empty(
            grid,
            class_name=model.positive_class,
            model_name=model.name,
            slide_path=str(slide.path),
        )
    grid = prob_map.grid
    finds_tissue = tissue_min_fraction > 0 and tissue not in (None, False)
    mask: list[TissueMask] = [tissue] if isinstance(tissue, TissueMask) else []

    def tissue_of_slide() -> TissueMask:
        """The mask, made (or asked for) only when planning needs it, and kept for :class:`Planned`."""
        if not mask:
            mask.append(tissue() if callable(tissue) else detect_tissue(slide, grid))
        return mask[0]

    if shortcut is not None and model.first_pass is None:
        shortcut = None  # no cheaper pass than the model itself
    # what the map holds now (read here, never written): the shortcut's choices build on it
    values, marks = prob_map.values.copy(), prob_map.first_pass_mask.copy()
    skip = prob_map
    if shortcut is None and marks.any():  # exhaustive: what an earlier shortcut settled, again
        skip = ProbabilityMap(grid, np.where(marks, np.nan, values).astype(np.float32))
    if finds_tissue:
        yield Stage(FINDING_TISSUE)
    cells, counts = plan_cells(
        slide,
        grid,
        region,
        region_units=region_units,
        tissue=tissue_of_slide if finds_tissue else False,
        tissue_min_fraction=tissue_min_fraction,
        skip=skip,
        return_counts=True,
    )
    yield Planned(
        prob_map,
        counts.planned,
        counts.reused,
        counts.background,
        tissue=mask[0] if mask else None,
        model_extra=model.config.extra,
        shortcut=shortcut,
        class_names=tuple(model.class_names),
    )

    def classify(cells: np.ndarray, first_pass: bool, checking: bool = False) -> Iterator[Batch]:
        if progress is not None:
            progress(0, len(cells))
        for result in run_inference(
            slide,
            model,
            cells,
            grid,
            batch_size=batch_size,
            num_workers=num_workers,
            cancel=cancel,
            first_pass=first_pass,
            # uncertain patches get the full model while their pixels are at hand
            check=(lambda p: p >= shortcut.cut) if first_pass and shortcut else None,
        ):
            first_pass_only = result.first_pass
            batch = Batch(
                prob_map,
                result.cells,
                result.boxes,
                result.probabilities,
                result.positive_index,
                result.done,
                result.total,
                first_pass=first_pass_only,
                checking=checking,
            )
            values[batch.cells[:, 0], batch.cells[:, 1]] = batch.positive
            marks[batch.cells[:, 0], batch.cells[:, 1]] = first_pass_only
            if store is not None:
                store(batch)
            if progress is not None:
                progress(batch.done, batch.total)
            yield batch

    yield from classify(cells, first_pass=shortcut is not None)
    if shortcut is None:
        return
    for _ in range(MAX_ROUNDS):  # the full model where the first pass is not enough
        todo = cells_for_full_model(values, marks, shortcut)
        if not len(todo) or is_cancelled(cancel):
            return
        yield Stage(checking_message(len(todo)))
        yield from classify(todo, first_pass=False, checking=True)
