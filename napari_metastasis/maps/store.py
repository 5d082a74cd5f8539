"""Probability maps as OME-Zarr (NGFF 0.4) and OME-TIFF, placed on their slide in micrometres.

``<stem>.prob.zarr`` is an NGFF 0.4 image: a zarr (format 2) group whose ``multiscales`` metadata
has ``y``/``x`` axes in micrometres and, for its one resolution ``0``, the coordinate
transformation ``scale`` (µm per map pixel, the grid's step). The grid centres cell (0, 0) on the
slide's corner (:mod:`napari_metastasis.slides.grid`), so the scale alone puts every map pixel at
the centre of its patch on the slide shown in µm, in every NGFF reader: ome-zarr-py, this package's
npe2 reader, and napari-ome-zarr 0.10, which applies only the first transformation. A map made on
an older corner grid also carries ``translation`` (µm of the centre of cell (0, 0)). Array ``0`` holds the
positive class's probability (float32, NaN = not analysed); ``class_probabilities`` holds every
class's (rows, cols, classes), so a run can be resumed and its patch CSV rebuilt; the grid, classes
and model are under the group's ``napari-metastasis`` attribute.

:class:`ZarrMapWriter` writes each batch as it finishes (its chunks, then nothing else to flush), so
an interrupted ``predict`` loses at most the batch in flight and ``predict --resume`` classifies only
what is missing. :func:`save_ome_tiff` writes the map for tools that want a TIFF, with its physical
pixel size. Works with zarr-python 2 and 3 (both write zarr format 2, which NGFF 0.4 uses).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_metastasis.errors import MetastasisError
from napari_metastasis.maps.probability import ProbabilityMap

NGFF_VERSION = "0.4"
ZARR_SUFFIX = ".prob.zarr"
METADATA_KEY = "napari-metastasis"
IMAGE = "0"
CLASSES = "class_probabilities"
#: 1 where a cell holds only the first pass's probability (see ProbabilityMap.first_pass)
FIRST_PASS = "first_pass"
CHUNK = 256


def _zarr() -> Any:
    import zarr

    return zarr


def _zarr_v3() -> bool:
    return int(_zarr().__version__.split(".")[0]) >= 3


def _open_group(path: Path, mode: str) -> Any:
    zarr = _zarr()
    kwargs = {"zarr_format": 2} if _zarr_v3() and mode == "w" else {}
    try:
        return zarr.open_group(str(path), mode=mode, **kwargs)
    except Exception as exc:  # not a zarr group, unreadable: one sentence
        raise MetastasisError(f"{path.name}: not a probability map ({exc})") from exc


def _create(
    group: Any,
    name: str,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: str = "float32",
    fill_value: float = np.nan,
) -> Any:
    if _zarr_v3():
        return group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=fill_value,
            chunk_key_encoding={"name": "v2", "separator": "/"},  # NGFF 0.4: "/" between indices
        )
    return group.create_dataset(  # pragma: no cover - zarr-python 2
        name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=fill_value,
        dimension_separator="/",
    )


def ngff_multiscales(prob_map: ProbabilityMap, name: str = "") -> list[dict]:
    """The ``multiscales`` attribute: one level, µm axes, the map placed on its slide."""
    sy, sx = prob_map.grid.layer_scale
    ty, tx = prob_map.grid.layer_translate
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [float(sy), float(sx)]}]
    if (ty, tx) != (0.0, 0.0):
        transforms.append({"type": "translation", "translation": [float(ty), float(tx)]})
    return [
        {
            "version": NGFF_VERSION,
            "name": name or f"{prob_map.class_name} probability",
            "axes": [
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [
                {
                    "path": IMAGE,
                    "coordinateTransformations": transforms,
                }
            ],
            "type": "mean",
            "metadata": {"description": "probability of one patch per pixel; NaN: not analysed"},
        }
    ]


def _attributes(prob_map: ProbabilityMap, class_names: Sequence[str], complete: bool) -> dict:
    meta = prob_map.metadata()
    meta.update(class_names=list(class_names), complete=bool(complete))
    return {"multiscales": ngff_multiscales(prob_map), METADATA_KEY: meta}


class ZarrMapWriter:
    """An OME-Zarr map on disk that grows batch by batch (see the module's docstring)."""

    def __init__(
        self, path: Path, group: Any, prob_map: ProbabilityMap, class_names: Sequence[str]
    ) -> None:
        self.path = path
        self.group = group
        self.prob_map = prob_map
        self.class_names = list(class_names)
        self.positive_index = self.class_names.index(prob_map.class_name)

    @classmethod
    def create(
        cls, path: str | Path, prob_map: ProbabilityMap, class_names: Sequence[str]
    ) -> ZarrMapWriter:
        """A new map at ``path`` (an old one is replaced) holding ``prob_map``'s analysed cells."""
        path = Path(path)
        if path.exists():
            shutil.rmtree(path)
        group = _open_group(path, "w")
        rows, cols = prob_map.grid.shape
        chunk = (min(rows, CHUNK), min(cols, CHUNK))
        image = _create(group, IMAGE, (rows, cols), chunk)
        _create(group, CLASSES, (rows, cols, len(class_names)), (*chunk, len(class_names)))
        marks = _create(group, FIRST_PASS, (rows, cols), chunk, dtype="uint8", fill_value=0)
        group.attrs.update(_attributes(prob_map, class_names, complete=False))
        if prob_map.n_analysed:
            image[:] = prob_map.values
        if prob_map.n_first_pass:
            marks[:] = prob_map.first_pass_mask.astype(np.uint8)
        return cls(path, group, prob_map, class_names)

    @classmethod
    def resume(cls, path: str | Path) -> ZarrMapWriter:
        """Reopen a map for more batches; ``writer.prob_map`` holds what is already there."""
        path = Path(path)
        group = _open_group(path, "r+")
        prob_map, class_names = _read(path, group)
        return cls(path, group, prob_map, class_names)

    def write(
        self,
        cells: np.ndarray,
        probabilities: np.ndarray,
        *,
        first_pass: bool | np.ndarray = False,
    ) -> None:
        """Store one batch: (N, 2) (row, col) cells and their (N, classes) probabilities (with
        ``first_pass``, all or a per-cell mask: only the cheap first pass's, so a resumed run
        checks them again)."""
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
        if not len(cells):
            return
        probabilities = np.asarray(probabilities, dtype=np.float32).reshape(len(cells), -1)
        rows, cols = cells[:, 0], cells[:, 1]
        n_classes = probabilities.shape[1]
        # the mark first (a cell is never taken for the full model's answer when it is not), then
        # the classes: a cell shows as analysed (array 0 not NaN) only once all are written;
        # every class in one call (each zarr call costs milliseconds, whatever its size)
        if np.any(first_pass) or FIRST_PASS in self.group:  # older maps have no marks
            if FIRST_PASS not in self.group:
                _create(
                    self.group,
                    FIRST_PASS,
                    self.prob_map.grid.shape,
                    self.group[IMAGE].chunks,
                    dtype="uint8",
                    fill_value=0,
                )
            marks = np.broadcast_to(np.asarray(first_pass, np.uint8), rows.shape)
            self.group[FIRST_PASS].vindex[rows, cols] = marks
        self.group[CLASSES].vindex[
            np.repeat(rows, n_classes),
            np.repeat(cols, n_classes),
            np.tile(np.arange(n_classes), len(cells)),
        ] = probabilities.ravel()
        self.group[IMAGE].vindex[rows, cols] = probabilities[:, self.positive_index]

    def class_probabilities(self) -> np.ndarray:
        """(rows, cols, classes) of every class, NaN where not analysed."""
        return np.asarray(self.group[CLASSES][:])

    def finish(self, prob_map: ProbabilityMap | None = None) -> Path:
        """Mark the map complete (and store ``prob_map``'s ``extra`` metadata)."""
        self.group.attrs.update(
            _attributes(prob_map or self.prob_map, self.class_names, complete=True)
        )
        return self.path


def _read(path: Path, group: Any) -> tuple[ProbabilityMap, list[str]]:
    attrs = dict(group.attrs)
    meta = attrs.get(METADATA_KEY)
    try:
        values = np.asarray(group[IMAGE][:], dtype=np.float32)
    except KeyError as exc:
        raise MetastasisError(f"{path.name}: not a probability map ({exc})") from exc
    prob_map = ProbabilityMap.from_metadata(meta, values, path.name)  # meta: a dict from here
    if FIRST_PASS in group:  # written batch by batch: right even if the run was killed
        prob_map.first_pass = np.asarray(group[FIRST_PASS][:]).astype(bool)
    return prob_map, list(meta.get("class_names") or [prob_map.class_name])  # type: ignore[union-attr]


def save_zarr(
    prob_map: ProbabilityMap,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    class_probabilities: np.ndarray | None = None,
) -> Path:
    """Write a whole map as OME-Zarr, replacing ``path`` only once the new one is complete."""
    path = Path(path)
    names = list(class_names or [prob_map.class_name])
    partial = path.with_name(f".{path.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    writer = ZarrMapWriter.create(partial, prob_map, names)
    if class_probabilities is not None:
        writer.group[CLASSES][:] = np.asarray(class_probabilities, np.float32)
    elif len(names) == 1:
        writer.group[CLASSES][:] = prob_map.values[..., None]
    writer.finish()
    if path.exists():
        shutil.rmtree(path)
    partial.rename(path)
    return path


def load_zarr(path: str | Path) -> ProbabilityMap:
    path = Path(path)
    return _read(path, _open_group(path, "r"))[0]


def is_zarr_map(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / ".zattrs").is_file() or (path / "zarr.json").is_file())


def load_map(path: str | Path) -> ProbabilityMap:
    """A map from ``.prob.zarr`` (a folder) or ``.prob.tiff``."""
    return load_zarr(path) if Path(path).is_dir() else ProbabilityMap.load(path)


def save_ome_tiff(prob_map: ProbabilityMap, path: str | Path) -> Path:
    """The map as a float32 OME-TIFF with its physical pixel size (µm; NaN = not analysed).

    The plane's position is the centre of cell (0, 0) in µm, and the project's metadata (grid,
    model) rides along as JSON in the image's OME ``Description``.
    """
    import tifffile

    from napari_metastasis.outputs.atomic import atomic_path

    path = Path(path)
    sy, sx = prob_map.grid.layer_scale
    ty, tx = prob_map.grid.layer_translate
    metadata = {
        "axes": "YX",
        "PhysicalSizeX": float(sx),
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": float(sy),
        "PhysicalSizeYUnit": "µm",
        "Name": f"{prob_map.class_name} probability",
        "Description": json.dumps(prob_map.metadata()),
        "Plane": {
            "PositionX": float(tx),
            "PositionXUnit": "µm",
            "PositionY": float(ty),
            "PositionYUnit": "µm",
        },
    }
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, prob_map.values, ome=True, photometric="minisblack", metadata=metadata
        )
    return path
