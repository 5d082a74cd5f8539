"""Reference tumour geometry for a slide, from any annotation file the annotations package reads."""

from __future__ import annotations

from pathlib import Path

from shapely.geometry.base import BaseGeometry

from napari_metastasis.annotations import read_annotations, tumour_geometry

#: Words on the command line meaning "this slide has no tumour annotation".
NO_ANNOTATION = ("none", "-", "normal")


def load_tumour_geometry(path: str | Path | None) -> BaseGeometry | None:
    """Tumour polygons minus exclusions (level-0 px), or None for ``None``/"none"/"-"."""
    if path is None or str(path).lower() in NO_ANNOTATION:
        return None
    return tumour_geometry(read_annotations(path))


def geometries_by_slide(paths: list[str | Path]) -> dict[str, BaseGeometry]:
    """Slide name (the annotation file's stem, lower case) -> geometry, for patch folders."""
    return {Path(p).stem.lower(): load_tumour_geometry(p) for p in paths}
