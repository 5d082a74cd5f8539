"""Validation split **by slide**: patches of one slide are never on both sides.

Neighbouring patches of one slide share stain, scanner and patient; a random patch split lets the
network recognise the slide instead of the tissue and reports an AUC nobody will see on new slides.
"""

from __future__ import annotations

import numpy as np

from napari_metastasis.errors import DatasetError


def split_by_slide(
    slides: np.ndarray,
    labels: np.ndarray,
    *,
    val_slides: list[str] | None = None,
    val_fraction: float = 0.25,
    seed: int = 0,
    tries: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """(train_index, val_index) with whole slides on each side.

    With ``val_slides`` those slides are the validation set. Otherwise slides are drawn at random
    (seeded) until about ``val_fraction`` of the patches are in validation, preferring a draw where
    both sides hold both classes (so the validation ROC AUC exists and training sees tumour).
    """
    slides = np.asarray(slides, dtype=str)
    labels = np.asarray(labels)
    names = np.unique(slides)
    if val_slides:
        # Camelyon16's own files write Tumor_064 and tumor_064: names match whatever their case
        known = {name.casefold() for name in names}
        unknown = sorted(s for s in val_slides if s.casefold() not in known)
        if unknown:
            raise DatasetError(f"validation slide(s) not in the dataset: {', '.join(unknown)}")
        wanted = {s.casefold() for s in val_slides}
        val = np.array([s.casefold() in wanted for s in slides], dtype=bool)
        return np.flatnonzero(~val), np.flatnonzero(val)
    if len(names) < 2:
        raise DatasetError(
            f"a validation split by slide needs at least two slides; the dataset has {len(names)}"
        )
    rng = np.random.default_rng(seed)
    target = val_fraction * len(slides)
    best, best_cost = None, np.inf
    for _ in range(tries):
        order = rng.permutation(names)
        counts = np.array([(slides == n).sum() for n in order])
        k = int(np.clip(np.searchsorted(np.cumsum(counts), target) + 1, 1, len(names) - 1))
        val = np.isin(slides, order[:k])
        both = all(len(np.unique(labels[sel])) == 2 for sel in (val, ~val))
        cost = abs(val.sum() - target) / len(slides) + (0 if both else 10)
        if cost < best_cost:
            best, best_cost = val, cost
    assert best is not None  # tries >= 1
    return np.flatnonzero(~best), np.flatnonzero(best)
