"""The lazy multiscale view of a :class:`~napari_metastasis.slides.slide.Slide` that napari displays.

Each pyramid level is a dask array over an array-like that reads one block on demand, so opening a
slide costs nothing whatever its size, and napari only decodes what it draws.

Block boundaries follow the file's tiles. Levels of TIFF-family slides (Aperio SVS, generic tiled
TIFF) are read from their stored tiles, so every block holds the level's own pixels. Elsewhere, on
levels with a non-integer downsample, OpenSlide can only start a read at a level-0 pixel and
resamples the level by the sub-pixel remainder; there the boundaries are moved to the nearby
positions that OpenSlide reads exactly, so napari shows the level's own pixels where they exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from napari_metastasis.errors import SlideError
from napari_metastasis.slides.slide import EXACT_SHIFT, Slide, read_shift

#: Blocks are the whole number of file tiles closest to this many pixels a side. Measured with
#: benchmarks/bench_reader.py: smaller blocks cost per-read overhead, larger ones make napari read
#: more pixels outside the view (a view touches partial blocks on every side).
TARGET_CHUNK = 512
#: Slides without tiles (or with huge strips) are read in blocks of this many pixels a side.
DEFAULT_CHUNK = 1024


class LevelArray:
    """Array-like over one pyramid level, (height, width, 3) uint8, read through the slide.

    dask's ``from_array`` slices it block by block; each slice becomes one ``read_region`` call.
    With ``on_error`` set, a block that cannot be decoded is reported to it and drawn white, so one
    corrupt tile does not break the viewer; without it the :class:`SlideError` propagates.
    """

    def __init__(
        self, slide: Slide, level: int, on_error: Callable[[SlideError], None] | None = None
    ):
        self.slide = slide
        self.level = level
        self.on_error = on_error
        width, height = slide.level_dimensions[level]
        self.shape = (height, width, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > 3:
            raise IndexError(f"too many indices for a 3-d level: {key!r}")
        key = key + (slice(None),) * (3 - len(key))
        rows, cols, channels = key
        (y0, y1, ystep), squeeze_y = _as_range(rows, self.shape[0])
        (x0, x1, xstep), squeeze_x = _as_range(cols, self.shape[1])
        block = self._read(x0, y0, max(x1 - x0, 0), max(y1 - y0, 0))
        if ystep != 1 or xstep != 1:
            block = block[::ystep, ::xstep]
        block = block[..., channels]
        squeeze = tuple(axis for axis, s in ((0, squeeze_y), (1, squeeze_x)) if s)
        return block.squeeze(axis=squeeze) if squeeze else block

    def _read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        try:
            return self.slide.read_level_region(self.level, x, y, width, height)
        except SlideError as exc:
            if self.on_error is None:
                raise
            self.on_error(exc)
            return np.full((height, width, 3), 255, np.uint8)


def _as_range(index: int | slice, length: int) -> tuple[tuple[int, int, int], bool]:
    """(start, stop, step) covered by a slice or integer index, and whether to drop the axis."""
    if isinstance(index, slice):
        start, stop, step = index.indices(length)
        if step < 0:
            raise IndexError("negative steps are not supported on slide levels")
        return (start, max(start, stop), step), False
    i = int(index)
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(f"index {index} is out of bounds for axis with size {length}")
    return (i, i + 1, 1), True


def chunk_target(slide: Slide, level: int) -> tuple[int, int]:
    """(rows, cols) per block: the whole number of tiles closest to TARGET_CHUNK px."""
    tile = slide.tile_size(level)
    if tile is None or min(tile) <= 0 or max(tile) > 4 * DEFAULT_CHUNK:
        return (DEFAULT_CHUNK, DEFAULT_CHUNK)
    tw, th = tile
    return (th * max(1, round(TARGET_CHUNK / th)), tw * max(1, round(TARGET_CHUNK / tw)))


def axis_chunks(length: int, downsample: float, target: int) -> tuple[int, ...]:
    """Block sizes along one axis of a level: about ``target`` each, starting where reads are exact.

    With an integer downsample every position is exact and the blocks are regular (tile-aligned,
    as ``target`` is a whole number of tiles). Otherwise each boundary is the exact position
    between half and twice ``target`` past the last one that is closest to the regular grid, or,
    where OpenSlide has no exact position there, the regular grid itself.
    """
    target = max(1, int(target))
    if length <= 2 * target:
        return (length,)
    if _exact_everywhere(downsample):
        full, rest = divmod(length, target)
        return (target,) * full + ((rest,) if rest else ())
    bounds = [0]
    while length - bounds[-1] > 2 * target:
        start = bounds[-1]
        grid = (start // target + 1) * target
        if grid - start < target // 2:
            grid += target
        candidates = np.arange(start + target // 2, start + 2 * target + 1)
        exact = candidates[read_shift(downsample, candidates) < EXACT_SHIFT]
        bounds.append(int(exact[np.argmin(np.abs(exact - grid))]) if exact.size else grid)
    bounds.append(length)
    return tuple(int(size) for size in np.diff(bounds))


def _exact_everywhere(downsample: float) -> bool:
    """Integer downsamples, and ones so coarse that half a level-0 px is below EXACT_SHIFT."""
    return abs(downsample - round(downsample)) < 1e-9 or 0.5 / downsample < EXACT_SHIFT


def block_starts(chunks: tuple[int, ...]) -> np.ndarray:
    """Level positions where the blocks of one axis start."""
    return np.concatenate([[0], np.cumsum(chunks)[:-1]]).astype(np.int64)


@dataclass(frozen=True)
class Pyramid:
    """dask levels (finest first) and the layer scale that puts them in µm."""

    levels: list[da.Array]
    scale: tuple[float, float]
    calibrated: bool  # False: scale is 1 and measurements are in pixels
    slide_levels: list[int] = field(default_factory=list)  # the slide level behind each entry
    downsamples: list[float] = field(default_factory=list)  # OpenSlide's, per entry
    stored_pixels: list[bool] = field(default_factory=list)  # entry read as stored, per entry

    def max_read_shift(self) -> float:
        """Largest sub-pixel shift (level px) OpenSlide resamples any block by; 0 when exact."""
        worst = 0.0
        for array, ds, stored in zip(
            self.levels, self.downsamples, self.stored_pixels, strict=True
        ):
            if stored:
                continue
            for chunks in array.chunks[:2]:
                worst = max(worst, float(np.max(read_shift(ds, block_starts(chunks)))))
        return worst


def build_pyramid(
    slide: Slide,
    *,
    chunks: tuple[int, int] | None = None,
    on_error: Callable[[SlideError], None] | None = None,
) -> Pyramid:
    """Lazy dask pyramid of ``slide``; nothing is read until a block is computed.

    ``chunks`` (rows, cols) overrides the block size target on every level; ``on_error`` turns
    undecodable blocks into white ones reported to it (see :class:`LevelArray`).
    """
    token = uuid.uuid4().hex  # unique keys: napari's dask cache must never mix two slides
    levels: list = []
    kept: list = []
    for level in range(slide.level_count):
        array = LevelArray(slide, level, on_error)
        height, width, _ = array.shape
        target_rows, target_cols = chunks or chunk_target(slide, level)
        # Where blocks hold the level's own pixels anywhere, they are simply tile-aligned.
        ds = 1.0 if slide.reads_stored_pixels(level) else slide.level_downsamples[level]
        if levels and not (height < levels[-1].shape[0] and width < levels[-1].shape[1]):
            continue  # napari needs each level smaller than the last; some formats repeat one
        levels.append(
            da.from_array(
                array,
                chunks=(
                    axis_chunks(height, ds, target_rows),
                    axis_chunks(width, ds, target_cols),
                    (3,),
                ),
                asarray=False,
                fancy=False,
                name=f"slide-{token}-level{level}",
                meta=np.empty((0, 0, 0), np.uint8),
            )
        )
        kept.append(level)
    downsamples = [slide.level_downsamples[level] for level in kept]
    stored = [slide.reads_stored_pixels(level) for level in kept]
    res = slide.resolution
    scale = (res.mpp_y, res.mpp_x) if res else (1.0, 1.0)
    return Pyramid(levels, scale, res is not None, kept, downsamples, stored)
