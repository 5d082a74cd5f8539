"""Does the model give the same answer for the same tissue encoded twice?

A slide converted to another format (Aperio SVS to DICOM, say) is re-encoded: JPEG again, sometimes
another colour pipeline, pixels a few grey levels apart. A pathologist expects the same regions
from both, so we compare per-patch probabilities on the patches both encodings analyse.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from napari_metastasis.models import LoadedModel


@dataclass
class EncodingAgreement:
    patches: int  # patches analysed in both encodings
    mean_abs_difference: float
    p99_abs_difference: float
    max_abs_difference: float
    regions_a: int  # regions at the threshold in each encoding
    regions_b: int
    threshold: float
    seconds_a: float  # time of each whole-slide prediction
    seconds_b: float

    def to_dict(self) -> dict:
        return asdict(self)


def compare_encodings(
    model: LoadedModel, path_a: str | Path, path_b: str | Path, threshold: float | None = None
) -> EncodingAgreement:
    """Predict both slides with ``model`` on the same grid and compare patch by patch."""
    from napari_metastasis.maps.contours import probability_contours
    from napari_metastasis.pipeline import predict_slide
    from napari_metastasis.slides.slide import Slide

    threshold = threshold if threshold is not None else (model.recommended_threshold or 0.5)
    maps, seconds = [], []
    for path in (path_a, path_b):
        with Slide(path) as slide:
            result = predict_slide(slide, model, num_workers=0)
        maps.append(result.prob_map)
        seconds.append(result.seconds)
    a, b = maps[0].values, maps[1].values
    if a.shape != b.shape:
        raise ValueError(f"the two encodings give different grids: {a.shape} vs {b.shape}")
    both = ~np.isnan(a) & ~np.isnan(b)
    diff = np.abs(a[both] - b[both])
    return EncodingAgreement(
        patches=int(both.sum()),
        mean_abs_difference=float(diff.mean()) if diff.size else float("nan"),
        p99_abs_difference=float(np.percentile(diff, 99)) if diff.size else float("nan"),
        max_abs_difference=float(diff.max()) if diff.size else float("nan"),
        regions_a=len(probability_contours(maps[0], threshold)),
        regions_b=len(probability_contours(maps[1], threshold)),
        threshold=float(threshold),
        seconds_a=seconds[0],
        seconds_b=seconds[1],
    )
