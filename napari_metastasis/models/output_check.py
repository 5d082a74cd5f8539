"""Every batch a model returns is checked: NaN or infinity is an error, never "no metastasis".

A probability map with NaN in it reads as "max tumour probability nan, 0 regions", which a
pathologist could take for a clean slide. So the engine checks each batch as it arrives and stops
the slide with a :class:`~napari_metastasis.errors.ModelError` naming the model and the first bad
patch (its level-0 box), in the CLI (exit code 1) and the viewer (a notification) alike.
"""

from __future__ import annotations

import numpy as np

from napari_metastasis.errors import ModelError


def check_probabilities(
    probabilities: np.ndarray, boxes: np.ndarray, model_name: str, slide_name: str = ""
) -> None:
    """Raise if ``probabilities`` (N, C) holds a non-finite value or does not match ``boxes``."""
    probabilities = np.asarray(probabilities)
    if probabilities.shape[0] != len(boxes):
        raise ModelError(
            f"model {model_name}: returned {probabilities.shape[0]} results for a batch of "
            f"{len(boxes)} patches"
        )
    finite = np.isfinite(probabilities).all(axis=1) if probabilities.ndim == 2 else None
    if finite is None or finite.all():
        return
    bad = np.flatnonzero(~finite)
    x, y, w, h = (int(v) for v in boxes[bad[0]])
    where = f" of {slide_name}" if slide_name else ""
    value = probabilities[bad[0]][~np.isfinite(probabilities[bad[0]])][0]
    raise ModelError(
        f"model {model_name}: non-finite output ({value}) for the patch at level-0 x={x}, y={y} "
        f"({w}×{h} px){where}"
        + (f" and {len(bad) - 1} more patches of this batch" if len(bad) > 1 else "")
        + "; the model is broken for this input, so no result is written"
    )
