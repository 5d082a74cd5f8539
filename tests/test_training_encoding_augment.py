"""The augmentations that stand for another encoding of a slide: a softer scan (blur) and JPEG
re-encoding at the model's resolution or at twice it (a slide re-encoded at 0.5 µm/px and read at
1 µm/px, as the sample's DICOM copy is)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_metastasis.slides.slide import Slide
from napari_metastasis.training.augment import AugmentConfig, encoding_jitter, jpeg_roundtrip


@pytest.fixture
def tissue(svs_file) -> torch.Tensor:
    """Eight 64-px crops of the sample's tissue, as a float batch."""
    n, size = 8, 64
    with Slide(svs_file) as slide:
        region = slide.read_region(0, 600, 800, n * size, size)
    crops = [region[:, i * size : (i + 1) * size] for i in range(n)]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


def _sharpness(x: torch.Tensor) -> float:
    return float((x[..., 1:] - x[..., :-1]).abs().mean())


def test_blur_softens_texture_and_keeps_flat_colour(tissue):
    x = tissue
    blurred = encoding_jitter(x, AugmentConfig(blur_p=1.0, blur_sigma=1.0), torch.Generator())
    assert blurred.shape == x.shape
    assert _sharpness(blurred) < 0.9 * _sharpness(x)
    assert abs(float(blurred.mean() - x.mean())) < 0.01
    flat = torch.full((2, 3, 16, 16), 0.6)
    config = AugmentConfig(blur_p=1.0, blur_sigma=1.0)
    torch.testing.assert_close(encoding_jitter(flat, config, torch.Generator()), flat)


def test_fine_jpeg_is_encoded_at_twice_the_size_and_halved(tissue):
    x = tissue
    generator = torch.Generator().manual_seed(0)
    config = AugmentConfig(jpeg_p=1.0, jpeg_quality_min=70, jpeg_fine_share=1.0)
    fine = encoding_jitter(x, config, generator)
    assert fine.shape == x.shape
    # the same crops re-encoded at their own size differ from the fine ones: other artefacts
    plain = np.stack(
        [jpeg_roundtrip((c.permute(1, 2, 0) * 255).round().byte().numpy(), 80) for c in x]
    )
    plain_t = torch.from_numpy(plain).permute(0, 3, 1, 2).float() / 255
    assert float((fine - x).abs().mean()) > 0.002
    assert float((fine - plain_t).abs().mean()) > 0.002
