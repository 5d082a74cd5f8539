"""Planning: which grid cells of a slide to classify (region, minus cells done, minus background).

:func:`plan_cells` is the one planner: the ``predict`` command, :func:`predict_slide` and the
viewer's analysis jobs all call it. Cells are (row, col) of a :class:`~napari_metastasis.slides.grid.PatchGrid`
anchored at the slide's top-left, so runs over overlapping regions land on the same cells and
``skip=prob_map`` reuses every cell already analysed. Regions are level-0 pixels (or µm).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeAlias

import numpy as np
import shapely
from shapely.geometry import box as shapely_box
from shapely.geometry.base import BaseGeometry

#: Patches with less tissue than this (fraction of their area) are not classified.
from napari_metastasis.defaults import DEFAULT_TISSUE_MIN_FRACTION
from napari_metastasis.errors import SlideError
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.models import LoadedModel, ModelConfig
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Resolution, Slide
from napari_metastasis.slides.tissue import TissueMask, tissue_mask

#: A region: None (whole slide), a rectangle (x, y, width, height), or a shapely geometry.
Region: TypeAlias = tuple[float, float, float, float] | BaseGeometry | None
#: Tissue for planning: True (detect it), a mask, a function giving one (called only if some cells
#: are left to classify, e.g. a cache), or False/None (every cell of the region).
Tissue = TissueMask | Callable[[], TissueMask] | bool | None


class PlanCounts(NamedTuple):
    """How the cells of a region were split (``plan_cells(..., return_counts=True)``)."""

    region: int  # cells of the region
    reused: int  # already analysed in ``skip``: not classified again
    background: int  # too little tissue: not classified
    planned: int  # left to classify


def make_grid(
    slide: Slide,
    model: LoadedModel | ModelConfig,
    *,
    resolution: Resolution | None = None,
    stride_um: float | None = None,
) -> PatchGrid:
    """The patch grid of ``slide`` for ``model``'s patch size and µm/px.

    ``resolution`` defaults to ``slide.require_resolution()`` (metadata, the user's ``mpp=`` given to
    :class:`Slide`, else the objective power; a slide with none raises ResolutionError).
    """
    config = model.config if isinstance(model, LoadedModel) else model
    res = resolution or slide.require_resolution()
    width, height = slide.dimensions
    return PatchGrid(
        width,
        height,
        res.mpp_x,
        res.mpp_y,
        patch_px=config.patch_size_pixels,
        spacing_um=config.spacing_um_px,
        stride_um=stride_um,
    )


def region_to_level0(region: Region, grid: PatchGrid, units: str = "px") -> BaseGeometry | None:
    """A region as a level-0 shapely geometry (``units`` "px" = level-0 pixels, or "um")."""
    if region is None:
        return None
    if units not in ("px", "um"):
        raise ValueError(f"region units must be 'px' or 'um', got {units!r}")
    if isinstance(region, BaseGeometry):
        geometry = region
    else:
        x, y, w, h = (float(v) for v in region)
        if w <= 0 or h <= 0:
            raise ValueError(f"region width and height must be positive, got {w} x {h}")
        geometry = shapely_box(x, y, x + w, y + h)
    if units == "um":
        geometry = shapely.transform(geometry, lambda xy: grid.um_to_level0(xy))
    return geometry


def detect_tissue(slide: Slide, grid: PatchGrid) -> TissueMask:
    """The slide's tissue mask (at the grid's µm/px when the slide states none)."""
    return tissue_mask(slide, mpp=None if slide.resolution else grid.mpp_x)


def plan_cells(
    slide: Slide,
    grid: PatchGrid,
    region: Region = None,
    *,
    region_units: str = "px",
    tissue: Tissue = True,
    tissue_min_fraction: float = DEFAULT_TISSUE_MIN_FRACTION,
    skip: ProbabilityMap | None = None,
    return_counts: bool = False,
) -> np.ndarray | tuple[np.ndarray, PlanCounts]:
    """The (N, 2) (row, col) cells to classify, row by row.

    region:
        None for the whole slide; a rectangle (x, y, width, height) takes every cell its patch
        overlaps; a shapely polygon takes the cells whose patch centre is inside (holes respected).
        Coordinates are level-0 pixels, or µm with ``region_units="um"``.
    tissue:
        True detects tissue on a low-resolution level; a :class:`TissueMask` is used as is (the
        viewer can compute it once); a function returning one is called only when cells are left
        after ``skip``; False/None classifies every cell of the region.
    skip:
        A probability map on the same grid: cells it has already analysed are left out.
    return_counts:
        Also return a :class:`PlanCounts` (region, reused, background, planned).
    """
    geometry = region_to_level0(region, grid, region_units)
    if geometry is None:
        cells = grid.all_cells()
    elif isinstance(region, tuple | list) and region_units == "px":
        x, y, w, h = (float(v) for v in region)
        cells = grid.cells_in_rect(x, y, w, h)
    elif geometry.area > 0 and geometry.equals(shapely_box(*geometry.bounds)):
        minx, miny, maxx, maxy = geometry.bounds
        cells = grid.cells_in_rect(minx, miny, maxx - minx, maxy - miny)
    else:
        cells = grid.cells_in_geometry(geometry)
    n_region = len(cells)
    if skip is not None:
        if skip.grid != grid:
            raise ValueError("the probability map to reuse was made on a different grid")
        cells = skip.missing(cells)
    n_todo = len(cells)
    if tissue_min_fraction > 0 and n_todo and tissue not in (None, False):
        if tissue is True:
            tissue = detect_tissue(slide, grid)
        elif not isinstance(tissue, TissueMask):
            tissue = tissue()  # type: ignore[operator]  # a callable making the mask lazily
        cells = tissue.cells_with_tissue(grid, cells, tissue_min_fraction)
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    if not return_counts:
        return cells
    return cells, PlanCounts(n_region, n_region - n_todo, n_todo - len(cells), len(cells))


def check_analysable(
    slide: Slide, grid: PatchGrid, region: Region = None, region_units: str = "px"
) -> None:
    """Raise :class:`SlideError` saying why, where a run could only report "0 patches".

    The slide must be at least one patch large, and ``region`` must cover a patch of it (a region
    outside the slide covers none). Headless runs call this before classifying; :func:`plan_cells`
    itself just returns no cells.
    """
    pw, ph = grid.patch_level0
    if pw > grid.width or ph > grid.height:
        raise SlideError(
            f"{slide.path.name}: the slide ({grid.width} x {grid.height} px, "
            f"{grid.width * grid.mpp_x:.0f} x {grid.height * grid.mpp_y:.0f} µm) is smaller than "
            f"one patch of the model ({grid.patch_um:g} µm = {pw:.0f} x {ph:.0f} px at its "
            f"{grid.mpp_x:g} µm/px); nothing can be analysed"
        )
    if region is None:
        return
    geometry = region_to_level0(region, grid, region_units)
    if len(plan_cells(slide, grid, region, region_units=region_units, tissue=False)):
        return
    minx, miny, maxx, maxy = (f"{v:.0f}" for v in geometry.bounds)  # type: ignore[union-attr]
    width, height = slide.dimensions
    raise SlideError(
        f"{slide.path.name}: the region ({minx}, {miny})-({maxx}, {maxy}) px lies outside the "
        f"slide (0, 0)-({width}, {height}) px or covers no patch of it; nothing to analyse"
    )
