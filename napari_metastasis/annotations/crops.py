"""Region crops: one image per annotated region, for review outside the viewer or in a report."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw
from shapely.geometry import LineString, MultiLineString, MultiPolygon, Polygon

from napari_metastasis.annotations.model import Annotation
from napari_metastasis.errors import AnnotationError
from napari_metastasis.outputs.atomic import atomic_path

if TYPE_CHECKING:
    from napari_metastasis.slides.slide import Slide

#: Longest side of a crop when the level is chosen automatically.
DEFAULT_MAX_SIDE = 2048
FORMATS = {"png": "PNG", "tif": "TIFF", "tiff": "TIFF"}


def export_region_crops(
    slide: Slide,
    annotations: Sequence[Annotation],
    out_dir: str | Path,
    *,
    level: int | None = None,
    fmt: str = "png",
    outline: bool = True,
    margin_px: float = 0.0,
    max_side: int = DEFAULT_MAX_SIDE,
) -> list[Path]:
    """Write an image of each region's bounding box (plus ``margin_px`` level-0 px) to ``out_dir``.

    ``slide`` is a :class:`~napari_metastasis.slides.slide.Slide`. ``level=None`` picks, per region, the
    finest level at which the crop's longer side fits in ``max_side`` pixels, so a 5 mm lesion and a
    50 µm one both give a readable picture. ``outline`` draws the annotation on the crop in its
    colour. Points have no extent and are skipped unless ``margin_px`` gives them one. Files are
    named ``<n>_<class>_<name or id>.<fmt>``; each is written atomically. Returns the paths written.
    """
    kind = FORMATS.get(fmt.lower().lstrip("."))
    if kind is None:
        raise AnnotationError(f"region crops can be PNG or TIFF, not {fmt!r}")
    if level is not None and not 0 <= level < slide.level_count:
        raise AnnotationError(f"{slide.name}: no level {level} (the slide has {slide.level_count})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width0, height0 = slide.dimensions
    written = []
    for index, annotation in enumerate(annotations):
        x0, y0, x1, y1 = annotation.geometry.bounds
        x0, y0 = max(0.0, x0 - margin_px), max(0.0, y0 - margin_px)
        x1, y1 = min(float(width0), x1 + margin_px), min(float(height0), y1 + margin_px)
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue  # a point, or outside the slide
        lv = level if level is not None else _level_for(slide, max(x1 - x0, y1 - y0), max_side)
        ds = slide.level_downsamples[lv]
        w, h = math.ceil((x1 - x0) / ds), math.ceil((y1 - y0) / ds)
        if w * h > 64_000_000:
            raise AnnotationError(
                f"region {index + 1} would be a {w}x{h} image at level {lv}; choose a coarser level"
            )
        image = Image.fromarray(slide.read_region(lv, int(x0), int(y0), w, h))
        if outline:
            _draw(image, annotation, int(x0), int(y0), ds)
        path = out_dir / f"{index + 1:03d}_{_slug(annotation)}.{fmt.lower().lstrip('.')}"
        with atomic_path(path) as tmp:
            image.save(tmp, format=kind)
        written.append(path)
    return written


def _level_for(slide: Slide, extent_px: float, max_side: int) -> int:
    for lv, ds in enumerate(slide.level_downsamples):
        if extent_px / ds <= max_side:
            return lv
    return slide.level_count - 1


def _draw(image: Image.Image, annotation: Annotation, x0: int, y0: int, ds: float) -> None:
    draw = ImageDraw.Draw(image)
    color = annotation.display_color
    width = max(2, round(min(image.size) / 300))

    def pts(coords: Any) -> list[tuple[float, float]]:
        arr = (np.asarray(coords, dtype=np.float64) - (x0, y0)) / ds
        return [tuple(p) for p in arr]

    geom = annotation.geometry
    if isinstance(geom, (Polygon, MultiPolygon)):
        for poly in [geom] if isinstance(geom, Polygon) else geom.geoms:
            for ring in [poly.exterior, *poly.interiors]:
                draw.line(pts(ring.coords), fill=color, width=width, joint="curve")
    elif isinstance(geom, (LineString, MultiLineString)):
        for line in [geom] if isinstance(geom, LineString) else geom.geoms:
            draw.line(pts(line.coords), fill=color, width=width, joint="curve")


def _slug(annotation: Annotation) -> str:
    parts = [annotation.classification or "unclassified", annotation.name or annotation.id or ""]
    text = "_".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "region"
