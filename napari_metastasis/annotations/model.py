"""The one annotation type every format reads into and writes from.

Geometry is a shapely object in **level-0 pixel** coordinates (what GeoJSON, ASAP XML and NCRF JSON
files hold). Conversion to the µm coordinates of napari layers happens in one place
(:mod:`napari_metastasis.annotations.layers`), never in the format modules.

Geometry kinds: ``Polygon`` / ``MultiPolygon`` (regions, holes allowed), ``LineString`` /
``MultiLineString`` (open paths) and ``Point`` / ``MultiPoint``. Readers never produce anything else.
"""

from __future__ import annotations

import colorsys
import hashlib
import uuid
from dataclasses import dataclass, field

from shapely.geometry.base import BaseGeometry

from napari_metastasis.errors import AnnotationError

#: Class names that mean "metastasis" in the formats we read (Camelyon16's ASAP groups are _0 and _1,
#: its XML files of some releases say Tumor or metastases).
TUMOUR_CLASSES = frozenset({"tumor", "tumour", "metastasis", "metastases", "_0", "_1"})
#: Class names that cut holes out of tumour regions (Camelyon16's _2 exclusion group). QuPath's
#: ignored classes (``Ignore*``, and any class whose name ends with ``*``) count too: see
#: :func:`is_exclusion_class`.
EXCLUSION_CLASSES = frozenset({"exclusion", "_2", "normal", "ignore*"})

#: Class we give tumour regions we create (NCRF "positive", contours); QuPath's own name for it.
TUMOUR_CLASS = "Tumor"
#: Class we give candidate regions the deposit decision did not confirm (named "Region N (not
#: confirmed)", with ``confirmed`` 0 among their measurements). A base class of its own, so QuPath
#: counts and measures them apart from tumour: not a derived class "Tumor: ...", which QuPath groups
#: under Tumor; not "Region*", which QuPath and our readers treat as an ignored (exclusion) class.
#: Short, so the region list keeps every column in view.
CANDIDATE_CLASS = "Candidate"
#: Class of a region above the threshold that holds no seed patch of the deposit decision: the
#: exploring view's contour, no evidence of a deposit (the verdict says "no candidate deposit").
BELOW_SEED_CLASS = "Region"
#: Class we give exclusion regions we create (NCRF "negative"); ASAP XML writes it as group ``_2``.
EXCLUSION_CLASS = "Exclusion"

#: Display colours of well-known classes (QuPath's defaults where it has one).
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "tumor": (200, 0, 0),
    "tumour": (200, 0, 0),
    "metastasis": (200, 0, 0),
    "_0": (200, 0, 0),
    "_1": (200, 0, 0),
    "metastases": (200, 0, 0),
    "exclusion": (0, 90, 200),
    "ignore*": (180, 180, 180),
    "_2": (0, 90, 200),
    "normal": (0, 90, 200),
    "stroma": (150, 200, 150),
    "immune cells": (160, 90, 160),
    "necrosis": (50, 50, 50),
    "other": (255, 200, 0),
    CANDIDATE_CLASS.lower(): (150, 150, 150),
    BELOW_SEED_CLASS.lower(): (150, 150, 150),
}
#: Colour of unclassified annotations when one must be shown (ASAP's default yellow).
UNCLASSIFIED_COLOR = (244, 250, 88)

POLYGONAL = ("Polygon", "MultiPolygon")
LINEAR = ("LineString", "MultiLineString")
PUNCTUAL = ("Point", "MultiPoint")


def new_id() -> str:
    """A fresh object id: a random UUID, as QuPath gives every object it creates."""
    return str(uuid.uuid4())


def is_tumour_class(classification: str | None) -> bool:
    return (classification or "").strip().lower() in TUMOUR_CLASSES


def qupath_class(name: str) -> str:
    """The class name we write for a model's class: QuPath's built-in ``Tumor`` for every tumour
    name (WSInfer models call it ``tumor``), so tiles and regions share one vocabulary; other
    classes as the model names them."""
    return TUMOUR_CLASS if is_tumour_class(name) else name


def is_exclusion_class(classification: str | None) -> bool:
    """Camelyon16's exclusions, and QuPath's ignored classes (``Ignore*``: a name ending in ``*``)."""
    key = (classification or "").strip().lower()
    return key in EXCLUSION_CLASSES or (len(key) > 1 and key.endswith("*"))


def class_color(classification: str | None) -> tuple[int, int, int]:
    """A stable colour for a class: the well-known table, else one derived from the name's hash.

    QuPath refuses a classification without a colour, so every class we write needs one, and the
    same class must get the same colour in every file and layer.
    """
    if not classification:
        return UNCLASSIFIED_COLOR
    key = classification.strip().lower()
    if key in CLASS_COLORS:
        return CLASS_COLORS[key]
    hue = int(hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:6], 16) / 0xFFFFFF
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 0.9)
    return (round(r * 255), round(g * 255), round(b * 255))


def color_to_hex(color: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def hex_to_color(text: str) -> tuple[int, int, int] | None:
    """``#rrggbb`` (or ``#aarrggbb`` / ``rrggbb``) -> (r, g, b); None when not a colour."""
    value = (text or "").strip().lstrip("#")
    if len(value) == 8:
        value = value[2:]
    if len(value) != 6:
        return None
    try:
        return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))
    except ValueError:
        return None


@dataclass
class Annotation:
    """One drawn or detected region, line or point set."""

    geometry: BaseGeometry
    classification: str | None = None
    name: str | None = None
    color: tuple[int, int, int] | None = None
    object_type: str = "annotation"
    measurements: dict[str, float] = field(default_factory=dict)
    #: Identifier kept across formats where they can hold one (GeoJSON feature id, CSV id, layers).
    id: str | None = None

    @property
    def is_tumour(self) -> bool:
        return is_tumour_class(self.classification)

    @property
    def is_exclusion(self) -> bool:
        return is_exclusion_class(self.classification)

    @property
    def kind(self) -> str:
        """ "polygon", "line" or "point": which napari layer (Shapes or Points) it belongs in."""
        gtype = self.geometry.geom_type
        if gtype in POLYGONAL:
            return "polygon"
        if gtype in LINEAR:
            return "line"
        if gtype in PUNCTUAL:
            return "point"
        raise AnnotationError(f"unsupported geometry type {gtype}")

    @property
    def display_color(self) -> tuple[int, int, int]:
        """The colour to draw it in: its own, else its class's."""
        return self.color if self.color is not None else class_color(self.classification)
