"""One way to read pixels from a whole-slide image, whatever its format.

Everything else in the package (the napari pyramid, the inference engine, patch extraction) reads
through :class:`Slide`, so OpenSlide's quirks are handled once: DICOM folders, RGBA with transparent
borders, implausible resolutions, sub-pixel resampling at non-integer downsamples, and library
exceptions that no pathologist should see.

OpenSlide opens every format. On TIFF-family slides (Aperio SVS, generic tiled TIFF) reads in a
level's own pixel grid (:meth:`Slide.read_level_region`) decode the stored tiles directly (:mod:`napari_metastasis.slides.tiff_tiles`): the level's own pixels at any position, where
OpenSlide would resample at non-integer downsamples, and without OpenSlide's per-call overhead.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openslide
from PIL import Image, ImageCms

from napari_metastasis.errors import ResolutionError, SlideError, UnsupportedSlideError
from napari_metastasis.errors.policy import os_error_reason
from napari_metastasis.slides.tiff_tiles import TiffTiles, TileDecodeError

#: Extensions of the formats OpenSlide reads (DICOM may also be given as a folder).
SLIDE_EXTENSIONS = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".dcm",
)

#: Extensions no other kind of image uses: a file with one of these is meant as a slide, so when
#: OpenSlide cannot read it the user should hear why, rather than have the reader decline it.
WSI_ONLY_EXTENSIONS = frozenset(SLIDE_EXTENSIONS) - {".tif", ".tiff", ".dcm"}

#: µm per pixel outside this range is taken as a bogus resolution tag (e.g. 96 dpi = 264.6 µm/px);
#: real scans range from ~0.1 µm/px (100x) to a few µm/px (1.25x).
PLAUSIBLE_MPP_RANGE = (0.02, 20.0)

#: A 20x objective on common scanners gives about 0.5 µm/px: mpp ≈ 10 / objective power.
MICRONS_PER_PIXEL_TIMES_POWER = 10.0

#: OpenSlide maps a level-0 x to the level's grid as x / downsample and, when that is not a whole
#: number, resamples the tiles bilinearly by the fraction (cairo/pixman, 7-bit weights: a shift
#: under 1/256 px leaves pixels unchanged, measured). Below this shift a read is exact.
EXACT_SHIFT = 1 / 512

#: OpenSlide splits reads larger than this (level px a side) into pieces, each with its own shift.
OPENSLIDE_MAX_PIECE = 4096

#: An overview (thumbnail, tissue mask, heatmap) reads at most this many pixels of one level: about
#: a minute of decoding. A slide whose coarsest level is larger (no pyramid, or a file that claims
#: 10⁶ x 10⁶ px) is refused with the reason instead of reading for hours or exhausting memory.
MAX_OVERVIEW_PIXELS = 2**30

#: Overviews are read in blocks of this many level pixels a side (bounded memory).
OVERVIEW_READ_BLOCK = 2048

#: openslide-python's ctypes binding of ``openslide_read_region``: filling a numpy buffer directly
#: skips the public path's un-premultiply pass, PIL image and copy (about 20% of a read). Its
#: buffer holds native-endian premultiplied ARGB words, so the fast path needs a little-endian
#: machine; anything else (or a binding without it) uses the public ``read_region``.
_RAW_READ_REGION = (
    getattr(openslide.lowlevel, "_read_region", None) if sys.byteorder == "little" else None
)


@dataclass(frozen=True)
class Resolution:
    """µm per pixel on level 0 and where the number came from."""

    mpp_x: float
    mpp_y: float
    source: str  # "metadata", "user" or "objective power"

    @property
    def mpp(self) -> float:
        return (self.mpp_x + self.mpp_y) / 2


def is_plausible_mpp(value: float | None) -> bool:
    """Whether a µm/px value could come from a microscope scan."""
    return (
        value is not None
        and math.isfinite(value)
        and PLAUSIBLE_MPP_RANGE[0] <= value <= PLAUSIBLE_MPP_RANGE[1]
    )


def resolve_slide_path(path: str | Path) -> Path:
    """Return the file OpenSlide should open for ``path``.

    OpenSlide refuses a DICOM folder but opens any instance of a series and finds the rest, so for a
    folder we pick its largest ``.dcm`` file (the full-resolution volume).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        instances = [p for p in path.iterdir() if p.suffix.lower() == ".dcm" and p.is_file()]
        if not instances:
            raise UnsupportedSlideError(f"{path}: folder holds no DICOM (.dcm) slide files")
        return max(instances, key=lambda p: p.stat().st_size)
    return path


