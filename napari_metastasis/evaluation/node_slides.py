"""Node slides written as a scanner would: JPEG-tiled pyramidal TIFFs of held-out patches on glass.

Each cell of a node (:mod:`napari_metastasis.evaluation.nodes`) is the central 80 µm of one
PatchCamelyon patch (96 px at 0.972 µm/px), resampled to the slide's µm/px and randomly rotated by
a multiple of 90° and flipped, so no two nodes show the same patch the same way. Patches are drawn
per node without replacement while the pool lasts (a 32 x 32 node needs 1,024 of them; the
held-out split has 1,315 negatives), so across nodes the same patches recur, in other places and
orientations. Slides are generic tiled TIFFs (256-px JPEG tiles, exact 2x sub-resolution levels down
to about 500 px, resolution tags in pixels per centimetre), which OpenSlide and
:class:`napari_metastasis.slides.slide.Slide` read with the right µm/px; at 0.25 µm/px (a 40x scan) the
reader must pick the 1 µm/px level for the model. Everything is fixed by the seed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_metastasis.datasets.ingest import PCAM_MPP
from napari_metastasis.datasets.pcam_splits import PatchFiles
from napari_metastasis.evaluation.nodes import (
    CELL_UM,
    NodeSpec,
    NodeTruth,
    node_truth,
    place_deposit,
)

#: Glass colour (RGB), as the background of the scans the project reads.
GLASS = 243
TILE = 256
#: Levels are halved down to about this size (px, the longer side).
SMALLEST_LEVEL = 512
TRUTH_FILE = "nodes_truth.json"
#: Written first by a build: the set's key, so an interrupted build keeps the slides it finished.
BUILDING_FILE = ".building.json"
FORMAT_TAG = "napari-metastasis node set v1"


def cell_image(patch: np.ndarray, cell_px: int, turn: int, flip: bool) -> np.ndarray:
    """The central 80 µm of a PCam ``patch`` as ``cell_px`` x ``cell_px`` pixels, turned/flipped."""
    from PIL import Image

    half = CELL_UM / PCAM_MPP / 2  # 41.2 px of the 96-px patch
    cy, cx = patch.shape[0] / 2, patch.shape[1] / 2
    image = Image.fromarray(patch).resize(
        (cell_px, cell_px),
        Image.Resampling.LANCZOS,
        box=(cx - half, cy - half, cx + half, cy + half),
    )
    out = np.rot90(np.asarray(image), turn)
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def _draw(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` items of ``pool``: shuffled, without replacement until the pool is used up."""
    if n == 0:
        return np.zeros(0, np.int64)
    if len(pool) == 0:
        raise ValueError("no patches of this label in the split")
    reps = -(-n // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(reps)])[:n]


class PatchCache:
    """Decoded patches by index (a node set reads the same held-out patches many times)."""

    def __init__(self, files: PatchFiles):
        self.files = files
        self._cache: dict[int, np.ndarray] = {}

    def __getitem__(self, index: int) -> np.ndarray:
        if index not in self._cache:
            import tifffile

            rgb = np.asarray(tifffile.imread(self.files.paths[index]))[..., :3]
            self._cache[index] = np.ascontiguousarray(rgb, dtype=np.uint8)
        return self._cache[index]


def draw_node(
    spec: NodeSpec, files: PatchFiles, seed: int
) -> tuple[NodeTruth, np.ndarray, np.ndarray, np.ndarray]:
    """The random choices of ``spec`` (stream: ``seed`` and its index): truth (with its patches),
    then per cell the patch index, quarter turns and flip. Cheap: no pixels."""
    rng = np.random.default_rng([seed, spec.index])
    tumour = place_deposit(spec, rng)
    truth = node_truth(spec, tumour)
    n = spec.node_cells
    is_tumour = np.zeros((n, n), bool)
    for r, c in tumour:
        is_tumour[r, c] = True
    chosen = np.zeros((n, n), np.int64)
    chosen[is_tumour] = _draw(np.flatnonzero(files.labels == 1), int(is_tumour.sum()), rng)
    chosen[~is_tumour] = _draw(np.flatnonzero(files.labels == 0), int((~is_tumour).sum()), rng)
    turns = rng.integers(4, size=(n, n))
    flips = rng.integers(2, size=(n, n)).astype(bool)
    truth.patches = [files.paths[int(i)].stem for i in chosen.ravel()]
    return truth, chosen, turns, flips


def render_node(
    spec: NodeSpec, files: PatchFiles, seed: int, cache: PatchCache | None = None
) -> tuple[np.ndarray, NodeTruth]:
    """The level-0 RGB image of ``spec`` and its truth."""
    cache = cache or PatchCache(files)
    truth, chosen, turns, flips = draw_node(spec, files, seed)
    cell_px = round(CELL_UM / spec.mpp)
    origin = round(truth.tissue_origin_um / spec.mpp)
    width, height = truth.size_px
    image = np.full((height, width, 3), GLASS, np.uint8)
    n = spec.node_cells
    for r in range(n):
        for c in range(n):
            y, x = origin + r * cell_px, origin + c * cell_px
            image[y : y + cell_px, x : x + cell_px] = cell_image(
                cache[int(chosen[r, c])], cell_px, int(turns[r, c]), bool(flips[r, c])
            )
    return image, truth


def _half(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    blocks = image[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).astype(np.uint16)
    return ((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)


def write_pyramid(path: Path, image: np.ndarray, mpp: float, quality: int = 90) -> Path:
    """A generic tiled TIFF: JPEG tiles of ``TILE`` px, levels halved down to ~SMALLEST_LEVEL px,
    each with its resolution (pixels per cm) so readers know every level's µm/px."""
    import tifffile

    tmp = path.with_name(f".{path.name}.partial")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        level, ds = image, 1
        while True:
            tw.write(
                level,
                tile=(TILE, TILE),
                compression="jpeg",
                compressionargs={"level": quality},
                photometric="rgb",
                resolution=(1e4 / (mpp * ds), 1e4 / (mpp * ds)),
                resolutionunit="CENTIMETER",
                subfiletype=1 if ds > 1 else 0,
                metadata=None,
            )
            if max(level.shape[:2]) <= SMALLEST_LEVEL:
                break
            level, ds = _half(level), ds * 2
    tmp.replace(path)
    return path


def set_key(specs: Sequence[NodeSpec], files: PatchFiles, seed: int) -> str:
    """A fingerprint of what a set is built from: specs, seed and the patches (names, labels)."""
    digest = hashlib.sha256()
    digest.update(FORMAT_TAG.encode())
    digest.update(json.dumps([vars(s) for s in specs], sort_keys=True).encode())
    digest.update(str(seed).encode())
    digest.update("\n".join(p.stem for p in files.paths).encode())
    digest.update(np.asarray(files.labels, np.int64).tobytes())
    return digest.hexdigest()[:16]


def write_truth(folder: Path, truths: Sequence[NodeTruth], **info: Any) -> Path:
    path = Path(folder) / TRUTH_FILE
    data = {"format": FORMAT_TAG, **info, "nodes": [t.to_dict() for t in truths]}
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def read_truth(folder: str | Path) -> tuple[list[NodeTruth], dict]:
    """The nodes of ``folder/nodes_truth.json`` and the set's other fields (key, part, seed)."""
    data = json.loads((Path(folder) / TRUTH_FILE).read_text())
    if data.get("format") != FORMAT_TAG:
        raise ValueError(f"{folder}: {TRUTH_FILE} is not a node set's truth")
    nodes = [NodeTruth.from_dict(n) for n in data.pop("nodes")]
    return nodes, data


def build_node_set(
    specs: Sequence[NodeSpec], files: PatchFiles, folder: str | Path, seed: int = 0, **info: Any
) -> list[NodeTruth]:
    """Write ``<name>.tif`` for every spec and ``nodes_truth.json`` into ``folder``; a folder that
    already holds this very set (same key, all slides present) is reused as it is, and an
    interrupted build of the same set keeps the slides it finished (each is written whole or not
    at all)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = set_key(specs, files, seed)
    if (folder / TRUTH_FILE).is_file():
        try:
            truths, old = read_truth(folder)
        except (ValueError, KeyError, TypeError):
            truths, old = [], {}
        if old.get("key") == key and all((folder / f"{t.name}.tif").is_file() for t in truths):
            return truths
    building = folder / BUILDING_FILE
    resume = building.is_file() and json.loads(building.read_text()).get("key") == key
    building.write_text(json.dumps({"key": key}))
    cache = PatchCache(files)
    truths = []
    for spec in specs:
        path = folder / f"{spec.name}.tif"
        if resume and path.is_file():
            truth = draw_node(spec, files, seed)[0]
        else:
            image, truth = render_node(spec, files, seed, cache)
            write_pyramid(path, image, spec.mpp)
        truths.append(truth)
    write_truth(folder, truths, key=key, seed=seed, **info)
    building.unlink()
    return truths
