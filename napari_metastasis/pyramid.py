"""The lazy multiscale view of a :class:`~napari_metastasis.slide.Slide` that napari displays.

Each pyramid level is a dask array over an array-like that reads one tile-aligned block on demand,
so opening a slide costs nothing whatever its size, and napari only decodes what it draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np

from .slide import Slide

#: Blocks are a whole number of file tiles, grown to at least this many pixels a side.
MIN_CHUNK = 512
#: Slides without tiles (or with huge strips) are read in blocks of this many pixels a side.
DEFAULT_CHUNK = 1024


class LevelArray:
    """Array-like over one pyramid level, (height, width, 3) uint8, read through the slide.

    dask's ``from_array`` slices it block by block; each slice becomes one ``read_region`` call.
    """

    def __init__(self, slide: Slide, level: int):
        self.slide = slide
        self.level = level
        width, height = slide.level_dimensions[level]
        self.shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        rows, cols, channels = key
        y0, y1, _ = rows.indices(self.shape[0]) if isinstance(rows, slice) else (rows, rows + 1, 1)
        x0, x1, _ = cols.indices(self.shape[1]) if isinstance(cols, slice) else (cols, cols + 1, 1)
        block = self.slide.read_level_region(self.level, x0, y0, max(x1 - x0, 0), max(y1 - y0, 0))
        squeeze = tuple(i for i, k in enumerate(key[:2]) if not isinstance(k, slice))
        block = block[..., channels]
        return block.squeeze(axis=squeeze) if squeeze else block


def chunk_size(slide: Slide, level: int) -> tuple[int, int]:
    """(rows, cols) per block: tile-aligned, between MIN_CHUNK and DEFAULT_CHUNK where possible."""
    tile = slide.tile_size(level)
    if tile is None or min(tile) <= 0 or max(tile) > 4 * DEFAULT_CHUNK:
        return (DEFAULT_CHUNK, DEFAULT_CHUNK)
    tw, th = tile
    return (th * max(1, -(-MIN_CHUNK // th)), tw * max(1, -(-MIN_CHUNK // tw)))


@dataclass(frozen=True)
class Pyramid:
    """dask levels (finest first) and the layer scale that puts them in µm."""

    levels: list[da.Array]
    scale: tuple[float, float]
    calibrated: bool  # False: scale is 1 and measurements are in pixels


def build_pyramid(slide: Slide) -> Pyramid:
    """Lazy dask pyramid of ``slide``; nothing is read until a block is computed."""
    levels = []
    for level in range(slide.level_count):
        array = LevelArray(slide, level)
        rows, cols = chunk_size(slide, level)
        levels.append(
            da.from_array(
                array,
                chunks=(rows, cols, 3),
                asarray=False,
                fancy=False,
                name=f"slide-{slide.path.name}-{id(slide):x}-level{level}",
                meta=np.empty((0, 0, 0), np.uint8),
            )
        )
    levels = _strictly_shrinking(levels)
    res = slide.resolution
    if res is None:
        return Pyramid(levels, (1.0, 1.0), calibrated=False)
    return Pyramid(levels, (res.mpp_y, res.mpp_x), calibrated=True)


def _strictly_shrinking(levels: list[da.Array]) -> list[da.Array]:
    """napari needs each level smaller than the last; drop duplicates some formats carry."""
    kept = [levels[0]]
    for level in levels[1:]:
        if level.shape[0] < kept[-1].shape[0] and level.shape[1] < kept[-1].shape[1]:
            kept.append(level)
    return kept
