"""A thumbnail of the slide with the probability map over it: a picture to glance at after a batch run.

Cells that were not analysed (glass, outside the region) stay uncoloured, so the picture also shows
what the model looked at; regions above the threshold are outlined: confirmed deposits in cyan,
candidates the deposit decision did not confirm in grey, thinner.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from napari_metastasis.maps.contours import Region
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.outputs.atomic import atomic_path
from napari_metastasis.slides.slide import Slide

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry


def render_heatmap(
    slide: Slide,
    prob_map: ProbabilityMap,
    regions: Sequence[Region] = (),
    *,
    max_size: int = 1024,
    alpha: float = 0.5,
    colormap: str = "inferno",
) -> np.ndarray:
    """RGB uint8 thumbnail (longer side ``max_size``) with the map blended in and regions outlined.

    ``alpha`` is the overlay's opacity at probability 1 (about a third of it at 0).
    """
    thumb = slide.thumbnail(max_size).astype(np.float32)
    th, tw = thumb.shape[:2]
    grid = prob_map.grid
    # Level-0 position of each thumbnail pixel centre -> the cell whose step square holds it.
    xs = (np.arange(tw) + 0.5) * grid.width / tw
    ys = (np.arange(th) + 0.5) * grid.height / th
    sx, sy = grid.step_level0
    ox, oy = grid.footprint_origin_level0
    cols = np.floor((xs - ox) / sx).astype(int).clip(0, grid.shape[1] - 1)
    rows = np.floor((ys - oy) / sy).astype(int).clip(0, grid.shape[0] - 1)
    # Colour and opacity per cell, then per pixel: the colormap's own table, indexed as it indexes
    # itself, so the colours are matplotlib's without calling it on every pixel.
    cmap = colormaps[colormap]
    cell_values = prob_map.values
    known = ~np.isnan(cell_values)
    levels = (np.nan_to_num(cell_values) * cmap.N).astype(np.int64).clip(0, cmap.N - 1)
    table = (cmap(np.arange(cmap.N))[:, :3] * 255.0).astype(np.float32)
    # Opacity grows with the probability, so tissue stays readable where the model saw nothing.
    cell_weight = np.where(known, alpha * (0.35 + 0.65 * np.nan_to_num(cell_values)), 0.0)
    cell_weight = cell_weight.astype(np.float32)
    pick = (rows[:, None], cols[None, :])
    weight = cell_weight[pick][..., None]
    blend = thumb + weight * (table[levels[pick]] - thumb)
    image = Image.fromarray(np.rint(blend).astype(np.uint8))
    if regions:
        draw = ImageDraw.Draw(image)
        scale = (tw / grid.width, th / grid.height)
        width = max(1, round(max_size / 400))
        for region in sorted(regions, key=lambda r: getattr(r, "confirmed", True)):
            confirmed = getattr(region, "confirmed", True)  # deposits drawn over candidates
            colour = (0, 255, 255) if confirmed else (200, 200, 200)
            for ring in _rings(region.polygon):
                points = [(x * scale[0], y * scale[1]) for x, y in ring.coords]
                draw.line(points, fill=colour, width=width if confirmed else max(1, width - 1))
    return np.asarray(image)


def save_heatmap(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        # zlib's fastest level: half the time of the default, and about as small on thumbnails
        Image.fromarray(image).save(tmp, format="PNG", compress_level=1)
    return path


def _rings(geometry: BaseGeometry) -> Iterator[Any]:
    polygons = getattr(geometry, "geoms", [geometry])
    for polygon in polygons:
        if hasattr(polygon, "exterior"):
            yield polygon.exterior
            yield from polygon.interiors
