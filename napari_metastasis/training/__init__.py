"""From slides and annotations to a model: patch datasets, labelling, balancing, augmentation,
networks, the training loop and the export to the model contract.

Each module has one job; the CLI commands (``extract``, ``train``) and the bundled-model recipe
compose them.
"""

from .labels import LabelRule, geometry_mask, label_from_mask
from .patchset import PatchSet, load_patchset, save_patchset

__all__ = [
    "LabelRule",
    "PatchSet",
    "geometry_mask",
    "label_from_mask",
    "load_patchset",
    "save_patchset",
]
