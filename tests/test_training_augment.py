"""Augmentation: exact stain maths, geometry that moves image and mask together."""

from __future__ import annotations

import numpy as np
import torch
from skimage.color import hed2rgb, rgb2hed

from napari_metastasis.training.augment import (
    NO_AUGMENT,
    AugmentConfig,
    colour_jitter,
    hed_to_rgb,
    rgb_to_hed,
    sample_crops,
    to_tensor,
)


def _image(seed=0, size=16):
    return np.random.default_rng(seed).integers(0, 256, (1, size, size, 3), dtype=np.uint8)


def test_hed_matches_scikit_image():
    img = _image()
    hed = rgb_to_hed(to_tensor(img))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(hed, rgb2hed(img[0]), atol=1e-5)
    back = hed_to_rgb(torch.from_numpy(rgb2hed(img[0])).permute(2, 0, 1)[None].float())
    np.testing.assert_allclose(
        back[0].permute(1, 2, 0).numpy(), hed2rgb(rgb2hed(img[0])), atol=1e-4
    )


def test_identity_crop_and_dihedral_moves_mask_with_image():
    img = to_tensor(_image(size=8))
    x, _ = sample_crops(img, None, 8, 1.0, NO_AUGMENT, torch.Generator())
    torch.testing.assert_close(x, img, atol=1e-5, rtol=0)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :2, :3] = 1  # a corner
    stacked = torch.cat([img, img])
    masks = torch.cat([mask, mask])
    cfg = AugmentConfig(scale_jitter=0.0, shift=False)
    out, out_mask = sample_crops(stacked, masks, 8, 1.0, cfg, torch.Generator().manual_seed(3))
    for i in range(2):
        # a flip/rotation keeps the pixel values and carries the mask along exactly
        np.testing.assert_allclose(
            np.sort(out[i].flatten().numpy()), np.sort(img[0].flatten().numpy()), atol=1e-5
        )
        assert out_mask[i].sum() == 6
        ref = out[i][:, out_mask[i, 0] > 0.5]
        np.testing.assert_allclose(
            np.sort(ref.flatten().numpy()), np.sort(img[0][:, :2, :3].flatten().numpy()), atol=1e-5
        )


def test_colour_jitter_changes_colour_and_stays_in_range():
    img = to_tensor(_image(1))
    cfg = AugmentConfig(greyscale_p=1.0)
    out = colour_jitter(img, cfg, torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out[:, 0], out[:, 1])  # greyscale: equal channels
    assert torch.equal(colour_jitter(img, NO_AUGMENT, torch.Generator()), img)
