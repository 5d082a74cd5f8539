"""Annotation formats (QuPath GeoJSON, ASAP XML, NCRF JSON, CSV) over one :class:`Annotation` type."""

from .model import EXCLUSION_CLASSES, TUMOUR_CLASSES, Annotation

__all__ = ["EXCLUSION_CLASSES", "TUMOUR_CLASSES", "Annotation"]
