"""ProbabilityMap: one value per grid cell (NaN where nothing was analysed), with its geometry.

It is what the engine fills, the viewer shows as an overlay and thresholds into contours, the CLI
saves beside its CSV, and evaluation compares with reference annotations. Saved as a float32 TIFF
whose description holds the grid geometry as JSON, so any TIFF viewer can open it and we can reload
it without re-running the model.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_metastasis.errors import MetastasisError
from napari_metastasis.outputs.atomic import atomic_path
from napari_metastasis.slides.grid import PatchGrid

FORMAT_TAG = "napari-metastasis probability map v1"


def _rational(value: float) -> tuple[int, int]:
    """A TIFF RATIONAL (numerator, denominator) for a non-negative value, to 1e-9."""
    denominator = 1_000_000_000
    return round(value * denominator), denominator


@dataclass
class ProbabilityMap:
    """Per-cell probability of the positive class on a :class:`PatchGrid`."""

    grid: PatchGrid
    values: np.ndarray  # (rows, cols) float32, NaN = not analysed
    class_name: str = "tumor"
    model_name: str = ""
    slide_path: str = ""
    extra: dict = field(default_factory=dict)
    #: (rows, cols) bool: cells holding only the run's cheap first pass, not the full model's
    #: answer (:mod:`napari_metastasis.pipeline.first_pass`); None: none
    first_pass: np.ndarray | None = None

    @classmethod
    def empty(cls, grid: PatchGrid, **kwargs: Any) -> ProbabilityMap:
        return cls(grid, np.full(grid.shape, np.nan, np.float32), **kwargs)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.shape != self.grid.shape:
            raise ValueError(f"values shape {self.values.shape} != grid shape {self.grid.shape}")
        if self.first_pass is None:
            self.first_pass = np.zeros(self.grid.shape, bool)
        self.first_pass = np.asarray(self.first_pass, dtype=bool)
        if self.first_pass.shape != self.grid.shape:
            raise ValueError(f"first-pass mask shape {self.first_pass.shape} != {self.grid.shape}")

    # --- filling ----------------------------------------------------------------------------
    def update(
        self, cells: np.ndarray, probabilities: np.ndarray, *, first_pass: bool | np.ndarray = False
    ) -> None:
        """Write probabilities for (N, 2) (row, col) cells: the full model's answer, or with
        ``first_pass`` (all, or a per-cell mask) only the cheap first pass's (marked so)."""
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
        self.values[cells[:, 0], cells[:, 1]] = np.asarray(probabilities, np.float32).ravel()
        self.first_pass_mask[cells[:, 0], cells[:, 1]] = first_pass

    def merge(self, other: ProbabilityMap) -> None:
        """Take every analysed cell of ``other`` (same grid) into this map."""
        if other.grid != self.grid:
            raise ValueError("cannot merge probability maps on different grids")
        known = ~np.isnan(other.values)
        self.values[known] = other.values[known]
        self.first_pass_mask[known] = other.first_pass_mask[known]

    @property
    def first_pass_mask(self) -> np.ndarray:
        """(rows, cols) bool: the cells holding only the first pass's probability."""
        assert self.first_pass is not None  # set in __post_init__
        return self.first_pass

    @property
    def n_first_pass(self) -> int:
        """Analysed cells that hold only the first pass's probability."""
        return int((self.first_pass_mask & self.analysed).sum())

    def missing(self, cells: np.ndarray) -> np.ndarray:
        """The subset of ``cells`` not analysed yet (so overlapping analyses reuse old results)."""
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
        if len(cells) == 0:
            return cells
        return cells[np.isnan(self.values[cells[:, 0], cells[:, 1]])]

    # --- reading ----------------------------------------------------------------------------
    @property
    def analysed(self) -> np.ndarray:
        return ~np.isnan(self.values)

    @property
    def n_analysed(self) -> int:
        return int(self.analysed.sum())

    def max_probability(self) -> float:
        """Slide score: the highest probability of any analysed cell (NaN if none)."""
        return float(np.nanmax(self.values)) if self.n_analysed else float("nan")

    def layer_kwargs(self) -> dict:
        """Scale and translate (µm) that put the map exactly over the slide layer in napari."""
        return {"scale": self.grid.layer_scale, "translate": self.grid.layer_translate}

    # --- persistence ------------------------------------------------------------------------
    def metadata(self) -> dict:
        return {
            "format": FORMAT_TAG,
            "grid": self.grid.to_dict(),
            "class_name": self.class_name,
            "model_name": self.model_name,
            "slide_path": self.slide_path,
            "extra": self.extra,
            **({"first_pass": pack_mask(self.first_pass_mask)} if self.n_first_pass else {}),
        }

    @classmethod
    def from_metadata(cls, meta: object, values: np.ndarray, where: str) -> ProbabilityMap:
        """The inverse of :meth:`metadata`: the map ``meta`` describes, holding ``values``.

        Whatever the file format (TIFF description, OME-Zarr attributes), metadata that is not
        this program's is one sentence naming ``where`` it came from.
        """
        try:
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_TAG:
                raise ValueError("not written by napari-metastasis")
            grid = PatchGrid.from_dict(meta["grid"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MetastasisError(f"{where}: not a probability map ({exc})") from exc
        return cls(
            grid,
            values,
            class_name=meta.get("class_name", "tumor"),
            model_name=meta.get("model_name", ""),
            slide_path=meta.get("slide_path", ""),
            extra=meta.get("extra", {}),
            first_pass=unpack_mask(meta.get("first_pass"), grid.shape, where),
        )

    def save(self, path: str | Path) -> Path:
        """Write a float32 TIFF (NaN kept) with the geometry as JSON in its description.

        The TIFF's own resolution tags say how big a pixel (one grid step) is, in centimetres as
        TIFF allows (10,000 / step µm pixels per cm), so QuPath, Fiji and OpenSlide-style readers
        size the map in µm rather than in pixels. XPosition/YPosition say where the first pixel's
        square starts (half a step before the first patch's centre) when that is on the slide; a
        centred grid's first square begins half a step before the slide's edge, which TIFF's
        unsigned positions cannot say (the grid in the description and the OME-Zarr map can).
        """
        path = Path(path)
        grid = self.grid
        per_cm = 1e4 / grid.step_um
        fx, fy = grid.level0_to_um(np.array([grid.footprint_origin_level0]))[0] / 1e4
        extratags = [
            (tag, 5, 1, _rational(cm), True) for tag, cm in ((286, fx), (287, fy)) if cm >= 0.0
        ]
        with atomic_path(path) as tmp:
            tifffile.imwrite(
                tmp,
                self.values,
                description=json.dumps(self.metadata()),
                metadata=None,
                photometric="minisblack",
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
                extratags=extratags,
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> ProbabilityMap:
        """A map saved by :meth:`save` (``.prob.tiff``) or as OME-Zarr (a ``.prob.zarr`` folder)."""
        path = Path(path)
        if path.is_dir():
            from napari_metastasis.maps.store import load_zarr

            return load_zarr(path)
        try:
            with tifffile.TiffFile(path) as tif:
                description = tif.pages[0].description  # type: ignore[union-attr]
                values = tif.pages[0].asarray()
            meta = json.loads(description)
        except (OSError, ValueError, TypeError, tifffile.TiffFileError) as exc:
            raise MetastasisError(f"{path.name}: not a probability map ({exc})") from exc
        return cls.from_metadata(meta, values, path.name)


def pack_mask(mask: np.ndarray) -> str:
    """A bool grid as text for JSON metadata: its bits packed, in base64 (2 KB for 128 x 128)."""
    return base64.b64encode(np.packbits(np.asarray(mask, bool).ravel()).tobytes()).decode("ascii")


def unpack_mask(text: object, shape: tuple[int, int], where: str) -> np.ndarray:
    """The inverse of :func:`pack_mask` (all False for None)."""
    if text is None:
        return np.zeros(shape, bool)
    try:
        bits = np.unpackbits(np.frombuffer(base64.b64decode(str(text)), np.uint8))
        return bits[: shape[0] * shape[1]].reshape(shape).astype(bool)
    except ValueError as exc:
        raise MetastasisError(f"{where}: the first-pass mask is broken ({exc})") from exc
