"""One entry point per direction: :func:`read_annotations` and :func:`write_annotations`.

The format is chosen by extension and, for ``.json``, by content (GeoJSON or NCRF). Readers are
all-or-nothing: a malformed file raises :class:`~napari_metastasis.errors.AnnotationError` naming
the file and the feature, never a partial list. Writers are atomic: an existing file is replaced
only when the new one is complete.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from napari_metastasis.annotations import _validate as v
from napari_metastasis.annotations._files import load_json, read_bytes
from napari_metastasis.annotations.asap import read_asap, write_asap
from napari_metastasis.annotations.csv_summary import write_csv
from napari_metastasis.annotations.geojson import looks_like_geojson, parse_geojson, write_geojson
from napari_metastasis.annotations.model import Annotation
from napari_metastasis.annotations.ncrf import looks_like_ncrf, parse_ncrf, write_ncrf
from napari_metastasis.annotations.sizes import Mpp
from napari_metastasis.errors import AnnotationError

#: Format names and what people call them.
FORMAT_NAMES = {
    "geojson": "GeoJSON",
    "asap": "ASAP XML",
    "ncrf": "NCRF JSON",
    "csv": "CSV summary",
}
#: The format an output extension means.
WRITE_EXTENSIONS = {".geojson": "geojson", ".json": "geojson", ".xml": "asap", ".csv": "csv"}
READ_EXTENSIONS = (".geojson", ".json", ".xml")


def read_annotations(path: str | Path) -> list[Annotation]:
    """All annotations in ``path`` (QuPath/plain GeoJSON, ASAP XML or NCRF JSON), in level-0 px."""
    return read_annotations_with_format(path)[0]


def read_annotations_with_format(path: str | Path) -> tuple[list[Annotation], str]:
    """Like :func:`read_annotations`, also returning the format found (a FORMAT_NAMES key).

    The limits of :mod:`._validate` apply (features, vertices per shape and per file).
    """
    with v.file_limits():
        return _read_with_format(Path(path))


def _read_with_format(path: Path) -> tuple[list[Annotation], str]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raise AnnotationError(f"{path.name}: a CSV summary holds no geometry and cannot be read")
    if suffix == ".xml" or (suffix not in READ_EXTENSIONS and _starts_with(path, b"<")):
        return read_asap(path), "asap"
    data = load_json(path)
    if looks_like_ncrf(data):
        return parse_ncrf(data, path.name), "ncrf"
    if looks_like_geojson(data) or suffix == ".geojson":
        return parse_geojson(data, path.name), "geojson"
    raise AnnotationError(
        f"{path.name}: neither GeoJSON nor NCRF JSON (no FeatureCollection, Feature, "
        "or 'positive'/'negative' lists)"
    )


def output_format(path: str | Path, fmt: str | None = None) -> str:
    """The format to write ``path`` in: ``fmt`` if given, else by extension."""
    if fmt is not None:
        key = fmt.lower().replace(" ", "")
        aliases = {"xml": "asap", "asapxml": "asap", "json": "geojson", "qupath": "geojson"}
        key = aliases.get(key, key)
        if key not in FORMAT_NAMES:
            raise AnnotationError(
                f"unknown annotation format {fmt!r}; choose one of {', '.join(FORMAT_NAMES)}"
            )
        return key
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_EXTENSIONS:
        raise AnnotationError(
            f"{Path(path).name}: cannot tell the format from {suffix or 'no extension'!r}; use "
            ".geojson, .json, .xml or .csv"
        )
    return WRITE_EXTENSIONS[suffix]


def write_annotations(
    path: str | Path,
    annotations: Sequence[Annotation],
    fmt: str | None = None,
    *,
    mpp: Mpp | None = None,
) -> Path:
    """Write ``annotations`` (level-0 px) to ``path`` atomically; returns the path.

    ``fmt``: "geojson", "asap", "ncrf" or "csv" (default: by extension; ``.json`` is GeoJSON).
    ``mpp`` (µm/px, a number, ``(mpp_y, mpp_x)`` or a Resolution) adds ``area_um2`` and
    ``perimeter_um`` measurements to GeoJSON and is required for CSV, whose sizes are in µm.
    """
    path = Path(path)
    kind = output_format(path, fmt)
    for index, annotation in enumerate(annotations):
        if annotation.geometry is None or annotation.geometry.is_empty:
            raise AnnotationError(f"{path.name}: annotation {index + 1} has no geometry")
        try:
            annotation.kind  # noqa: B018 - raises for geometry types no format holds
        except AnnotationError as exc:
            raise AnnotationError(f"{path.name}: annotation {index + 1}: {exc}") from exc
    if kind == "csv" and mpp is None:
        raise AnnotationError(
            f"{path.name}: a CSV summary gives sizes in µm and needs the slide's µm per pixel"
        )
    try:
        if kind == "geojson":
            write_geojson(path, annotations, mpp)
        elif kind == "asap":
            write_asap(path, annotations)
        elif kind == "ncrf":
            write_ncrf(path, annotations)
        else:
            assert mpp is not None  # checked above
            write_csv(path, annotations, mpp)
    except AnnotationError as exc:  # writers name the annotation; say which file too
        raise AnnotationError(f"{path.name}: {exc}") from exc
    return path


def summarize(annotations: Sequence[Annotation]) -> str:
    """ "35 features (24 Polygon, 11 MultiPolygon)": counts by geometry type, for one-line reports."""
    counts = Counter(a.geometry.geom_type for a in annotations)
    detail = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
    noun = "feature" if len(annotations) == 1 else "features"
    return f"{len(annotations)} {noun}" + (f" ({detail})" if detail else "")


def _starts_with(path: Path, prefix: bytes) -> bool:
    return read_bytes(path)[:512].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(prefix)
