"""Run a model (in the contract) over a patch dataset and score it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from napari_metastasis.datasets.ingest import resample_patch
from napari_metastasis.datasets.patchset import PatchSet
from napari_metastasis.errors import DatasetError

if TYPE_CHECKING:
    from napari_metastasis.models import LoadedModel


def model_inputs(patches: PatchSet, patch_px: int, spacing_um: float) -> np.ndarray:
    """Each patch's centre at the model's spacing and size: (N, P, P, 3) uint8."""
    try:
        return np.stack(
            [resample_patch(p, patches.spacing_um, spacing_um, patch_px) for p in patches.images]
        )
    except DatasetError as exc:
        raise DatasetError(f"dataset patches do not fit the model's input: {exc}") from None


def predict_dataset(model: LoadedModel, patches: PatchSet, batch_size: int = 256) -> np.ndarray:
    """Tumour probability per patch from a :class:`~napari_metastasis.models.LoadedModel`."""
    cfg = model.config
    inputs = model_inputs(patches, cfg.patch_size_pixels, cfg.spacing_um_px)
    out = [
        model.predict(inputs[i : i + batch_size])[:, model.positive_class_index]
        for i in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0)
