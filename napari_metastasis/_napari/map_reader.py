"""npe2 reader for the project's probability maps: ``<stem>.prob.zarr`` (OME-Zarr) and
``<stem>.prob.tiff``, each opened as one Image layer placed on its slide in µm.

The layer's scale and translate are the map's coordinate transformations (the grid's step, and the
centre of cell (0, 0)), in the µm the slide reader gives a calibrated slide, so the map lands on the
slide's pixels whichever was opened first. Values are probabilities (contrast 0–1, NaN = not
analysed, drawn transparent), in the widget's colormap. Files that are not the project's maps are
declined, so other readers can try; a damaged map gives one error notification and no layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from napari_metastasis.errors import MetastasisError

if TYPE_CHECKING:
    from napari_metastasis.maps.probability import ProbabilityMap

LayerData = tuple
NO_LAYERS: list[LayerData] = [(None,)]
TIFF_SUFFIXES = (".tif", ".tiff")


def _single(path: str | list[str]) -> str | None:
    if isinstance(path, list | tuple):
        return str(path[0]) if len(path) == 1 else None
    return str(path)


def is_probability_map(path: str | Path) -> bool:
    """A folder with our OME-Zarr metadata, or a TIFF whose description is our map's JSON."""
    from napari_metastasis.maps.probability import FORMAT_TAG
    from napari_metastasis.maps.store import METADATA_KEY, is_zarr_map

    path = Path(path)
    if path.is_dir():
        if not is_zarr_map(path):
            return False
        try:
            attrs = json.loads((path / ".zattrs").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(attrs, dict) and METADATA_KEY in attrs
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return False
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            description = getattr(tif.pages[0], "description", "") or ""
    except Exception:  # noqa: BLE001 - not a readable TIFF: not ours to claim
        return False
    return FORMAT_TAG in description[:200]


def get_map_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    single = _single(path)
    if single is None or not is_probability_map(single):
        return None
    return read_map_layers


def read_map_layers(path: str | list[str]) -> list[LayerData]:
    from napari_metastasis._napari.helpers import notify
    from napari_metastasis.maps.store import load_map

    single = _single(path) or ""
    try:
        prob_map = load_map(single)
    except MetastasisError as exc:
        notify("error", str(exc))
        return NO_LAYERS
    return [map_layer_data(prob_map, Path(single))]


def map_layer_data(prob_map: ProbabilityMap, path: Path) -> LayerData:
    """(data, kwargs, "image") for a map: on its slide in µm, probabilities 0–1, NaN transparent."""
    from napari_metastasis._napari.colormaps import COLORMAPS, DEFAULT_OPACITY, colormap_for

    stem = path.name
    for suffix in (".prob.zarr", ".zarr", ".prob.tiff", ".prob.tif"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    scale, translate = prob_map.grid.layer_scale, prob_map.grid.layer_translate
    kwargs = {
        "name": f"{stem} · {prob_map.model_name or 'model'} {prob_map.class_name} probability",
        "colormap": colormap_for(COLORMAPS[0]),  # the widget's default: fades in, cut at the floor
        "contrast_limits": (0.0, 1.0),
        "opacity": DEFAULT_OPACITY,
        "blending": "translucent",
        "interpolation2d": "nearest",
        "scale": scale,
        "translate": translate,
        "units": ("µm", "µm"),
        "metadata": {"probability_map": prob_map.metadata(), "map_path": str(path)},
    }
    return (prob_map.values, kwargs, "image")
