"""Build a patch dataset from a slide and its reference annotations.

Steps: the tissue mask of :mod:`napari_metastasis.slides.tissue` (low-resolution level), a :class:`PatchGrid` at the chosen µm/px, the cells
whose patch holds enough tissue (plus every cell touching tumour), each patch read at the model's
spacing, its exact tumour mask rasterised from the polygons, and its label by the stated rule.
A slide with no tumour geometry yields normal patches only, which is how the bundled recipe mines
capsule, stroma and fat from slides known to hold no metastasis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from shapely.geometry import box as shapely_box
from shapely.geometry.base import BaseGeometry
from tqdm.auto import tqdm

from napari_metastasis.datasets.labels import CENTRE_RULE, LabelRule, geometry_mask, label_from_mask
from napari_metastasis.datasets.patchset import PatchSet
from napari_metastasis.errors import DatasetError
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Slide
from napari_metastasis.slides.tissue import tissue_mask


def tissue_fraction(rgb: np.ndarray) -> float:
    """Share of a patch's pixels that are stained tissue: neither white glass nor black debris.

    A per-patch rule (coloured or darker than background), cheap enough for every candidate.
    """
    rgb = rgb.astype(np.float32)
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    saturation = (mx - mn) / np.maximum(mx, 1.0)
    tissue = ((saturation > 0.07) | (mx < 200)) & (mx > 30)
    return float(tissue.mean())


def check_geometry_on_slide(geometry: BaseGeometry | None, slide: Slide) -> None:
    """A tumour geometry outside the slide means the annotation belongs to another slide."""
    if geometry is None or geometry.is_empty:
        return
    w, h = slide.dimensions
    _minx, _miny, maxx, maxy = geometry.bounds
    if not geometry.intersects(shapely_box(0, 0, w, h)) or maxx > w * 1.01 or maxy > h * 1.01:
        raise DatasetError(
            f"{slide.path.name}: the annotations do not match this slide: they extend to "
            f"({maxx:.0f}, {maxy:.0f}) px but the slide is {w}x{h} px"
        )


def extract_from_slide(
    slide_path: str | Path,
    geometry: BaseGeometry | None,
    *,
    spacing_um: float = 0.5,
    patch_size: int = 96,
    stride_um: float | None = None,
    rule: LabelRule = CENTRE_RULE,
    min_tissue: float = 0.25,
    max_negatives: int | None = None,
    mpp: float | None = None,
    seed: int = 0,
    slide_name: str | None = None,
    progress: bool = False,
) -> PatchSet:
    """Patches of one slide on a grid at ``spacing_um`` (see module doc), labelled by ``rule``.

    ``geometry`` is the tumour region in level-0 px (exclusions already cut out), or None for a
    slide without metastasis. ``max_negatives`` keeps a random subset of normal patches (all tumour
    patches are kept). ``mpp`` overrides a missing or bogus resolution.
    """
    with Slide(slide_path, mpp=mpp) as slide:
        res = slide.require_resolution()
        check_geometry_on_slide(geometry, slide)
        w, h = slide.dimensions
        grid = PatchGrid(w, h, res.mpp_x, res.mpp_y, patch_size, spacing_um, stride_um)
        tissue = tissue_mask(slide, mpp=res.mpp)
        cells = grid.all_cells()
        # a generous pre-selection on the coarse mask; the exact per-patch rule comes after reading
        candidate = tissue.tissue_fraction(grid, cells) >= min(min_tissue, 0.05)
        if geometry is not None and not geometry.is_empty:
            touching = grid.cells_in_geometry(geometry.buffer(max(grid.patch_level0)))
            if len(touching):
                flat = {(int(r), int(c)) for r, c in touching}
                candidate |= np.array([(int(r), int(c)) in flat for r, c in cells])
        cells = cells[candidate]
        level = slide.best_level_for_downsample(grid.read_downsample)
        ds = slide.level_downsamples[level]
        images, masks, keep = [], [], []
        boxes = grid.read_boxes(cells)
        for x0, y0, bw, bh in tqdm(boxes, desc=slide.name, disable=not progress, unit="patch"):
            region = slide.read_region(
                level, x0, y0, max(1, round(bw / ds)), max(1, round(bh / ds))
            )
            rgb = np.asarray(
                Image.fromarray(region).resize((patch_size, patch_size), Image.Resampling.BILINEAR)
            )
            mask = geometry_mask(geometry, x0, y0, bw, bh, (patch_size, patch_size))
            if mask.any() or tissue_fraction(rgb) >= min_tissue:
                images.append(rgb)
                masks.append(mask)
                keep.append((x0, y0, bw))
    if not images:
        raise DatasetError(
            f"{Path(slide_path).name}: no patch holds enough tissue (min {min_tissue:.0%})"
        )
    masks_arr = np.stack(masks)
    labels = np.array([label_from_mask(m, rule) for m in masks_arr])
    index = np.arange(len(labels))
    if max_negatives is not None and (labels == 0).sum() > max_negatives:
        rng = np.random.default_rng(seed)
        neg = rng.choice(np.flatnonzero(labels == 0), size=max_negatives, replace=False)
        index = np.sort(np.concatenate([np.flatnonzero(labels == 1), neg]))
    keep_arr = np.array(keep)[index]
    name = slide_name or Path(slide_path).stem
    return PatchSet(
        images=np.stack(images)[index],
        labels=labels[index],
        slides=np.full(len(index), name, dtype=object),
        spacing_um=spacing_um,
        masks=masks_arr[index],
        has_mask=np.ones(len(index), bool),
        x=keep_arr[:, 0],
        y=keep_arr[:, 1],
        size_level0=keep_arr[:, 2].astype(float),
        sources=np.full(len(index), f"slide:{Path(slide_path).name}", dtype=object),
        meta={
            "slide": str(slide_path),
            "mpp": res.mpp,
            "mpp_source": res.source,
            "rule": rule.describe(),
            "min_tissue": min_tissue,
            "stride_um": grid.step_um,
        },
    )