def looks_like_slide(path: str | Path) -> bool:
    """Cheap check (no decoding) for the napari reader: an OpenSlide extension or a DICOM folder."""
    path = Path(path)
    if path.is_dir():
        try:
            return any(p.suffix.lower() == ".dcm" for p in path.iterdir())
        except OSError:
            return False
    return path.suffix.lower() in SLIDE_EXTENSIONS


def detect_format(path: str | Path) -> str | None:
    """OpenSlide's name for the format of ``path`` (a file or DICOM folder), None if not a slide.

    Reads only the file header, so the napari reader can decline plain TIFFs and DICOM images
    that are not slides and leave them to other readers.
    """
    try:
        return openslide.OpenSlide.detect_format(str(resolve_slide_path(path)))
    except (OSError, SlideError, openslide.OpenSlideError):
        return None


def level0_offset(downsample: float, position: int | np.ndarray) -> int | np.ndarray:
    """Level-0 pixel that OpenSlide maps closest to ``position`` on a level with ``downsample``."""
    return np.rint(np.asarray(position) * downsample).astype(np.int64)


def read_shift(downsample: float, position: int | np.ndarray) -> float | np.ndarray:
    """Sub-pixel shift (level px) OpenSlide resamples by when reading a level from ``position``.

    Zero where ``position * downsample`` is a whole number (always, for integer downsamples).
    """
    position = np.asarray(position)
    return np.abs(level0_offset(downsample, position) / downsample - position)


