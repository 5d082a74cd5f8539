"""A labelled patch dataset in memory, and its folder format on disk.

Every source (extraction from slides, patch folders with a CSV, Kaggle/PCam TIFFs, PCam HDF5) ends up
as one :class:`PatchSet`, so balancing, training and evaluation never care where patches came from.
On disk a dataset is a folder a person can browse::

    dataset.json      spacing (µm/px), patch size, label rule, sources
    patches.csv       file, mask, label, slide, x_level0, y_level0, size_level0, tumour_fraction, source
    images/*.png      RGB patches
    masks/*.png       tumour masks (0/255), when the source has exact annotations
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from napari_metastasis.errors import DatasetError
from napari_metastasis.outputs.atomic import atomic_path, write_text_atomic

CSV_COLUMNS = (
    "file",
    "mask",
    "label",
    "slide",
    "x_level0",
    "y_level0",
    "size_level0",
    "tumour_fraction",
    "source",
)
FORMAT_TAG = "napari-metastasis patch dataset v1"


@dataclass
class PatchSet:
    """N square RGB patches at one spacing, with labels, slides, coordinates and optional masks.

    ``masks[i]`` is meaningful only where ``has_mask[i]``; ``x``/``y`` are level-0 top-left corners
    (-1 when unknown, as for PCam), ``slides`` names the slide each patch came from, which is what
    the validation split groups by.
    """

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64, 0/1
    slides: np.ndarray  # (N,) str
    spacing_um: float
    masks: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__ · (N, S, S) bool
    has_mask: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__ · (N,) bool
    x: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__ · (N,) int64
    y: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__
    size_level0: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__ · (N,) float
    sources: np.ndarray = None  # type: ignore[assignment]  # filled in __post_init__ · (N,) str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.uint8)
        n = len(self.images)
        if (
            self.images.ndim != 4
            or self.images.shape[3] != 3
            or self.images.shape[1] != self.images.shape[2]
        ):
            raise DatasetError(f"patches must be square RGB (N, S, S, 3), got {self.images.shape}")
        size = self.images.shape[1]
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        self.slides = np.asarray(self.slides, dtype=object).reshape(n)
        if self.masks is None:
            self.masks = np.zeros((n, size, size), dtype=bool)
            self.has_mask = np.zeros(n, dtype=bool)
        self.masks = np.asarray(self.masks, dtype=bool).reshape(n, size, size)
        if self.has_mask is None:
            self.has_mask = np.ones(n, dtype=bool)
        self.has_mask = np.asarray(self.has_mask, dtype=bool).reshape(n)
        self.x = np.full(n, -1, np.int64) if self.x is None else np.asarray(self.x, np.int64)
        self.y = np.full(n, -1, np.int64) if self.y is None else np.asarray(self.y, np.int64)
        if self.size_level0 is None:
            self.size_level0 = np.full(n, np.nan)
        self.size_level0 = np.asarray(self.size_level0, dtype=np.float64).reshape(n)
        if self.sources is None:
            self.sources = np.full(n, "", dtype=object)
        self.sources = np.asarray(self.sources, dtype=object).reshape(n)
        if not np.isin(self.labels, (0, 1)).all():
            raise DatasetError("labels must be 0 (normal) or 1 (tumour)")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def patch_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def tumour_fraction(self) -> np.ndarray:
        """Fraction of each patch under the tumour mask (NaN where no mask is known)."""
        frac = self.masks.reshape(len(self), -1).mean(axis=1)
        return np.where(self.has_mask, frac, np.nan)

    def subset(self, index: np.ndarray) -> PatchSet:
        index = np.asarray(index)
        return PatchSet(
            images=self.images[index],
            labels=self.labels[index],
            slides=self.slides[index],
            spacing_um=self.spacing_um,
            masks=self.masks[index],
            has_mask=self.has_mask[index],
            x=self.x[index],
            y=self.y[index],
            size_level0=self.size_level0[index],
            sources=self.sources[index],
            meta=dict(self.meta),
        )

    @staticmethod
    def concat(sets: list[PatchSet]) -> PatchSet:
        """Join datasets of the same spacing and patch size."""
        sets = [s for s in sets if len(s)]
        if not sets:
            raise DatasetError("no patches to join")
        spacing = {round(s.spacing_um, 6) for s in sets}
        sizes = {s.patch_size for s in sets}
        if len(spacing) > 1 or len(sizes) > 1:
            raise DatasetError(
                f"cannot join datasets of different spacing/size: {sorted(spacing)} µm/px, "
                f"{sorted(sizes)} px"
            )

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(s, name) for s in sets])

        return PatchSet(
            images=cat("images"),
            labels=cat("labels"),
            slides=cat("slides"),
            spacing_um=sets[0].spacing_um,
            masks=cat("masks"),
            has_mask=cat("has_mask"),
            x=cat("x"),
            y=cat("y"),
            size_level0=cat("size_level0"),
            sources=cat("sources"),
            meta={"joined": [s.meta for s in sets]},
        )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)) or "patch"


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def save_patchset(patches: PatchSet, folder: str | Path) -> Path:
    """Write ``patches`` as a browsable folder (PNG images and masks, CSV, JSON)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    fractions = patches.tumour_fraction
    for i in range(len(patches)):
        stem = f"{i:06d}_{_safe(patches.slides[i])}_{patches.x[i]}_{patches.y[i]}"
        image_file = f"images/{stem}.png"
        with atomic_path(folder / image_file) as tmp:
            tmp.write_bytes(_png_bytes(patches.images[i]))
        mask_file = ""
        if patches.has_mask[i]:
            mask_file = f"masks/{stem}.png"
            with atomic_path(folder / mask_file) as tmp:
                tmp.write_bytes(_png_bytes(patches.masks[i].astype(np.uint8) * 255))
        rows.append(
            {
                "file": image_file,
                "mask": mask_file,
                "label": int(patches.labels[i]),
                "slide": patches.slides[i],
                "x_level0": int(patches.x[i]),
                "y_level0": int(patches.y[i]),
                "size_level0": ""
                if np.isnan(patches.size_level0[i])
                else f"{patches.size_level0[i]:.3f}",
                "tumour_fraction": "" if np.isnan(fractions[i]) else f"{fractions[i]:.4f}",
                "source": patches.sources[i],
            }
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(folder / "patches.csv", buf.getvalue())
    info = {
        "format": FORMAT_TAG,
        "spacing_um_px": patches.spacing_um,
        "patch_size_pixels": patches.patch_size,
        "count": len(patches),
        "positives": int(patches.labels.sum()),
        "slides": sorted({str(s) for s in patches.slides}),
        "meta": patches.meta,
    }
    write_text_atomic(folder / "dataset.json", json.dumps(info, indent=2, default=str))
    return folder


def read_rgb(path: Path, size: int | None = None) -> np.ndarray:
    """Decode one image file to RGB uint8, or raise DatasetError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: patch file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: patch image is corrupt or unreadable ({exc})") from exc
    if size is not None and rgb.shape[:2] != (size, size):
        raise DatasetError(
            f"{path}: patch is {rgb.shape[1]}x{rgb.shape[0]} px, expected {size}x{size}"
        )
    return rgb


def load_patchset(folder: str | Path) -> PatchSet:
    """Read a dataset folder written by :func:`save_patchset` (or ``napari-metastasis extract``)."""
    folder = Path(folder)
    info_path = folder / "dataset.json"
    table_path = folder / "patches.csv"
    if not info_path.is_file() or not table_path.is_file():
        raise DatasetError(f"{folder}: not a patch dataset (needs dataset.json and patches.csv)")
    try:
        info = json.loads(info_path.read_text())
        spacing = float(info["spacing_um_px"])
        size = int(info["patch_size_pixels"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{info_path}: malformed dataset description ({exc})") from exc
    with table_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise DatasetError(f"{table_path}: holds no patches")
    missing = set(CSV_COLUMNS) - set(rows[0])
    if missing:
        raise DatasetError(f"{table_path}: missing columns {', '.join(sorted(missing))}")
    n = len(rows)
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), bool)
    has_mask = np.zeros(n, bool)
    for i, row in enumerate(rows):
        images[i] = read_rgb(folder / row["file"], size)
        if row["mask"]:
            masks[i] = read_rgb(folder / row["mask"], size)[..., 0] > 127
            has_mask[i] = True
    try:
        labels = np.array([int(r["label"]) for r in rows])
        x = np.array([int(r["x_level0"]) for r in rows])
        y = np.array([int(r["y_level0"]) for r in rows])
        size0 = np.array([float(r["size_level0"]) if r["size_level0"] else np.nan for r in rows])
    except ValueError as exc:
        raise DatasetError(f"{table_path}: a label or coordinate is not a number ({exc})") from exc
    return PatchSet(
        images=images,
        labels=labels,
        slides=np.array([r["slide"] for r in rows], dtype=object),
        spacing_um=spacing,
        masks=masks,
        has_mask=has_mask,
        x=x,
        y=y,
        size_level0=size0,
        sources=np.array([r["source"] for r in rows], dtype=object),
        meta=info.get("meta", {}),
    )
