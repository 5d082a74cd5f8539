"""npe2 glue for annotation files: a reader for GeoJSON / ASAP XML / NCRF JSON, and writers.

Units. Files hold level-0 pixels and layers hold µm, so reading needs the slide's µm per pixel,
which an annotation file does not carry. The reader takes it from the slide open in the current
viewer: the selected layer if it is a slide, else the top-most slide layer (a slide layer is an
Image layer whose metadata has ``"slide"``, as :mod:`napari_metastasis._napari.slide_reader` makes; its ``scale``
is ``(mpp_y, mpp_x)``). With no slide open it uses 1 (layers in pixels) and says so; open the slide
first, or import through the dock widget, which uses the slide layer chosen there.

Writers take each layer's own ``metadata["mpp"]`` (set by the reader and by the contour code),
else the viewer's slide, else 1. µm measurements (``area_um2``, the CSV summary) are only written
when the µm per pixel is known; a CSV of an uncalibrated layer is refused rather than mislabelled.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_metastasis._napari.helpers import (
    current_viewer,
    find_slide_layer,
    layer_units,
    notify,
    slide_calibration,
    warn,
)
from napari_metastasis.annotations import (
    AnnotationRepairWarning,
    GeometryRepairWarning,
    read_annotations,
    write_annotations,
)
from napari_metastasis.annotations.io import READ_EXTENSIONS
from napari_metastasis.annotations.layers import (
    annotations_to_layer_data,
    points_to_annotations,
    shapes_to_annotations,
)
from napari_metastasis.annotations.model import Annotation
from napari_metastasis.annotations.placement import (
    check_placement,
    placement_warning,
    repairs_summary,
)
from napari_metastasis.errors import MetastasisError
from napari_metastasis.errors.policy import user_message

LayerData = tuple
logger = logging.getLogger(__name__)
SNIFF_BYTES = 4096


# --- reader ------------------------------------------------------------------------------------
def get_annotation_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """Claim .geojson/.json/.xml files that look like annotations; decline others."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    file = Path(path)
    if file.suffix.lower() not in READ_EXTENSIONS or not file.is_file():
        return None
    if not _sniff(file):
        return None
    return read_annotation_file


def read_annotation_file(path: str | list[str]) -> list[LayerData]:
    """The npe2 reader function: layers, or one notification saying why not (never a traceback).

    The same policy as slides (:mod:`napari_metastasis.errors.policy`): the reader's own sentence for
    a bad file, and one line for anything unforeseen.
    """
    if isinstance(path, list | tuple):
        path = path[0]
    try:
        return read_annotation_layers(path)
    except Exception as exc:
        if not isinstance(exc, MetastasisError):
            logger.exception("reading %s failed", path)
        message = user_message(exc)
        notify(
            "error",
            message if isinstance(exc, MetastasisError) else f"{Path(path).name}: {message}",
        )
    return [(None,)]


def _sniff(path: Path) -> bool:
    try:
        head = path.open("rb").read(SNIFF_BYTES)
    except OSError:
        return False
    if path.suffix.lower() == ".xml":
        return b"<ASAP_Annotations" in head
    if path.suffix.lower() == ".geojson":
        return True
    text = head.decode("utf-8", errors="ignore")
    return any(k in text for k in ('"Feature', '"positive"', '"negative"', '"coordinates"'))


def read_annotation_layers(
    path: str, slide_layer: Any | None = None, *, use_viewer: bool = True
) -> list[LayerData]:
    """Shapes (regions, lines) and Points layer data in µm for an annotation file.

    ``slide_layer`` gives the µm per pixel; by default the current viewer's slide is used.
    """
    if slide_layer is None and use_viewer:
        slide_layer = find_slide_layer(current_viewer())
    mpp, calibrated = slide_calibration(slide_layer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnnotationRepairWarning)
        annotations = read_annotations(path)
    repairs = [str(w.message) for w in caught if issubclass(w.category, GeometryRepairWarning)]
    for message in repairs:
        logger.info("%s", message)
    for warning in caught:  # other changes (a skipped feature, a replaced character) one by one
        if issubclass(warning.category, AnnotationRepairWarning) and not issubclass(
            warning.category, GeometryRepairWarning
        ):
            warn(str(warning.message))
    summary = repairs_summary(repairs, Path(path).name)
    if summary:
        warn(summary)
    if slide_layer is not None:
        width, height = slide_layer.metadata["slide"]["dimensions"]
        placement = check_placement(annotations, width, height)
        outside = placement_warning(
            placement, Path(path).name, slide_layer.name, mpp[1] if calibrated else None
        )
        if outside:
            warn(outside)
    if slide_layer is None:
        warn(
            f"{Path(path).name}: no slide is open, so the annotations are shown in pixels; open the "
            "slide first to place them on it in µm."
        )
    layers = annotations_to_layer_data(annotations, mpp, name=Path(path).stem)
    for _, kwargs, _ in layers:
        kwargs.update(layer_units(slide_layer))  # µm like the slide: napari wants one unit
        if slide_layer is not None:  # on the slide wherever it lies (slides sit side by side)
            kwargs["translate"] = tuple(float(t) for t in slide_layer.translate[-2:])
        kwargs["metadata"].update(
            {
                "annotation_source": str(path),
                "calibrated": calibrated,
                "slide_layer": getattr(slide_layer, "name", None),
            }
        )
    return layers


# --- writers -----------------------------------------------------------------------------------
def layer_data_to_annotations(
    layer_data: Sequence[LayerData], viewer: Any | None = None
) -> tuple[list[Annotation], tuple[float, float] | None]:
    """Annotations from Shapes/Points layer data tuples, and the µm/px if it is known."""
    fallback = None
    annotations: list[Annotation] = []
    known_mpp = None
    for data, attributes, layer_type in layer_data:
        metadata = attributes.get("metadata") or {}
        if "mpp" in metadata:
            mpp = tuple(metadata["mpp"])
            calibrated = bool(metadata.get("calibrated", True))
        else:
            if fallback is None:
                fallback = slide_calibration(find_slide_layer(viewer or current_viewer()))
            mpp, calibrated = fallback
        if calibrated:
            known_mpp = mpp
        if layer_type == "shapes":
            annotations += shapes_to_annotations(
                data, attributes["shape_type"], attributes.get("features"), mpp, metadata=metadata
            )
        elif layer_type == "points":
            annotations += points_to_annotations(
                data, attributes.get("features"), mpp, metadata=metadata
            )
    return annotations, known_mpp


def _write(path: str, layer_data: list[LayerData], fmt: str) -> list[str]:
    annotations, mpp = layer_data_to_annotations(layer_data)
    return [str(write_annotations(path, annotations, fmt, mpp=mpp))]


def write_geojson(path: str, layer_data: list[LayerData]) -> list[str]:
    return _write(path, layer_data, "geojson")


def write_asap_xml(path: str, layer_data: list[LayerData]) -> list[str]:
    return _write(path, layer_data, "asap")


def write_csv_summary(path: str, layer_data: list[LayerData]) -> list[str]:
    return _write(path, layer_data, "csv")
