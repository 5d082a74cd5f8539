"""Ingest the patch sets people already have into a :class:`PatchSet` at a chosen spacing.

* folders of labelled patches with a CSV (like Camelyon16 ``camelyon16_256``): file names or CSV
  columns give the slide and level-0 top-left corner, so with the slide's reference polygons each
  patch gets its exact tumour mask and a label by the stated rule (and we check that the folder's
  labels agree);
* Kaggle "histopathologic-cancer-detection" / PCam 96-px TIFFs with ``train_labels.csv``;
* PCam's HDF5 files (``*_x.h5`` with dataset ``x``, ``*_y.h5`` with ``y``, optional ``*_meta.csv``).

Every patch is resampled to ``spacing_um`` µm/px and centre-cropped to ``patch_size`` px.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image
from shapely.geometry.base import BaseGeometry

from napari_metastasis.datasets.labels import HALF_RULE, LabelRule, geometry_mask, label_from_mask
from napari_metastasis.datasets.patchset import PatchSet, read_rgb
from napari_metastasis.errors import DatasetError
from napari_metastasis.errors.extras import require_extra

#: PatchCamelyon patches are 96 px at 10x: 0.972 µm/px (Veeling et al. 2018).
PCAM_MPP = 0.972
#: Camelyon16 slides from Radboud (the 40x scans tumor_001..070): 0.243 µm/px.
CAMELYON16_MPP = 0.243

_NAME_COORDS = re.compile(r"^(?P<slide>.+?)_(?P<x>\d+)_(?P<y>\d+)$")


def resample_patch(rgb: np.ndarray, source_mpp: float, spacing_um: float, size: int) -> np.ndarray:
    """Resample to ``spacing_um`` µm/px and take the centre ``size`` x ``size`` pixels.

    Raises DatasetError when the source covers less tissue than the requested patch.
    """
    h, w = rgb.shape[:2]
    side_um = size * spacing_um
    if min(h, w) * source_mpp < side_um * 0.98:
        raise DatasetError(
            f"a {w}x{h} px patch at {source_mpp:g} µm/px covers {min(h, w) * source_mpp:.0f} µm, "
            f"less than the requested {size} px at {spacing_um:g} µm/px ({side_um:.0f} µm)"
        )
    crop = min(min(h, w), round(side_um / source_mpp))
    top, left = (h - crop) // 2, (w - crop) // 2
    region = rgb[top : top + crop, left : left + crop]
    if crop == size:
        return np.ascontiguousarray(region)
    resample = Image.Resampling.BOX if crop > size else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(region).resize((size, size), resample))


def _crop_box_level0(
    x: float, y: float, size0: float, source_mpp: float, spacing: float, size: int
) -> tuple[float, float, float]:
    """Level-0 box of the centre crop :func:`resample_patch` takes from a patch at (x, y)."""
    crop0 = min(size0, round(size * spacing / source_mpp))
    off = (size0 - crop0) // 2
    return x + off, y + off, crop0


def ingest_labelled_folder(
    folder: str | Path,
    *,
    spacing_um: float,
    patch_size: int,
    source_mpp: float,
    labels_csv: str | Path | None = None,
    geometries: Mapping[str, BaseGeometry] | None = None,
    rule: LabelRule = HALF_RULE,
) -> PatchSet:
    """Folder of labelled patches plus a CSV with at least ``file`` and ``label`` columns.

    The slide and level-0 top-left corner come from columns (``slide`` or ``camelyon16_slide``,
    ``x_level0``, ``y_level0``, ``size_px_level0``) or else from file names ``<slide>_<x>_<y>.png``.
    With ``geometries`` (slide name -> tumour geometry in level-0 px, case-insensitive names) each
    patch gets its exact mask and is labelled by ``rule``; a slide whose folder-labelled tumour
    patches miss its polygons entirely is a slide/annotation mismatch and raises DatasetError.
    """
    folder = Path(folder)
    table = Path(labels_csv) if labels_csv else folder / "labels.csv"
    if not table.is_file():
        raise DatasetError(f"{table}: labels CSV not found")
    with table.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise DatasetError(f"{table}: needs a header with at least 'file' and 'label' columns")
    geoms = {k.lower(): v for k, v in (geometries or {}).items()}
    n = len(rows)
    images = np.empty((n, patch_size, patch_size, 3), np.uint8)
    masks = np.zeros((n, patch_size, patch_size), bool)
    has_mask = np.zeros(n, bool)
    folder_labels = np.zeros(n, np.int64)
    slides, xs, ys, sizes = [], np.full(n, -1), np.full(n, -1), np.full(n, np.nan)
    for i, row in enumerate(rows):
        path = folder / row["file"]
        rgb = read_rgb(path)
        try:
            folder_labels[i] = int(row["label"])
        except ValueError:
            raise DatasetError(
                f"{table}: label {row['label']!r} of {row['file']} is not 0/1"
            ) from None
        slide = row.get("slide") or row.get("camelyon16_slide")
        x, y = row.get("x_level0"), row.get("y_level0")
        match = _NAME_COORDS.match(Path(row["file"]).stem)
        if (not slide or not x or not y) and match:
            slide = slide or match["slide"]
            x, y = x or match["x"], y or match["y"]
        slides.append(slide or Path(row["file"]).stem)
        if x and y:
            xs[i], ys[i] = int(float(x)), int(float(y))
        size0 = float(row.get("size_px_level0") or rgb.shape[0])
        try:
            images[i] = resample_patch(rgb, source_mpp, spacing_um, patch_size)
        except DatasetError as exc:
            raise DatasetError(f"{path}: {exc}") from None
        geometry = geoms.get(slides[-1].lower())
        if geometry is not None and xs[i] >= 0:
            bx, by, bside = _crop_box_level0(
                xs[i], ys[i], size0, source_mpp, spacing_um, patch_size
            )
            masks[i] = geometry_mask(geometry, bx, by, bside, bside, (patch_size, patch_size))
            has_mask[i] = True
            sizes[i] = bside
        else:
            sizes[i] = size0
    labels = folder_labels.copy()
    for i in map(int, np.flatnonzero(has_mask)):
        labels[i] = label_from_mask(masks[i], rule)
    slides_arr = np.array(slides, dtype=object)
    for slide in np.unique(slides_arr[has_mask]):
        sel = (slides_arr == slide) & has_mask & (folder_labels == 1)
        if sel.any() and not masks[sel].any():
            raise DatasetError(
                f"{table}: the annotations of slide {slide} do not match its patches: none of its "
                f"{int(sel.sum())} tumour-labelled patches overlaps a tumour polygon"
            )
    disagree = has_mask & (labels != folder_labels)
    return PatchSet(
        images=images,
        labels=labels,
        slides=slides_arr,
        spacing_um=spacing_um,
        masks=masks,
        has_mask=has_mask,
        x=xs,
        y=ys,
        size_level0=sizes,
        sources=np.full(n, f"folder:{folder.name}", dtype=object),
        meta={
            "source": str(folder),
            "source_mpp": source_mpp,
            "rule": rule.describe() if has_mask.any() else "labels from the CSV",
            "masked": int(has_mask.sum()),
            "label_disagreements_with_csv": [rows[i]["file"] for i in np.flatnonzero(disagree)],
        },
    )


def ingest_kaggle_pcam(
    folder: str | Path,
    labels_csv: str | Path | None = None,
    *,
    spacing_um: float = PCAM_MPP,
    patch_size: int = 96,
    limit: int | None = None,
) -> PatchSet:
    """Kaggle/PCam ``<id>.tif`` patches with an ``id,label`` CSV (tumour in the centre 32x32 px).

    Kaggle does not say which slide a patch came from, so each patch is its own group for the
    slide-wise split (patches of one slide may then land on both sides; we say so in ``meta``).
    """
    folder = Path(folder)
    table = Path(labels_csv) if labels_csv else folder.parent / "train_labels.csv"
    if not table.is_file():
        raise DatasetError(f"{table}: Kaggle labels CSV (id,label) not found")
    with table.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"id", "label"} <= set(rows[0]):
        raise DatasetError(f"{table}: needs 'id' and 'label' columns")
    if limit:
        rows = rows[:limit]
    images = np.empty((len(rows), patch_size, patch_size, 3), np.uint8)
    for i, row in enumerate(rows):
        path = folder / f"{row['id']}.tif"
        try:
            images[i] = resample_patch(read_rgb(path), PCAM_MPP, spacing_um, patch_size)
        except DatasetError as exc:
            raise DatasetError(f"{path}: {exc}") from None
    return PatchSet(
        images=images,
        labels=np.array([int(r["label"]) for r in rows]),
        slides=np.array([f"pcam:{r['id']}" for r in rows], dtype=object),
        spacing_um=spacing_um,
        sources=np.full(len(rows), "kaggle-pcam", dtype=object),
        meta={
            "source": str(folder),
            "rule": "Kaggle/PCam labels: tumour in the centre 32x32 of 96 px",
            "warning": "no slide identity: each patch is its own validation group",
        },
    )


def ingest_pcam_hdf5(
    x_path: str | Path,
    y_path: str | Path,
    meta_csv: str | Path | None = None,
    *,
    spacing_um: float = PCAM_MPP,
    patch_size: int = 96,
    limit: int | None = None,
) -> PatchSet:
    """PCam HDF5 pair (``x``: (N, 96, 96, 3) uint8, ``y``: (N, 1, 1, 1)); slides from the meta CSV."""
    h5py = require_extra("h5py", "Reading PatchCamelyon's HDF5 files")

    try:
        with h5py.File(x_path, "r") as fx, h5py.File(y_path, "r") as fy:
            x = fx["x"]
            y = fy["y"]
            n = min(len(x), limit) if limit else len(x)
            if len(y) < n:
                raise DatasetError(f"{y_path}: has {len(y)} labels for {len(x)} patches")
            raw = np.asarray(x[:n])
            labels = np.asarray(y[:n]).reshape(n).astype(np.int64)
    except (OSError, KeyError) as exc:
        raise DatasetError(f"{x_path}: not a readable PCam HDF5 pair ({exc})") from exc
    if raw.ndim != 4 or raw.shape[3] != 3:
        raise DatasetError(f"{x_path}: dataset 'x' has shape {raw.shape}, expected (N, H, W, 3)")
    images = np.stack([resample_patch(p, PCAM_MPP, spacing_um, patch_size) for p in raw])
    slides = np.array([f"pcam-h5:{i}" for i in range(n)], dtype=object)
    xs = ys = None
    if meta_csv:
        with Path(meta_csv).open(newline="") as fh:
            meta_rows = list(csv.DictReader(fh))[:n]
        if len(meta_rows) < n or "wsi" not in meta_rows[0]:
            raise DatasetError(f"{meta_csv}: needs a 'wsi' column and one row per patch")
        slides = np.array([r["wsi"] for r in meta_rows], dtype=object)
        xs = np.array([int(float(r.get("coord_x", -1))) for r in meta_rows])
        ys = np.array([int(float(r.get("coord_y", -1))) for r in meta_rows])
    return PatchSet(
        images=images,
        labels=labels,
        slides=slides,
        spacing_um=spacing_um,
        x=xs,  # type: ignore[arg-type]  # None: PatchSet fills them in
        y=ys,  # type: ignore[arg-type]
        sources=np.full(n, "pcam-hdf5", dtype=object),
        meta={"source": str(x_path), "rule": "PCam labels: tumour in the centre 32x32 of 96 px"},
    )
