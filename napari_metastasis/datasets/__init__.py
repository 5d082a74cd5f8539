"""Labelled patch sets: where they come from (slides with annotations, patch folders, PCam/Kaggle),
how they are labelled, and their folder format on disk.

Training fits networks to these sets and evaluation scores models on them, so the data layer lives
here, below both, and neither imports the other for it.
"""

from napari_metastasis.datasets.labels import LabelRule, geometry_mask, label_from_mask
from napari_metastasis.datasets.patchset import PatchSet, load_patchset, save_patchset

__all__ = [
    "LabelRule",
    "PatchSet",
    "geometry_mask",
    "label_from_mask",
    "load_patchset",
    "save_patchset",
]
