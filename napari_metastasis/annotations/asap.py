"""ASAP XML (the Camelyon16 annotation format) in and out.

Layout: ``ASAP_Annotations/Annotations/Annotation[@Name @Type @PartOfGroup @Color]/Coordinates/
Coordinate[@Order @X @Y]`` plus ``ASAP_Annotations/AnnotationGroups/Group[@Name @PartOfGroup
@Color]``. Facts from ASAP's own ``XmlRepository``: coordinates are placed by their ``Order``
attribute (not document order); a ``PartOfGroup`` naming an undeclared group makes ASAP drop the whole
file, so we declare every group we use; ``"None"`` means no group.

Groups (Camelyon16's conventions, as its ``AnnotationToMask`` recipe reads them: label map
``{"_0": 1, "_1": 1, "_2": 0}`` drawn in the order ``_0, _1, _2``, annotations of other groups dropped):
tumour regions are written in group ``_0`` (``_1`` stays ``_1``), exclusions (``_2``, "Exclusion",
QuPath's ``Ignore*``) in ``_2``, other classes in a group of their own name. On reading, ``_0``,
``_1``, "Tumor" and "metastases" (older Camelyon16 XML) are all tumour.

Types: Polygon, Rectangle and Spline become polygons (a spline's control points are its vertices,
as Camelyon16's own evaluation code treats them), Dot a point, PointSet a multipoint, Measurement
a two-point line. ASAP has no holes and no open polylines: on writing, a tumour polygon's holes become
separate polygons in Camelyon16's exclusion group ``_2`` (so :func:`~.geometry.tumour_geometry` of
the re-read file is the same region), and lines longer than two points are refused. The recipe paints
``_2`` last, over every tumour polygon: a hole is therefore written minus any tumour island drawn
inside it, cut into pieces without holes (see :func:`_hole_pieces`), so the recipe's mask keeps the
island.

XML is parsed with defusedxml (no entity expansion, no external entities).
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
import numpy as np
import shapely
from defusedxml import DefusedXmlException
from shapely.geometry import (
    LineString,
    MultiLineString,
    MultiPoint,
    MultiPolygon,
    Point,
    Polygon,
    box,
)
from shapely.geometry.base import BaseGeometry

from napari_metastasis.annotations import _validate as v
from napari_metastasis.annotations._files import read_bytes
from napari_metastasis.annotations._validate import AnnotationRepairWarning
from napari_metastasis.annotations.model import (
    Annotation,
    class_color,
    color_to_hex,
    hex_to_color,
    is_exclusion_class,
    is_tumour_class,
)
from napari_metastasis.errors import AnnotationError
from napari_metastasis.errors.policy import quoted
from napari_metastasis.outputs.atomic import write_bytes_atomic

POLYGON_TYPES = ("Polygon", "Rectangle", "Spline")
#: Group names Camelyon16's mask recipe labels tumour; other tumour class names are written as _0.
CAMELYON_TUMOUR_GROUPS = ("_0", "_1")
TUMOUR_GROUP = "_0"
EXCLUSION_GROUP = "_2"
NO_GROUP = "None"


# --- reading ----------------------------------------------------------------------------------
def read_asap(path: str | Path) -> list[Annotation]:
    path = Path(path)
    root = _parse(path)
    if root.tag != "ASAP_Annotations":
        raise AnnotationError(f"{path.name}: not an ASAP annotation file (root is <{root.tag}>)")
    group_colors = {}
    for group_node in root.iterfind("AnnotationGroups/Group"):
        color = hex_to_color(group_node.get("Color", ""))
        if color:
            group_colors[group_node.get("Name", "")] = color
    nodes = list(root.iterfind("Annotations/Annotation"))
    v.check_feature_count(len(nodes), path.name)
    annotations = []
    for index, node in enumerate(nodes):
        name = node.get("Name") or None
        where = f"{path.name}: annotation {index + 1}" + (f" ({quoted(name)})" if name else "")
        group: str = node.get("PartOfGroup") or NO_GROUP
        classification = None if group in ("", NO_GROUP) else group
        color = hex_to_color(node.get("Color", "")) or group_colors.get(group)
        annotations.append(
            Annotation(
                geometry=_geometry(node, where),
                classification=classification,
                name=name,
                color=color,
            )
        )
    return annotations


def _parse(path: Path) -> ET.Element:
    raw = read_bytes(path)
    try:
        return SafeET.fromstring(raw)
    except DefusedXmlException as exc:
        raise AnnotationError(
            f"{path.name}: XML uses entities or DTDs, which annotation files never need ({exc})"
        ) from exc
    except ET.ParseError as exc:
        raise AnnotationError(f"{path.name}: not valid XML ({exc})") from exc


def _geometry(node: ET.Element, where: str) -> BaseGeometry:
    kind = node.get("Type", "")
    coords = _coordinates(node, where)
    if kind in POLYGON_TYPES:
        return v.polygon(coords, [], where)
    if kind == "Dot":
        if len(coords) != 1:
            raise AnnotationError(f"{where}: a Dot needs exactly 1 coordinate, got {len(coords)}")
        return Point(coords[0])
    if kind == "PointSet":
        if not len(coords):
            raise AnnotationError(f"{where}: PointSet has no coordinates")
        return MultiPoint(coords)
    if kind == "Measurement":
        return v.line(coords, where)
    raise AnnotationError(f"{where}: unsupported annotation type {quoted(kind)}")


def _coordinates(node: ET.Element, where: str) -> np.ndarray:
    items = []
    coords = list(node.iterfind("Coordinates/Coordinate"))
    v.count_vertices(len(coords), where)
    for k, coord in enumerate(coords):
        order_text = coord.get("Order")
        try:
            order = int(order_text) if order_text is not None else k
        except ValueError:
            raise AnnotationError(
                f"{where}: Order {quoted(order_text)} is not an integer"
            ) from None
        items.append((order, _float(coord.get("X"), where), _float(coord.get("Y"), where)))
    orders = [o for o, _, _ in items]
    if len(set(orders)) != len(orders):
        raise AnnotationError(f"{where}: two coordinates share the same Order")
    items.sort(key=lambda item: item[0])
    return np.array([(x, y) for _, x, y in items], dtype=np.float64).reshape(-1, 2)


def _float(text: str | None, where: str) -> float:
    if text is None:
        raise AnnotationError(f"{where}: a Coordinate lacks its X or Y attribute")
    cleaned = text.strip()
    if "," in cleaned and "." not in cleaned:  # ASAP on a comma-decimal locale
        cleaned = cleaned.replace(",", ".")
    try:
        value = float(cleaned)
    except ValueError:
        raise AnnotationError(f"{where}: coordinate {quoted(text)} is not a number") from None
    return v.position([value, 0.0], where)[0]  # rejects NaN and infinity with the same message


# --- writing ----------------------------------------------------------------------------------
def asap_group(classification: str | None) -> str:
    """The ASAP group an annotation of this class goes in (Camelyon16 conventions)."""
    if not classification:
        return NO_GROUP
    if is_exclusion_class(classification):
        return EXCLUSION_GROUP
    if is_tumour_class(classification):
        name = classification.strip()
        return name if name in CAMELYON_TUMOUR_GROUPS else TUMOUR_GROUP
    return classification


#: Characters XML 1.0 cannot hold at all, not even as a character reference: C0 controls other
#: than tab, newline and carriage return, lone UTF-16 surrogates, U+FFFE and U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str, where: str) -> str:
    """``text`` with characters XML cannot hold replaced by U+FFFD (with a warning).

    Everything else, markup characters and line breaks included, is escaped by the writer and
    reads back exactly.
    """
    if not _NOT_XML.search(text):
        return text
    bad = sorted({f"U+{ord(c):04X}" for c in _NOT_XML.findall(text)})
    warnings.warn(
        f"{where}: {', '.join(bad[:3])} cannot be written to XML; replaced by U+FFFD",
        AnnotationRepairWarning,
        stacklevel=3,
    )
    return _NOT_XML.sub("\ufffd", text)


def to_asap_xml(annotations: Sequence[Annotation]) -> bytes:
    root = ET.Element("ASAP_Annotations")
    nodes = ET.SubElement(root, "Annotations")
    groups: dict[str, tuple[int, int, int]] = {}
    tumour = shapely.union_all(
        [
            a.geometry
            for a in annotations
            if a.is_tumour and isinstance(a.geometry, (Polygon, MultiPolygon))
        ]
    )
    for index, annotation in enumerate(annotations):
        name = annotation.name or f"Annotation {index}"
        where = f"annotation {index + 1} ({quoted(name)})"
        name = xml_safe(name, f"{where}: name")
        group = xml_safe(asap_group(annotation.classification), f"{where}: class")
        color = annotation.display_color
        for part_name, kind, part_group, coords in _parts(annotation, name, group, where, tumour):
            node = ET.SubElement(
                nodes,
                "Annotation",
                Name=part_name,
                Type=kind,
                PartOfGroup=part_group,
                Color=color_to_hex(color).upper(),
            )
            if part_group != NO_GROUP:
                groups.setdefault(part_group, class_color(part_group))
            coords_node = ET.SubElement(node, "Coordinates")
            for order, (x, y) in enumerate(coords):
                ET.SubElement(
                    coords_node, "Coordinate", Order=str(order), X=repr(float(x)), Y=repr(float(y))
                )
    group_nodes = ET.SubElement(root, "AnnotationGroups")
    for group, color in groups.items():
        node = ET.SubElement(
            group_nodes,
            "Group",
            Name=group,
            PartOfGroup=NO_GROUP,
            Color=color_to_hex(color).upper(),
        )
        ET.SubElement(node, "Attributes")
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_asap(path: str | Path, annotations: Sequence[Annotation]) -> None:
    write_bytes_atomic(path, to_asap_xml(annotations))


def _parts(
    annotation: Annotation, name: str, group: str, where: str, tumour: BaseGeometry
) -> list[tuple[str, str, str, Any]]:
    """(name, ASAP type, group, coordinates) for each ASAP annotation one of ours becomes."""
    geom = annotation.geometry
    if isinstance(geom, Point):
        return [(name, "Dot", group, [geom.coords[0]])]
    if isinstance(geom, MultiPoint):
        return [(name, "PointSet", group, [p.coords[0] for p in geom.geoms])]
    if isinstance(geom, (LineString, MultiLineString)):
        lines = [geom] if isinstance(geom, LineString) else list(geom.geoms)
        if any(len(line.coords) != 2 for line in lines):
            raise AnnotationError(
                f"{where}: ASAP XML cannot hold a line of more than 2 points; export it as GeoJSON"
            )
        return [
            (_part_name(name, k, len(lines)), "Measurement", group, line.coords)
            for k, line in enumerate(lines)
        ]
    if isinstance(geom, (Polygon, MultiPolygon)):
        polys = [geom] if isinstance(geom, Polygon) else list(geom.geoms)
        out = []
        for k, poly in enumerate(polys):
            part_name = _part_name(name, k, len(polys))
            out.append((part_name, "Polygon", group, poly.exterior.coords[:-1]))
            if poly.interiors and not annotation.is_tumour:
                raise AnnotationError(
                    f"{where}: ASAP XML can only hold holes in tumour regions (as Camelyon16's "
                    "_2 group); export it as GeoJSON"
                )
            for h, hole in enumerate(poly.interiors):
                pieces = _hole_pieces(Polygon(hole), tumour)
                for k, piece in enumerate(pieces):
                    piece_name = _part_name(f"{part_name} hole {h + 1}", k, len(pieces))
                    out.append((piece_name, "Polygon", EXCLUSION_GROUP, piece.exterior.coords[:-1]))
        return out
    raise AnnotationError(f"{where}: cannot write {geom.geom_type} geometry to ASAP XML")


def _hole_pieces(hole: Polygon, tumour: BaseGeometry) -> list[Polygon]:
    """The part of a hole that no tumour fills, as polygons without holes (what ASAP can hold).

    Camelyon16's recipe paints group ``_2`` after the tumour groups and over them, so a hole
    written whole wipes a tumour island drawn inside it. The hole minus the tumour is a ring around
    each island; such a ring is cut in two by a vertical line through the island, at a half-pixel
    x on which no pixel the recipe tests can lie, until no piece has a hole.
    """
    if not hole.intersects(tumour) or hole.intersection(tumour).area == 0:
        return [hole]  # the usual case: written as drawn
    free = hole.difference(tumour)
    stack = [p for p in _polygons(free) if p.area > 1e-9 * max(hole.area, 1.0)]
    pieces: list[Polygon] = []
    while stack:
        piece = stack.pop()
        if not piece.interiors:
            pieces.append(piece)
            continue
        rx0, _, rx1, _ = Polygon(piece.interiors[0]).bounds
        cut = np.floor((rx0 + rx1) / 2) + 0.5
        if not rx0 < cut < rx1:  # an island under a pixel wide: cut through its middle
            cut = (rx0 + rx1) / 2
        x0, y0, x1, y1 = piece.bounds
        for half in (box(x0 - 1, y0 - 1, cut, y1 + 1), box(cut, y0 - 1, x1 + 1, y1 + 1)):
            stack.extend(p for p in _polygons(piece.intersection(half)) if p.area > 0)
    return sorted(pieces, key=lambda p: p.bounds)


def _polygons(geometry: BaseGeometry) -> list[Polygon]:
    """The polygons of any geometry (lines and points of a collection dropped)."""
    if isinstance(geometry, Polygon):
        return [geometry]
    return [g for g in getattr(geometry, "geoms", []) for g in _polygons(g)]


def _part_name(name: str, k: int, count: int) -> str:
    return name if count == 1 else f"{name} part {k + 1}"
