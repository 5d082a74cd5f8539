"""Tiled pyramidal TIFFs that OpenSlide opens as "generic-tiff", written by the tests themselves.

Constant levels are written from one pre-compressed tile repeated, so a 65536 px square level
costs a few MB of disk and milliseconds; levels given as arrays hold real pixels (uncompressed),
for exact comparisons. Also: corrupt tiles, and an ICC profile.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile

#: Pixels per centimetre for a µm/px value (TIFF resolution unit 3 = centimetre).
MICRONS_PER_CM = 10_000.0


def write_tiled_tiff(
    path: Path,
    levels: Sequence[tuple[int, int] | np.ndarray],
    *,
    tile: int = 256,
    mpp: float | None = None,
    color: tuple[int, int, int] = (200, 120, 180),
    corrupt_tiles: dict[int, set[int]] | None = None,
    iccprofile: bytes | None = None,
) -> Path:
    """Write a pyramid: each level is (width, height) of constant ``color`` or an RGB array.

    ``corrupt_tiles`` maps a level to the indices (row-major) of tiles written as garbage.
    """
    corrupt_tiles = corrupt_tiles or {}
    resolution = {}
    if mpp is not None:
        ppcm = MICRONS_PER_CM / mpp
        resolution = {"resolution": (ppcm, ppcm), "resolutionunit": 3}
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for index, level in enumerate(levels):
            options = {
                "tile": (tile, tile),
                "photometric": "rgb",
                "subfiletype": 0 if index == 0 else 1,
                "metadata": None,
                **resolution,
            }
            if index == 0 and iccprofile is not None:
                options["iccprofile"] = iccprofile
            if isinstance(level, np.ndarray):
                if corrupt_tiles.get(index):
                    raise ValueError("corrupt tiles are only supported on constant levels")
                tw.write(level, compression=None, **options)
                continue
            width, height = level
            tiles = _constant_tiles(width, height, tile, color, corrupt_tiles.get(index, set()))
            tw.write(tiles, shape=(height, width, 3), dtype=np.uint8, compression="zlib", **options)
    return path


def _constant_tiles(
    width: int, height: int, tile: int, color: tuple[int, int, int], corrupt: set[int]
) -> Iterator[bytes]:
    encoded = zlib.compress(np.full((tile, tile, 3), color, np.uint8).tobytes(), 9)
    count = -(-width // tile) * -(-height // tile)
    for i in range(count):
        yield b"not a deflate stream" * 4 if i in corrupt else encoded


def halving_sizes(width: int, height: int, smallest: int = 512) -> list[tuple[int, int]]:
    """Level sizes halving (floor) from (width, height) until the longer side is <= smallest."""
    sizes = [(width, height)]
    while max(sizes[-1]) > smallest:
        w, h = sizes[-1]
        sizes.append((max(1, w // 2), max(1, h // 2)))
    return sizes


def swapped_primaries_icc() -> bytes:
    """An RGB ICC profile whose red and blue primaries are swapped relative to sRGB.

    Converting from it to sRGB turns pure red into (about) pure blue, which proves a transform
    really ran. Built from PIL's sRGB profile by exchanging the rXYZ and bXYZ tag entries.
    """
    from PIL import ImageCms

    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    count = int.from_bytes(data[128:132], "big")
    entries = {}
    for i in range(count):
        start = 132 + 12 * i
        entries[bytes(data[start : start + 4])] = start
    red, blue = entries[b"rXYZ"], entries[b"bXYZ"]
    data[red + 4 : red + 12], data[blue + 4 : blue + 12] = (
        data[blue + 4 : blue + 12],
        data[red + 4 : red + 12],
    )
    return bytes(data)


def write_claimed_tiff(
    path: Path,
    width: int,
    height: int,
    *,
    tile: int = 4096,
    mpp: float = 0.25,
    color: tuple[int, int, int] = (200, 120, 180),
) -> Path:
    """A one-level tiled TIFF that claims ``width`` x ``height`` px in a few hundred KB.

    Every tile offset points at the same compressed tile, so a file claiming 10⁶ x 10⁶ px (a
    hostile or broken file: 3 TB of pixels) costs about 0.5 MB. OpenSlide opens it as generic-tiff.
    """
    import struct

    tile_bytes = zlib.compress(np.full((tile, tile, 3), color, np.uint8).tobytes(), 9)
    n = -(-width // tile) * -(-height // tile)
    data_at = 8
    bps_at = data_at + len(tile_bytes)
    res_at = bps_at + 6
    offsets_at = res_at + 16
    counts_at = offsets_at + 4 * n
    ifd_at = counts_at + 4 * n
    ppcm = round(MICRONS_PER_CM / mpp)
    short, long_, rational = 3, 4, 5
    entries = [
        (256, long_, 1, width),
        (257, long_, 1, height),
        (258, short, 3, bps_at),
        (259, short, 1, 8),  # Adobe deflate
        (262, short, 1, 2),  # RGB
        (277, short, 1, 3),
        (282, rational, 1, res_at),
        (283, rational, 1, res_at + 8),
        (284, short, 1, 1),
        (296, short, 1, 3),  # centimetre
        (322, long_, 1, tile),
        (323, long_, 1, tile),
        (324, long_, n, offsets_at),
        (325, long_, n, counts_at),
    ]
    with open(path, "wb") as f:
        f.write(b"II*\x00" + struct.pack("<I", ifd_at))
        f.write(tile_bytes)
        f.write(struct.pack("<3H", 8, 8, 8))
        f.write(struct.pack("<4I", ppcm, 1, ppcm, 1))
        f.write(np.full(n, data_at, "<u4").tobytes())
        f.write(np.full(n, len(tile_bytes), "<u4").tobytes())
        f.write(struct.pack("<H", len(entries)))
        for tag, kind, count, value in entries:
            if kind == short and count == 1:
                f.write(struct.pack("<HHIHH", tag, kind, count, value, 0))
            else:
                f.write(struct.pack("<HHII", tag, kind, count, value))
        f.write(struct.pack("<I", 0))
    return path


def write_aperio_svs(
    path: Path, levels: Sequence[np.ndarray], *, mpp: float = 0.5, compression: str | int = "jpeg"
) -> Path:
    """An Aperio SVS (OpenSlide's "aperio" format): JPEG tiles, one directory per level.

    Level sizes are the arrays' own, so a level 0 of 4001 px over a level 1 of 2000 px gives
    OpenSlide's downsample 2.0005, like real Aperio pyramids whose sizes are not exact halves.
    ``compression`` 33005 (or 33003) writes Aperio's JPEG 2000 tiles (imagecodecs' OpenJPEG,
    reversible): 33005 stores the array as RGB components, 33003 as Y, Cb, Cr components (the
    array's three channels are taken as those, as an Aperio scanner writes them).
    """
    height, width = levels[0].shape[:2]
    with tifffile.TiffWriter(path) as tw:
        for index, level in enumerate(levels):
            h, w = level.shape[:2]
            size = f"{width}x{height} [0,0 {width}x{height}] (256x256)"
            if index:
                size = f"{width}x{height} -> {w}x{h}"
            tw.write(
                np.ascontiguousarray(level),
                tile=(256, 256),
                photometric="rgb",
                compression=compression,
                description=f"Aperio Image Library v12.0.0\r\n{size} JPEG/RGB Q=90|AppMag = 20"
                f"|MPP = {mpp}",
                metadata=None,
            )
    return path


def blocky_noise(width: int, height: int, block: int = 8, seed: int = 0) -> np.ndarray:
    """RGB uint8 noise in ``block``-px squares: texture that JPEG keeps and resampling blurs."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // block + 1, width // block + 1, 3), dtype=np.uint8)
    return np.repeat(np.repeat(base, block, 0), block, 1)[:height, :width].copy()
