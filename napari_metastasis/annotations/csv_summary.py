"""CSV summary: one row per annotation, sizes in µm, positions in level-0 pixels.

For spreadsheets and reports, not for geometry (it holds none), so it is written but never read.
Names, classes and measurement names are written as text a spreadsheet never runs as a formula
(:mod:`napari_metastasis.outputs.csv_cells`).
Columns: id, class, name, type, area_um2, perimeter_um, centroid_x_px, centroid_y_px,
bbox_x_min_px, bbox_y_min_px, bbox_x_max_px, bbox_y_max_px, max_prob, mean_prob, then any other
measurements the annotations carry (sorted by name).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from napari_metastasis.annotations.model import Annotation
from napari_metastasis.annotations.sizes import Mpp, measure
from napari_metastasis.outputs.atomic import write_text_atomic
from napari_metastasis.outputs.csv_cells import neutralise, quote, text_cell

COLUMNS = (
    "id",
    "class",
    "name",
    "type",
    "area_um2",
    "perimeter_um",
    "centroid_x_px",
    "centroid_y_px",
    "bbox_x_min_px",
    "bbox_y_min_px",
    "bbox_x_max_px",
    "bbox_y_max_px",
    "max_prob",
    "mean_prob",
)


def summary_rows(annotations: Sequence[Annotation], mpp: Mpp) -> list[dict[str, object]]:
    rows = []
    for index, annotation in enumerate(annotations):
        geom = annotation.geometry
        sizes = measure(geom, mpp)
        centroid = geom.centroid
        x0, y0, x1, y1 = geom.bounds
        row: dict[str, object] = {
            "id": annotation.id or str(index + 1),
            "class": annotation.classification or "",
            "name": annotation.name or "",
            "type": geom.geom_type,
            "area_um2": sizes.get("area_um2", 0.0),
            "perimeter_um": sizes.get("perimeter_um", sizes.get("length_um", 0.0)),
            "centroid_x_px": centroid.x,
            "centroid_y_px": centroid.y,
            "bbox_x_min_px": x0,
            "bbox_y_min_px": y0,
            "bbox_x_max_px": x1,
            "bbox_y_max_px": y1,
        }
        for key, value in annotation.measurements.items():
            if key not in row and key != "length_um":
                row[key] = value
        rows.append(row)
    return rows


def to_csv(annotations: Sequence[Annotation], mpp: Mpp) -> str:
    rows = summary_rows(annotations, mpp)
    extra = sorted({k for row in rows for k in row} - set(COLUMNS))
    columns = [*COLUMNS, *extra]
    lines = [",".join(text_cell(c) for c in columns)]  # measurement names come from files too
    lines.extend(",".join(quote(_cell(row.get(k))) for k in columns) for row in rows)
    return "".join(f"{line}\n" for line in lines)


def write_csv(path: str | Path, annotations: Sequence[Annotation], mpp: Mpp) -> None:
    write_text_atomic(path, to_csv(annotations, mpp))


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    if isinstance(value, (int, bool)):
        return str(value)
    return neutralise(str(value))  # names and classes: never a formula in a spreadsheet
