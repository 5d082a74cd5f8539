"""Annotation formats (QuPath GeoJSON, ASAP XML, NCRF JSON, CSV) over one :class:`Annotation` type.

Public API (level-0 pixel geometry everywhere; µm only in :mod:`.layers`):

- :func:`read_annotations` / :func:`write_annotations`: files in and out, format by extension/content.
- :func:`tumour_geometry`: tumour polygons minus exclusions, for labelling and evaluation.
- :mod:`.layers`: exact conversion to and from napari Shapes/Points layer data in µm.
- :func:`~.crops.export_region_crops`: one image per region for review.
"""

from napari_metastasis.annotations._validate import AnnotationRepairWarning, GeometryRepairWarning
from napari_metastasis.annotations.geometry import tumour_geometry
from napari_metastasis.annotations.io import read_annotations, summarize, write_annotations
from napari_metastasis.annotations.model import EXCLUSION_CLASSES, TUMOUR_CLASSES, Annotation

__all__ = [
    "EXCLUSION_CLASSES",
    "TUMOUR_CLASSES",
    "Annotation",
    "AnnotationRepairWarning",
    "GeometryRepairWarning",
    "read_annotations",
    "summarize",
    "tumour_geometry",
    "write_annotations",
]
