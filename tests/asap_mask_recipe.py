"""Camelyon16's mask recipe, re-done in numpy from ASAP's own source, to check our XML against it.

Camelyon16 turns its XML annotations into tumour masks with ASAP's ``AnnotationToMask.convert``,
called with the label map ``{"_0": 1, "_1": 1, "_2": 0}`` and the conversion order
``["_0", "_1", "_2"]``. What that C++ code does (``annotation/AnnotationToMask.cpp`` and
``annotation/XmlRepository.cpp`` of ASAP), step by step:

* loading (``XmlRepository::loadFromRepo``): groups are the ``AnnotationGroups/Group`` elements; an
  annotation's ``PartOfGroup`` other than ``"None"`` must name one of them, or the whole file is
  dropped; coordinates are placed by their ``Order`` attribute;
* ordering: with a name order and a label map, only annotations whose *group* (when the file
  declares groups, else whose *name*) is in the order are kept, listed group by group in that order;
* labelling: an annotation without a group is skipped when the file has groups; the label is the
  map's value for its group (0 when not in the map);
* drawing: a pixel (x, y), integer level-0 coordinates, strictly inside the annotation's bounding
  box and with a non-zero winding number (``wn_PnPoly`` over the closed ring) gets the annotation's
  label; with a conversion order, later annotations overwrite earlier ones.

Only the arithmetic is ours (vectorised over many pixels at once); the rules are ASAP's.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

CAMELYON16_LABELS = {"_0": 1, "_1": 1, "_2": 0}
CAMELYON16_ORDER = ("_0", "_1", "_2")


def _load(xml: bytes) -> tuple[list[tuple[str, str | None, np.ndarray]], bool]:
    root = ET.fromstring(xml)
    if root.tag != "ASAP_Annotations":
        raise ValueError("not an ASAP file")
    groups = {g.get("Name", "") for g in root.iterfind("AnnotationGroups/Group")}
    annotations = []
    for node in root.iterfind("Annotations/Annotation"):
        group = node.get("PartOfGroup", "")
        if group != "None" and group not in groups:
            raise ValueError(f"ASAP drops the whole file: group {group!r} is not declared")
        coords = node.findall("Coordinates/Coordinate")
        ring = np.zeros((len(coords), 2))
        for c in coords:
            ring[int(c.get("Order"))] = (float(c.get("X")), float(c.get("Y")))
        annotations.append((node.get("Name", ""), None if group == "None" else group, ring))
    return annotations, bool(groups)


def _winding_number(points: np.ndarray, ring: np.ndarray, block: int = 256) -> np.ndarray:
    """ASAP's wn_PnPoly for many points: the ring is closed by repeating its first vertex."""
    closed = np.vstack([ring, ring[:1]])
    px, py = points[None, :, 0], points[None, :, 1]
    wn = np.zeros(len(points), dtype=np.int64)
    edges = len(closed) - 1
    for start in range(0, edges, block):  # edges in blocks, all points at once
        stop = min(start + block, edges)
        x0, y0 = closed[start:stop, :1], closed[start:stop, 1:]
        x1, y1 = closed[start + 1 : stop + 1, :1], closed[start + 1 : stop + 1, 1:]
        is_left = (x1 - x0) * (py - y0) - (px - x0) * (y1 - y0)
        up = (y0 <= py) & (y1 > py) & (is_left > 0)
        down = (y0 > py) & (y1 <= py) & (is_left < 0)
        wn += up.sum(axis=0) - down.sum(axis=0)
    return wn


def annotation_to_mask(
    xml: bytes,
    points: np.ndarray,
    label_map: dict[str, int] = CAMELYON16_LABELS,
    order: tuple[str, ...] = CAMELYON16_ORDER,
) -> np.ndarray:
    """The mask value ASAP's recipe gives each (x, y) level-0 pixel in ``points``."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    annotations, has_groups = _load(xml)
    if order and label_map:
        annotations = [
            a for name in order for a in annotations if (a[1] if has_groups else a[0]) == name
        ]
    mask = np.zeros(len(points), dtype=np.uint8)
    for name, group, ring in annotations:
        if label_map and group is None and has_groups:
            continue
        label = 1
        if label_map:
            label = label_map.get(group if has_groups else name, 0)
        if len(ring) == 0:
            continue
        (x_min, y_min), (x_max, y_max) = ring.min(axis=0), ring.max(axis=0)
        in_box = (
            (points[:, 0] > x_min)
            & (points[:, 0] < x_max)
            & (points[:, 1] > y_min)
            & (points[:, 1] < y_max)
        )
        inside = in_box.copy()
        inside[in_box] = _winding_number(points[in_box], ring) != 0
        if order:
            mask[inside] = label
        else:
            mask[inside] = np.maximum(mask[inside], label)
    return mask
