"""The batched torch resize against PIL's per-patch resize (what WSInfer's torchvision does)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic_slides import blocky_noise

from napari_metastasis.models.transforms import resize_batch, resize_patch


def _both(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    image = blocky_noise(400, 400, block=3, seed=5)
    starts = range(0, 400 - source, 37)
    patches = np.stack([image[y : y + source, x : x + source] for y in starts for x in starts])
    batched = resize_batch(torch.from_numpy(patches), (target, target)).numpy()
    pil = np.stack([resize_patch(patch, (target, target)) for patch in patches])
    return batched.astype(int), pil.astype(int)


@pytest.mark.parametrize(("source", "target"), [(64, 32), (128, 64), (160, 80), (48, 64)])
def test_whole_number_ratios_give_pils_pixels(source, target):
    batched, pil = _both(source, target)
    np.testing.assert_array_equal(batched, pil)


@pytest.mark.parametrize(("source", "target"), [(33, 32), (129, 64), (161, 80), (100, 80)])
def test_other_ratios_stay_within_two_grey_levels_of_pil(source, target):
    """torch's uint8 kernel has 16-bit filter weights, PIL 22-bit: the rounding differs a little,
    and the docs say by how much."""
    batched, pil = _both(source, target)
    difference = np.abs(batched - pil)
    assert difference.max() <= 2
    assert 0 < (difference > 0).mean() <= 0.03
