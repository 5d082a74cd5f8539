"""The one annotation type every format reads into and writes from.

Geometry is a shapely object in **level-0 pixel** coordinates (what GeoJSON, ASAP XML and NCRF JSON
files hold). Conversion to the µm coordinates of napari layers happens in one place
(:mod:`napari_metastasis.annotations.layers`), never in the format modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shapely.geometry.base import BaseGeometry

#: Class names that mean "metastasis" in the formats we read (Camelyon16 uses Tumor, _0 and _1).
TUMOUR_CLASSES = frozenset({"tumor", "tumour", "metastasis", "_0", "_1"})
#: Class names that cut holes out of tumour regions (Camelyon16's _2 exclusion group).
EXCLUSION_CLASSES = frozenset({"exclusion", "_2", "normal"})


@dataclass
class Annotation:
    """One drawn or detected region, line or point set."""

    geometry: BaseGeometry
    classification: str | None = None
    name: str | None = None
    color: tuple[int, int, int] | None = None
    object_type: str = "annotation"
    measurements: dict[str, float] = field(default_factory=dict)

    @property
    def is_tumour(self) -> bool:
        return (self.classification or "").strip().lower() in TUMOUR_CLASSES

    @property
    def is_exclusion(self) -> bool:
        return (self.classification or "").strip().lower() in EXCLUSION_CLASSES
