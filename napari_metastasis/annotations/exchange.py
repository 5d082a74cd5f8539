"""Prediction results in other tools' own formats: Camelyon16's detection CSV, QuPath's tiles.

* :func:`write_camelyon16_csv`: the lesion-detection file Camelyon16's ``Evaluation_FROC.py`` reads,
  one line per detection, ``Confidence,X coordinate,Y coordinate`` with X and Y in level-0 pixels.
  The official script reads *every* line as numbers (``float``, ``int``, ``int``), so the file has
  no header line and the coordinates are whole numbers; it also reads every ``.csv`` file of the
  folder it is given and takes the slide's name from the file's, so these files go in a folder of
  their own, named ``<slide>.csv`` in the challenge's spelling (:func:`camelyon16_name`).
* :func:`tile_annotations` / :func:`write_tiles_geojson`: every classified patch as a QuPath *tile*
  object (``objectType: "tile"``) with ``measurements`` ``prob_<class>`` and the most probable class
  as its classification, the way WSInfer's QuPath extension shows model output, so QuPath's
  measurement maps colour the patches by probability. A tumour class is written as QuPath's
  built-in ``Tumor`` (the class our regions carry); the measurements keep the model's names.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from shapely.geometry import box

from napari_metastasis.annotations.geojson import write_geojson
from napari_metastasis.annotations.model import Annotation, new_id, qupath_class
from napari_metastasis.outputs.atomic import write_text_atomic

if TYPE_CHECKING:
    import pandas as pd

#: The columns of Camelyon16's detection file, in order (the file itself has no header).
CAMELYON16_COLUMNS = ("Confidence", "X coordinate", "Y coordinate")
#: Box columns of a patch table (WSInfer's), in level-0 pixels.
TILE_BOX_COLUMNS = ("minx", "miny", "width", "height")


# --- Camelyon16 ---------------------------------------------------------------------------------
def camelyon16_csv(detections: np.ndarray) -> str:
    """The text of a detection file for (K, 3) level-0 (x, y, probability) rows, most probable first."""
    detections = np.asarray(detections, dtype=np.float64).reshape(-1, 3)
    order = np.argsort(-detections[:, 2], kind="stable")
    buffer = io.StringIO()
    for x, y, p in detections[order]:
        # floored, as the script's own integer division floors: a point on the slide stays on it
        buffer.write(f"{p:.6f},{math.floor(x)},{math.floor(y)}\n")
    return buffer.getvalue()


#: Camelyon16's slide names: Tumor_001, Normal_001, Test_001 (its mirrors also write tumor_001).
_CAMELYON16_NAME = re.compile(r"^(tumor|normal|test)_(\d+)$", re.IGNORECASE)


def camelyon16_name(stem: str) -> str:
    """The challenge's spelling of a Camelyon16 slide name (``tumor_001`` -> ``Tumor_001``); any
    other name unchanged.

    Camelyon16's files write both ``Tumor_001`` and ``tumor_001`` (the slides of some mirrors are
    lower case), but ``Evaluation_FROC.py`` takes a result file for a tumour slide only when its
    name starts with ``Tumor`` (``case[0:5] == 'Tumor'``) and looks for ``<name>_Mask.tif``: a
    ``tumor_001.csv`` would be scored as a normal slide, every detection a false positive.
    """
    match = _CAMELYON16_NAME.match(stem)
    if not match:
        return stem
    return f"{match.group(1).capitalize()}_{match.group(2)}"


def write_camelyon16_csv(path: str | Path, detections: np.ndarray) -> Path:
    """Write :func:`camelyon16_csv` atomically; returns the path."""
    path = Path(path)
    write_text_atomic(path, camelyon16_csv(detections))
    return path


# --- QuPath tiles -------------------------------------------------------------------------------
def tile_annotations(
    table: pd.DataFrame, class_names: Sequence[str] | None = None
) -> list[Annotation]:
    """One QuPath tile per row of a patch table (``minx, miny, width, height, prob_<class>``).

    ``table`` is a pandas DataFrame (the engine's patch table, or WSInfer's CSV read back);
    ``class_names`` picks and orders the classes (default: every ``prob_`` column).
    """
    prob_columns = (
        [f"prob_{name}" for name in class_names]
        if class_names is not None
        else [c for c in table.columns if str(c).startswith("prob_")]
    )
    if not prob_columns:
        raise ValueError("the patch table has no prob_<class> columns")
    boxes = table[list(TILE_BOX_COLUMNS)].to_numpy(dtype=np.float64)
    probs = table[prob_columns].to_numpy(dtype=np.float64)
    names = [c[len("prob_") :] for c in prob_columns]
    tiles = []
    for (x, y, w, h), row in zip(boxes, probs, strict=True):
        top = int(np.argmax(row))
        tiles.append(
            Annotation(
                box(x, y, x + w, y + h),
                classification=qupath_class(names[top]),
                object_type="tile",
                measurements={c: float(p) for c, p in zip(prob_columns, row, strict=True)},
                id=new_id(),
            )
        )
    return tiles


def write_tiles_geojson(
    path: str | Path, table: pd.DataFrame, class_names: Sequence[str] | None = None
) -> Path:
    """Write the patch table's tiles as a QuPath GeoJSON FeatureCollection, atomically."""
    path = Path(path)
    write_geojson(path, tile_annotations(table, class_names))
    return path
