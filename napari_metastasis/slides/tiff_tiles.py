"""The stored tiles of TIFF-family slides (Aperio SVS, generic tiled TIFF), decoded directly.

OpenSlide can only start a read at a level-0 pixel. On a level whose downsample is not a whole
number (most Aperio levels: 4.000235, 2.0005 ...) that position falls between the level's pixels and
OpenSlide resamples the tiles by the remainder, so a window of the level is never quite the level's
own pixels. Reading the stored tiles ourselves (tifffile finds them, imagecodecs decodes them, as
tiffslide does) gives exactly the pixels the scanner wrote, at any position, and skips OpenSlide's
per-call overhead.

A level is read here only when its directory is one we decode exactly as OpenSlide does (verified
pixel for pixel in the tests): tiled, 8-bit RGB or YCbCr, 3 samples, contiguous, and compressed
with none, LZW, deflate, JPEG or Aperio's JPEG 2000 (33005: RGB components; 33003: YCbCr
components, turned into RGB with OpenSlide's own integer tables, :func:`_ycbcr_to_rgb`). A JPEG 2000
SVS level of downsample 2.0005 read through OpenSlide's resampling was 7 grey levels off its stored
pixels on average. Any other level (RGBA, ...) and every other format stays with OpenSlide. Tiles are read with ``os.pread`` (no shared file position), so any number of
threads may decode at once.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tifffile

#: OpenSlide's names of the formats whose levels are plain tiled TIFF directories.
TIFF_FAMILY_FORMATS = ("aperio", "generic-tiff")

#: TIFF compression codes decoded here: none, LZW, JPEG, deflate (Adobe and old), Aperio's JPEG 2000
#: with YCbCr (33003) and RGB (33005) components.
_COMPRESSIONS = {1, 5, 7, 8, 32946, 33003, 33005}
_APERIO_J2K_YCBCR = 33003


class TileDecodeError(ValueError):
    """A stored tile could not be read or decoded (a damaged file)."""


@dataclass(frozen=True)
class _Level:
    width: int
    height: int
    tile_width: int
    tile_height: int
    columns: int
    offsets: tuple[int, ...]
    byte_counts: tuple[int, ...]
    decode: object  # tifffile's decode function for this directory
    jpegtables: bytes | None
    #: For a JPEG level: ``decode_into(data, out=buffer)`` decodes a tile straight into a
    #: (tile_height, tile_width, 3) buffer, with the arguments tifffile would pass imagecodecs.
    decode_into: Callable[..., np.ndarray] | None = None
    #: Aperio 33003: the decoded components are Y, Cb, Cr (OpenSlide converts them itself).
    ycbcr: bool = False


class TiffTiles:
    """Direct access to the tiles of the levels of one TIFF-family slide that can be decoded here."""

    def __init__(self, path: str | Path, levels: dict[int, _Level]):
        self.path = Path(path)
        self._levels = levels
        self._scratch = threading.local()  # one reused tile buffer per reading thread
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._lock = None if hasattr(os, "pread") else threading.Lock()

    @classmethod
    def open(
        cls, path: str | Path, fmt: str | None, level_dimensions: tuple[tuple[int, int], ...]
    ) -> TiffTiles | None:
        """Tiles of the levels decodable here, or None (other format, no such level, no codecs)."""
        if fmt not in TIFF_FAMILY_FORMATS:
            return None
        try:
            import imagecodecs  # noqa: F401  (tifffile's JPEG, LZW and deflate decoders)
            import tifffile

            with tifffile.TiffFile(path) as tif:
                pages = [page for page in tif.pages if getattr(page, "is_tiled", False)]
                levels = {}
                for level, (width, height) in enumerate(level_dimensions):
                    found = [
                        p
                        for p in pages
                        if getattr(p, "imagewidth", None) == width
                        and getattr(p, "imagelength", None) == height
                    ]
                    if len(found) == 1 and _decodable(found[0]):
                        levels[level] = _level_of(found[0])
        except Exception:  # noqa: BLE001 - anything tifffile cannot parse stays with OpenSlide
            return None
        return cls(path, levels) if levels else None

    def has_level(self, level: int) -> bool:
        return level in self._levels

    @property
    def levels(self) -> tuple[int, ...]:
        return tuple(sorted(self._levels))

    def tile_size(self, level: int) -> tuple[int, int]:
        lv = self._levels[level]
        return lv.tile_width, lv.tile_height

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) of ``level``'s own pixels from (x, y) in its grid; white
        outside the level and where a tile is missing."""
        lv = self._levels[level]
        inside = x >= 0 and y >= 0 and x + width <= lv.width and y + height <= lv.height
        out = (
            np.empty((height, width, 3), np.uint8)
            if inside
            else np.full((height, width, 3), 255, np.uint8)
        )
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, lv.width), min(y + height, lv.height)
        if x1 <= x0 or y1 <= y0:
            return out
        tw, th = lv.tile_width, lv.tile_height
        for row in range(y0 // th, (y1 - 1) // th + 1):
            for col in range(x0 // tw, (x1 - 1) // tw + 1):
                tx, ty = col * tw, row * th
                ax, ay = max(x0, tx), max(y0, ty)
                bx, by = min(x1, tx + tw), min(y1, ty + th)
                tile = self.tile_view(level, col, row)
                if tile is None:
                    out[ay - y : by - y, ax - x : bx - x] = 255
                else:
                    out[ay - y : by - y, ax - x : bx - x] = tile[
                        ay - ty : by - ty, ax - tx : bx - tx
                    ]
        return out

    def tile(self, level: int, col: int, row: int) -> np.ndarray | None:
        """One stored tile, (tile_height, tile_width, 3) as stored (edge tiles padded), or None
        when the file has no data for it."""
        lv = self._levels[level]
        return self._decode(lv, row * lv.columns + col)

    def tile_view(self, level: int, col: int, row: int) -> np.ndarray | None:
        """Like :meth:`tile`, for a caller that copies the pixels out at once (:meth:`read`): a
        JPEG tile is decoded into this thread's reused buffer, valid until the thread's next
        call. A fresh 200 kB array per tile cost about 10 % of the reading time (allocation and
        cold cache lines)."""
        lv = self._levels[level]
        if lv.decode_into is None:
            return self.tile(level, col, row)
        buffers: dict[tuple[int, int], np.ndarray] = self._scratch.__dict__.setdefault(
            "by_size", {}
        )
        key = (lv.tile_height, lv.tile_width)
        buffer = buffers.get(key)
        if buffer is None:
            buffer = buffers[key] = np.empty((*key, 3), np.uint8)
        return self._decode(lv, row * lv.columns + col, buffer)

    def _decode(self, lv: _Level, index: int, out: np.ndarray | None = None) -> np.ndarray | None:
        offset, count = lv.offsets[index], lv.byte_counts[index]
        if offset == 0 or count == 0:
            return None
        try:
            data = self._pread(count, offset)
            if len(data) != count:
                raise TileDecodeError(f"tile {index} is cut short ({len(data)} of {count} bytes)")
            if out is not None and lv.decode_into is not None:
                return lv.decode_into(data, out=out)
            segment, _, _ = lv.decode(data, index, jpegtables=lv.jpegtables)  # type: ignore[operator]
        except TileDecodeError:
            raise
        except Exception as exc:  # codec errors come in many classes
            raise TileDecodeError(f"tile {index}: {type(exc).__name__}: {exc}") from exc
        if segment is None:
            return None
        tile = segment.reshape(lv.tile_height, lv.tile_width, -1)[..., :3]
        return _ycbcr_to_rgb(tile) if lv.ycbcr else tile

    def _pread(self, count: int, offset: int) -> bytes:
        if self._lock is None:
            return os.pread(self._fd, count, offset)
        with self._lock:  # no pread (Windows): one shared position
            os.lseek(self._fd, offset, os.SEEK_SET)
            return os.read(self._fd, count)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _decodable(page: tifffile.TiffPage) -> bool:
    return (
        int(page.compression) in _COMPRESSIONS
        and int(page.photometric) in (2, 6)  # RGB, YCbCr
        and (int(page.photometric) == 2 or int(page.compression) == 7)  # YCbCr only inside JPEG
        and page.samplesperpixel == 3
        and not page.extrasamples
        and page.bitspersample == 8
        and int(page.planarconfig) == 1  # contiguous
        and page.imagedepth == 1
        and page.tilewidth > 0
        and page.tilelength > 0
        and len(page.dataoffsets)
        == -(-page.imagewidth // page.tilewidth) * -(-page.imagelength // page.tilelength)
    )


def _level_of(page: tifffile.TiffPage) -> _Level:
    return _Level(
        width=page.imagewidth,
        height=page.imagelength,
        tile_width=page.tilewidth,
        tile_height=page.tilelength,
        columns=-(-page.imagewidth // page.tilewidth),
        offsets=tuple(int(v) for v in page.dataoffsets),
        byte_counts=tuple(int(v) for v in page.databytecounts),
        decode=page.decode,
        jpegtables=page.jpegtables,
        decode_into=_jpeg_decode_into(page) if int(page.compression) == 7 else None,
        ycbcr=int(page.compression) == _APERIO_J2K_YCBCR,
    )


@functools.cache
def _ycbcr_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenSlide's YCbCr -> RGB offsets for Aperio JPEG 2000 (``openslide-decode-jp2k.c``: R = Y +
    R_Cr[Cr], G = Y + G_CbCr[Cb][Cr], B = Y + B_Cb[Cb], clamped): the JFIF coefficients, R and B
    rounded half away from zero, G half up, which is what OpenSlide 4.0's tables hold (checked on
    every (Cb, Cr) pair against OpenSlide in the tests; its exact halves are Cr/Cb = 3 for R/B and
    two (Cb, Cr) pairs for G)."""
    c = np.arange(256, dtype=np.float64) - 128

    def away(v: np.ndarray) -> np.ndarray:
        return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int16)

    r_cr = away(1.402 * c)
    b_cb = away(1.772 * c)
    g_cbcr = np.floor(-0.34414 * c[:, None] - 0.71414 * c[None, :] + 0.5).astype(np.int16)
    return r_cr, g_cbcr, b_cb


def _ycbcr_to_rgb(tile: np.ndarray) -> np.ndarray:
    r_cr, g_cbcr, b_cb = _ycbcr_tables()
    y = tile[..., 0].astype(np.int16)
    cb, cr = tile[..., 1], tile[..., 2]
    rgb = np.stack([y + r_cr[cr], y + g_cbcr[cb, cr], y + b_cb[cb]], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _jpeg_decode_into(page: tifffile.TiffPage) -> Callable[..., np.ndarray]:
    """imagecodecs' JPEG decoder with what tifffile passes it for a directory of the kind
    :func:`_decodable` accepts (3 contiguous samples, no extra samples): YCbCr is converted to
    RGB, and RGB-coded JPEG without a JFIF marker (Aperio's) is declared RGB so it is not taken
    for YCbCr."""
    import imagecodecs

    rgb = 2
    colorspace = None if int(page.photometric) == 6 or page.is_jfif else rgb
    return functools.partial(
        imagecodecs.jpeg8_decode,
        tables=page.jpegtables,
        colorspace=colorspace,
        outcolorspace=rgb,
        shape=(page.tilelength, page.tilewidth),
    )
