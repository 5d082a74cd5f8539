"""Analyses kept per (slide, model), and remembered on disk so reopening a slide restores them.

One :class:`ProbabilityMap` per slide and model is the point: a new analysis of a region that
overlaps an earlier one only computes the missing cells, because the map already holds the rest.
Finished (or cancelled) analyses are written to a per-user folder, keyed by the slide's absolute
path and the model name, and read back when the same slide is opened again.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

import platformdirs

from napari_metastasis._napari.helpers import slide_key
from napari_metastasis.errors import MetastasisError
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.slides.grid import PatchGrid

#: Environment variable that overrides where remembered analyses live (tests point it at tmp).
ANALYSES_DIR_ENV = "NAPARI_METASTASIS_ANALYSES"
SUFFIX = ".probability.tif"


def analyses_dir() -> Path:
    override = os.environ.get(ANALYSES_DIR_ENV)
    if override:
        return Path(override)
    return Path(platformdirs.user_data_dir("napari-metastasis", appauthor=False)) / "analyses"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def remembered_path(slide_path: str | Path, model_name: str, folder: Path | None = None) -> Path:
    """Where the analysis of ``slide_path`` by ``model_name`` is remembered."""
    key = slide_key(slide_path)
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]
    stem = _safe(Path(key).stem)
    return (folder or analyses_dir()) / f"{stem}-{digest}--{_safe(model_name)}{SUFFIX}"


def remembered_for(slide_path: str | Path, folder: Path | None = None) -> list[Path]:
    """Every remembered analysis of this slide (any model), oldest first."""
    key = slide_key(slide_path)
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]
    folder = folder or analyses_dir()
    if not folder.is_dir():
        return []
    found = folder.glob(f"{_safe(Path(key).stem)}-{digest}--*{SUFFIX}")
    return sorted(found, key=lambda p: p.stat().st_mtime)


def is_remembered_model(path: Path, model_name: str) -> bool:
    """Whether a file from :func:`remembered_for` holds the analysis by ``model_name``."""
    return Path(path).name.endswith(f"--{_safe(model_name)}{SUFFIX}")


def check_matches_slide(prob_map: ProbabilityMap, width: int, height: int, source: str) -> None:
    """Refuse a map computed on a slide of another size (it cannot be the same slide)."""
    if (prob_map.grid.width, prob_map.grid.height) != (width, height):
        raise MetastasisError(
            f"{source}: this analysis is of a {prob_map.grid.width}×{prob_map.grid.height} px "
            f"slide, not of the selected {width}×{height} px slide."
        )


#: Where a new map on another grid keeps the grid of the analysis it replaces, until the run says so.
REPLACED_GRID = "replaced_grid"


def replaced_grid_message(slide: str, replaced: dict, grid: PatchGrid) -> str:
    """One sentence for a run that starts a new map because the slide's analysis with the same
    model was made on another grid: why, and that nothing on disk changed."""
    old = PatchGrid.from_dict(replaced)
    if old.anchor != grid.anchor:
        why = "by an earlier build, whose patches started at the slide's corner"
    elif old.step_um != grid.step_um:
        why = f"with patches every {old.step_um:g} µm, not {grid.step_um:g} µm (another overlap)"
    else:
        why = "on another patch grid"
    return (
        f"{slide}: its earlier analysis with this model was made {why}, so this run starts a new "
        "map and the earlier one is no longer shown (a saved file of it is unchanged: File > "
        "Open shows it again)."
    )


class AnalysisStore:
    """Thread-safe registry of probability maps by (slide key, model name).

    The worker thread asks for the map when it knows the grid (after loading the model); the GUI
    thread reads the same map to draw it. Cells are written on the GUI thread only.
    """

    def __init__(self) -> None:
        self._maps: dict[tuple[str, str], ProbabilityMap] = {}
        self._lock = threading.Lock()

    def get(self, slide_path: str | Path, model_name: str) -> ProbabilityMap | None:
        with self._lock:
            return self._maps.get((slide_key(slide_path), model_name))

    def get_or_create(
        self, slide_path: str | Path, model_name: str, grid: PatchGrid, class_name: str = "tumor"
    ) -> ProbabilityMap:
        """The map for this slide and model; a fresh empty one if none yet or the grid changed."""
        key = (slide_key(slide_path), model_name)
        with self._lock:
            existing = self._maps.get(key)
            if existing is not None and existing.grid == grid:
                return existing
            prob_map = ProbabilityMap.empty(
                grid, class_name=class_name, model_name=model_name, slide_path=key[0]
            )
            if existing is not None:  # the run says so when it starts (run_follow)
                prob_map.extra[REPLACED_GRID] = existing.grid.to_dict()
            self._maps[key] = prob_map
            return prob_map

    def put(self, slide_path: str | Path, prob_map: ProbabilityMap) -> ProbabilityMap:
        """Register a loaded map, merging it into one already there on the same grid."""
        key = (slide_key(slide_path), prob_map.model_name)
        with self._lock:
            existing = self._maps.get(key)
            if existing is not None and existing.grid == prob_map.grid:
                existing.merge(prob_map)
                return existing
            prob_map.slide_path = key[0]
            self._maps[key] = prob_map
            return prob_map

    def for_slide(self, slide_path: str | Path) -> list[ProbabilityMap]:
        key = slide_key(slide_path)
        with self._lock:
            return [m for (s, _), m in self._maps.items() if s == key]

    def remember(self, prob_map: ProbabilityMap, folder: Path | None = None) -> Path | None:
        """Write the map where reopening the slide finds it; None if nothing was analysed."""
        if not prob_map.n_analysed:
            return None
        path = remembered_path(prob_map.slide_path, prob_map.model_name, folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        return prob_map.save(path)