def _probe_readable(path: Path) -> None:
    """Open ``path`` and read a byte; raises the OS's error (permission denied, I/O error)."""
    with open(path, "rb") as f:
        f.read(1)


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor``×``factor`` blocks; a partial last block averages the pixels it has."""
    if factor == 1:
        return image
    h, w = image.shape[:2]
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="edge")
    hh, ww = image.shape[0] // factor, image.shape[1] // factor
    blocks = image.reshape(hh, factor, ww, factor, 3).astype(np.float32)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def _float_property(properties: Mapping[str, str], key: str) -> float | None:
    try:
        value = float(properties[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class Slide:
    """A whole-slide image opened with OpenSlide.

    OpenSlide is thread-safe, so one Slide may serve concurrent reads (napari's dask threads, the
    engine's prefetch pool); only :meth:`close` must not race with reads.

    Parameters
    ----------
    path:
        A slide file, or a DICOM WSI folder.
    mpp:
        µm per pixel to use instead of the file's (for slides with none, or a bogus one).
    to_srgb:
        Convert pixels from the slide's embedded ICC profile to sRGB, so colours match what the
        scanner vendor's viewer shows. Slides without a profile are left as they are.
    direct_tiles:
        Decode the stored tiles of TIFF-family slides directly for level-grid reads (default);
        False reads everything through OpenSlide.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        mpp: float | None = None,
        to_srgb: bool = False,
        direct_tiles: bool = True,
    ):
        self.requested_path = Path(path)
        self.path = resolve_slide_path(path)
        self._closed = True
        if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
            raise ResolutionError(
                f"{self.path.name}: µm per pixel must be a positive number, got {mpp}"
            )
        if not self.path.exists():
            raise SlideError(f"{self.path}: no such file")
        if not self.path.is_file():
            raise UnsupportedSlideError(f"{self.path}: not a slide file")
        try:  # OpenSlide reports an unreadable file as "not a slide format"; say the real reason
            _probe_readable(self.path)
        except OSError as exc:
            raise SlideError(f"{self.path}: cannot read the file ({os_error_reason(exc)})") from exc
        try:
            fmt = openslide.OpenSlide.detect_format(str(self.path))
        except Exception as exc:  # detect_format raises on unreadable files
            raise SlideError(f"{self.path}: cannot read file ({exc})") from exc
        if fmt is None:
            raise UnsupportedSlideError(
                f"{self.path}: not a whole-slide image format OpenSlide reads"
            )
        self._osr = self._open_handle(fmt)
        # Metadata is read once: after a failed read OpenSlide answers nothing on that handle.
        osr = self._osr
        self._properties = dict(osr.properties)
        self._level_dimensions: tuple[tuple[int, int], ...] = tuple(
            (int(d[0]), int(d[1])) for d in osr.level_dimensions
        )
        self._level_downsamples = tuple(float(d) for d in osr.level_downsamples)
        self._associated_names = tuple(osr.associated_images.keys())
        self._tiles = (
            TiffTiles.open(self.path, fmt, self._level_dimensions) if direct_tiles else None
        )
        self._generation = 0  # bumped each time a fresh handle replaces one in error state
        self._lock = threading.Condition()  # guards the handle, _active and _closed
        self._active = 0  # reads running now; close() waits for them
        self._closed = False
        self.format = fmt
        self._user_mpp = mpp
        try:
            self._srgb_transform = self._make_srgb_transform() if to_srgb else None
        except SlideError:
            self.close()
            raise

    # --- metadata -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.requested_path.stem if self.requested_path.is_dir() else self.path.stem

    @property
    def properties(self) -> Mapping[str, str]:
        return self._properties

    @property
    def vendor(self) -> str | None:
        return self.properties.get(openslide.PROPERTY_NAME_VENDOR)

    @property
    def level_count(self) -> int:
        return len(self._level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self._level_dimensions[0]

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._level_downsamples

    @property
    def objective_power(self) -> float | None:
        return _float_property(self.properties, openslide.PROPERTY_NAME_OBJECTIVE_POWER)

    @property
    def raw_mpp(self) -> tuple[float | None, float | None]:
        """µm/px (x, y) as the file states it, plausible or not."""
        return (
            _float_property(self.properties, openslide.PROPERTY_NAME_MPP_X),
            _float_property(self.properties, openslide.PROPERTY_NAME_MPP_Y),
        )

    @property
    def resolution(self) -> Resolution | None:
        """The usable level-0 resolution (user value, else plausible metadata), or None."""
        if self._user_mpp is not None:
            return Resolution(self._user_mpp, self._user_mpp, "user")
        mpp_x, mpp_y = self.raw_mpp
        if is_plausible_mpp(mpp_x) and is_plausible_mpp(mpp_y):
            return Resolution(mpp_x, mpp_y, "metadata")  # type: ignore[arg-type]
        return None

    @property
    def mpp(self) -> float | None:
        """Mean level-0 µm per pixel, or None when the slide has no usable resolution."""
        res = self.resolution
        return res.mpp if res else None

    def require_resolution(self, *, allow_objective_power: bool = True) -> Resolution:
        """The resolution to measure with; falls back on the objective power, else refuses."""
        res = self.resolution
        if res is not None:
            return res
        power = self.objective_power
        if allow_objective_power and power and power > 0:
            mpp = MICRONS_PER_PIXEL_TIMES_POWER / power
            return Resolution(mpp, mpp, "objective power")
        raise ResolutionError(
            f"{self.path.name}: no usable resolution ({self.resolution_problem()}); pass --mpp "
            "with the slide's µm per pixel at full resolution"
        )

    def resolution_problem(self) -> str:
        """Why the file's own resolution is unusable, in words (empty when it is usable)."""
        if self.resolution is not None:
            return ""
        stated = self.raw_mpp[0]
        return f"its stated {stated:g} µm/px is implausible" if stated else "it states none"

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return self._associated_names

    def associated_image(self, name: str) -> np.ndarray:
        """Label, macro or thumbnail image as RGB uint8."""
        if name not in self._associated_names:
            raise SlideError(f"{self.path.name}: no associated image named {name!r}")
        image = self._with_recovery(lambda osr, *_: osr.associated_images[name], 0, 0, 0, 0, 0)
        return np.ascontiguousarray(self._to_rgb(image))

    def tile_size(self, level: int) -> tuple[int, int] | None:
        """The file's tile (width, height) at ``level``, when the format states it."""
        if self._tiles is not None and self._tiles.has_level(level):
            return self._tiles.tile_size(level)
        w = self.properties.get(f"openslide.level[{level}].tile-width")
        h = self.properties.get(f"openslide.level[{level}].tile-height")
        try:
            return (int(w), int(h)) if w and h else None
        except ValueError:
            return None

    def best_level_for_downsample(self, downsample: float) -> int:
        """The finest level that is at most ``downsample`` coarser than level 0."""
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + 1e-6):
                best = level
        return best

    def metadata(self) -> dict:
        """Plain-data summary for napari layer metadata and the CLI."""
        res = self.resolution
        return {
            "path": str(self.path),
            "name": self.name,
            "format": self.format,
            "vendor": self.vendor,
            "mpp": [res.mpp_y, res.mpp_x] if res else None,
            "mpp_source": res.source if res else None,
            "stated_mpp": list(self.raw_mpp),
            "objective_power": self.objective_power,
            "dimensions": list(self.dimensions),
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": list(self.level_downsamples),
            "tile_sizes": [self.tile_size(level) for level in range(self.level_count)],
            "associated_images": list(self.associated_image_names),
            "srgb": self._srgb_transform is not None,
            "direct_tile_levels": list(self._tiles.levels) if self._tiles else [],
        }

    @property
    def tiles(self) -> TiffTiles | None:
        """The stored tiles decoded directly (TIFF-family slides), or None."""
        return self._tiles

    def reads_stored_pixels(self, level: int) -> bool:
        """Whether :meth:`read_level_region` gives ``level``'s own pixels at every position: its
        tiles are decoded directly, or OpenSlide needs no resampling (integer downsample)."""
        if self._tiles is not None and self._tiles.has_level(level):
            return True
        ds = self.level_downsamples[level]
        return abs(ds - round(ds)) < 1e-9

    def check_readable(self) -> None:
        """Decode one small block of the coarsest level, so a corrupt file fails at open time."""
        level = self.level_count - 1
        w, h = self.level_dimensions[level]
        try:
            self.read_level_region(level, 0, 0, min(w, 64), min(h, 64))
        except SlideError as exc:
            cause = exc.__cause__ or exc
            raise SlideError(
                f"{self.path.name}: opens, but its pixels cannot be decoded; the file is probably "
                f"damaged ({cause})"
            ) from exc

    # --- pixels ---------------------------------------------------------------------------
    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3), C-contiguous, at ``level``; (x, y) is the top-left in
        level-0 pixels (OpenSlide's convention). Areas outside the slide and transparent pixels
        are white. Safe to call from many threads at once.
        """
        if self._closed:
            raise SlideError(f"{self.path.name}: slide is closed")
        if not 0 <= level < self.level_count:
            raise SlideError(f"{self.path.name}: no level {level} (slide has {self.level_count})")
        if width <= 0 or height <= 0:
            return np.full((max(height, 0), max(width, 0), 3), 255, np.uint8)
        x, y, width, height = int(x), int(y), int(width), int(height)
        if _RAW_READ_REGION is not None:
            rgb = self._with_recovery(self._read_raw_rgb, level, x, y, width, height)
            if self._srgb_transform is not None:
                rgb = self._apply_srgb(rgb)
            return rgb
        rgb = self._to_rgb(self._with_recovery(self._read_image, level, x, y, width, height))
        return np.ascontiguousarray(rgb)

    def _with_recovery(
        self, read: Callable[..., Any], level: int, x: int, y: int, width: int, height: int
    ) -> Any:
        """Run ``read(osr, level, x, y, width, height)`` surviving OpenSlide's sticky errors.

        After any failed read OpenSlide refuses every later call on that handle, including reads
        of good tiles running in other threads at that moment. So a failed read swaps a fresh
        handle in for everyone, and is retried alone on a private handle: only a block that fails
        there too is reported, so one corrupt tile costs one block, not the slide or its
        neighbours. Reads are counted so that :meth:`close` never frees a handle under a running
        read (OpenSlide would abort).
        """
        with self._reading() as (osr, generation):
            try:
                return read(osr, level, x, y, width, height)
            except TileDecodeError as exc:  # decoded here, not by OpenSlide: nothing is sticky
                raise self._decode_error(level, x, y, width, height, exc) from exc
            except (openslide.OpenSlideError, ctypes.ArgumentError, ValueError):
                pass
        self._replace_handle(generation)
        with self._reading():
            private = self._open_handle()
            try:
                return read(private, level, x, y, width, height)
            except (openslide.OpenSlideError, ctypes.ArgumentError, ValueError) as exc:
                raise self._decode_error(level, x, y, width, height, exc) from exc
            finally:
                private.close()

    def _decode_error(
        self, level: int, x: int, y: int, width: int, height: int, exc: Exception
    ) -> SlideError:
        return SlideError(
            f"{self.path.name}: cannot decode pixels at level {level}, "
            f"({x}, {y}) + {width}x{height} ({exc})"
        )

    @contextlib.contextmanager
    def _reading(self) -> Iterator[tuple[openslide.OpenSlide, int]]:
        """The shared handle and its generation, counted as in use until the block exits."""
        with self._lock:
            if self._closed:
                raise SlideError(f"{self.path.name}: slide is closed")
            self._active += 1
            handle = (self._osr, self._generation)
        try:
            yield handle
        finally:
            with self._lock:
                self._active -= 1
                self._lock.notify_all()

    @staticmethod
    def _read_image(
        osr: openslide.OpenSlide, level: int, x: int, y: int, width: int, height: int
    ) -> Image.Image:
        return osr.read_region((x, y), level, (width, height))

    @staticmethod
    def _read_raw_rgb(
        osr: openslide.OpenSlide, level: int, x: int, y: int, width: int, height: int
    ) -> np.ndarray:
        """Contiguous RGB over white straight from OpenSlide's premultiplied ARGB buffer."""
        argb = np.empty((height, width), np.uint32)
        _RAW_READ_REGION(  # type: ignore[misc]
            osr._osr,
            argb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)),
            x,
            y,
            level,
            width,
            height,
        )
        bgra = argb.view(np.uint8).reshape(height, width, 4)  # little-endian ARGB words
        rgb = np.empty((height, width, 3), np.uint8)
        rgb[..., 0] = bgra[..., 2]
        rgb[..., 1] = bgra[..., 1]
        rgb[..., 2] = bgra[..., 0]
        if argb.min() < 0xFF000000:  # some alpha below 255
            # Premultiplied colour over white is exactly c + (255 - alpha), never above 255.
            rgb += (255 - bgra[..., 3])[..., None]
        return rgb

    def _open_handle(self, fmt: str | None = None) -> openslide.OpenSlide:
        try:
            return openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError) as exc:
            raise SlideError(f"{self.path.name}: cannot open {fmt or 'the'} slide ({exc})") from exc

    def _replace_handle(self, generation: int) -> None:
        """Swap in a fresh handle unless another thread already did since ``generation``.

        The old handle is not closed here: reads still running on it in other threads keep it
        alive, and it closes when the last of them lets go of it.
        """
        with self._lock:
            if self._generation == generation and not self._closed:
                self._osr = self._open_handle()
                self._generation += 1

    def read_level_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Like :meth:`read_region` but (x, y) is in ``level``'s own pixel grid (for pyramids and
        the engine's region reader).

        Where the level's tiles are decoded directly (see :meth:`reads_stored_pixels`) these are
        the level's own pixels. Through OpenSlide, which only takes level-0 positions, a level
        whose ``x * downsample`` is not whole is resampled by the remainder (see
        :func:`read_shift`); reading from the nearest level-0 pixel keeps that shift below
        ``0.5 / downsample`` level px, and at zero where it can be.
        """
        if self._tiles is not None and self._tiles.has_level(level):
            if self._closed:
                raise SlideError(f"{self.path.name}: slide is closed")
            if width <= 0 or height <= 0:
                return np.full((max(height, 0), max(width, 0), 3), 255, np.uint8)
            rgb = self._with_recovery(self._read_tiles, level, int(x), int(y), width, height)
            return self._apply_srgb(rgb) if self._srgb_transform is not None else rgb
        ds = self.level_downsamples[level]
        return self.read_region(
            level,
            int(level0_offset(ds, x)),
            int(level0_offset(ds, y)),
            width,
            height,
        )

    def overview_level(self, downsample: float, purpose: str = "an overview") -> int:
        """The level to read for a whole-slide overview at ``downsample``, if it is small enough.

        Raises :class:`SlideError` when even that level holds more than
        :data:`MAX_OVERVIEW_PIXELS` (a slide without a pyramid, or one that only claims a huge
        size): reading it would take minutes to hours, so the reason is said instead.
        """
        level = self.best_level_for_downsample(max(downsample, 1.0))
        lw, lh = self.level_dimensions[level]
        if lw * lh > MAX_OVERVIEW_PIXELS:
            raise SlideError(
                f"{self.path.name}: no pyramid level is small enough for {purpose}: the level to "
                f"read is {lw} x {lh} px ({lw * lh / 1e9:.3g} gigapixels, limit "
                f"{MAX_OVERVIEW_PIXELS / 1e9:.3g}); a whole-slide image needs reduced levels "
                "(convert it to a pyramidal TIFF, e.g. with vips tiffsave --tile --pyramid)"
            )
        return level

    def _read_tiles(
        self, _osr: openslide.OpenSlide, level: int, x: int, y: int, width: int, height: int
    ) -> np.ndarray:
        return self._tiles.read(level, x, y, width, height)  # type: ignore[union-attr]

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """Whole-slide RGB image whose longer side is at most ``max_size`` pixels.

        Read block by block and averaged down on the way, so memory stays near the thumbnail's
        size whatever the level read; a slide with no small enough level raises SlideError.
        """
        if max_size <= 0:
            raise ValueError(f"thumbnail size must be positive, got {max_size}")
        w, h = self.dimensions
        scale = max(w, h) / max_size
        level = self.overview_level(scale, "a thumbnail")
        lw, lh = self.level_dimensions[level]
        factor = max(1, int(max(lw, lh) / max_size) // 2)  # leave LANCZOS the last 2x or less
        out = np.empty((-(-lh // factor), -(-lw // factor), 3), np.uint8)
        block = factor * max(1, OVERVIEW_READ_BLOCK // factor)
        for y in range(0, lh, block):
            for x in range(0, lw, block):
                bw, bh = min(block, lw - x), min(block, lh - y)
                small = block_mean(self.read_level_region(level, x, y, bw, bh), factor)
                out[
                    y // factor : y // factor + small.shape[0],
                    x // factor : x // factor + small.shape[1],
                ] = small
        image = Image.fromarray(out)
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
        return np.asarray(image)

    def _to_rgb(self, image: Image.Image) -> np.ndarray:
        """PIL RGBA (straight alpha, as openslide-python returns it) -> RGB over white, then
        optionally ICC -> sRGB. Opaque images come back as a view, without arithmetic."""
        if image.mode != "RGBA":
            image = image.convert("RGBA")
        rgba = np.asarray(image)
        rgb = rgba[..., :3]
        alpha = rgba[..., 3]
        if alpha.min() < 255:
            # Exact integer "over white": c * a / 255 + 255 * (255 - a) / 255, rounded.
            a = alpha[..., None].astype(np.uint16)
            rgb = ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
        if self._srgb_transform is not None:
            rgb = self._apply_srgb(rgb)
        return rgb

    def _apply_srgb(self, rgb: np.ndarray) -> np.ndarray:
        image = Image.fromarray(np.ascontiguousarray(rgb))
        return np.asarray(ImageCms.applyTransform(image, self._srgb_transform))  # type: ignore[arg-type]

    def _make_srgb_transform(self) -> ImageCms.ImageCmsTransform | None:
        profile = getattr(self._osr, "color_profile", None)
        if profile is None:
            return None
        try:
            intent = ImageCms.Intent(profile.profile.rendering_intent)
        except (ValueError, AttributeError):
            intent = ImageCms.Intent.PERCEPTUAL
        try:
            # NOCACHE: lcms' one-pixel cache is not thread-safe, and reads run in many threads.
            return ImageCms.buildTransform(
                profile,
                ImageCms.createProfile("sRGB"),
                "RGB",
                "RGB",
                renderingIntent=intent,
                flags=ImageCms.Flags.NOCACHE,
            )
        except ImageCms.PyCMSError as exc:
            raise SlideError(
                f"{self.path.name}: cannot convert colours to sRGB (broken ICC profile: {exc})"
            ) from exc

    # --- lifetime -------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the file once running reads finish; later reads raise SlideError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.wait_for(lambda: self._active == 0)
            self._osr.close()
            if self._tiles is not None:
                self._tiles.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"Slide({str(self.path)!r}, closed)"
        return (
            f"Slide({str(self.path)!r}, {self.dimensions[0]}x{self.dimensions[1]}, mpp={self.mpp})"
        )
