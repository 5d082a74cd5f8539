"""Augmentation for H&E patches, in plain torch on whole batches.

Lymph-node slides from other hospitals differ from ours mostly in stain colour and intensity and a
little in scale, never in orientation. So a batch gets, per patch:

* geometry, in one ``grid_sample`` (image and tumour mask together): a random crop position, any of
  the 8 flips/90° rotations, and a small scale jitter (which also maps the dataset's µm/px onto the
  model's);
* colour: strong HED jitter (each stain's optical density scaled by up to ±50 % and shifted), mild
  brightness/contrast/saturation jitter, and random greyscale, so the network cannot lean on hue;
* encoding: per-channel gamma and a near-identity 3x3 colour mix (what a different scanner ICC
  profile or colour pipeline does), and JPEG re-encoding at a random quality (what converting a
  slide to DICOM or another format does), so the same tissue encoded twice gets the same answer.

The stain matrices are scikit-image's (Ruifrok & Johnston), so ``rgb2hed`` gives the same numbers.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.color import hed_from_rgb, rgb_from_hed

_HED_FROM_RGB = torch.tensor(hed_from_rgb, dtype=torch.float32)
_RGB_FROM_HED = torch.tensor(rgb_from_hed, dtype=torch.float32)
_LOG_ADJUST = math.log(1e-6)  # skimage's optical-density scaling
_GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation (0 switches one off)."""

    flips: bool = True  # flips and 90-degree rotations (the dihedral group)
    scale_jitter: float = 0.1  # zoom factor drawn in [1 - s, 1 + s]
    shift: bool = True  # random crop position inside the source patch
    hed_scale: float = 0.5  # each stain's density x U(1 - h, 1 + h)
    hed_shift: float = 0.015  # plus U(-d, d) optical density
    brightness: float = 0.1
    contrast: float = 0.15
    saturation: float = 0.2
    greyscale_p: float = 0.15
    gamma: float = 0.0  # per-channel gamma in [1 - g, 1 + g] (display/ICC-like curve)
    colour_mix: float = 0.0  # off-diagonal terms of a 3x3 colour matrix in [-m, m]
    jpeg_p: float = 0.0  # share of crops re-encoded as JPEG
    jpeg_quality_min: int = 60  # quality drawn in [jpeg_quality_min, 95]
    #: share of the JPEG re-encodings made at twice the model's resolution (then halved): a slide
    #: re-encoded at 0.5 µm/px and read at 1 µm/px has its JPEG artefacts at that finer scale
    jpeg_fine_share: float = 0.0
    blur_p: float = 0.0  # share of crops blurred (a softer scan or focus)
    blur_sigma: float = 1.0  # Gaussian sigma in px drawn in [0.2, blur_sigma]

    def to_dict(self) -> dict:
        return asdict(self)


NO_AUGMENT = AugmentConfig(
    flips=False,
    scale_jitter=0.0,
    shift=False,
    hed_scale=0.0,
    hed_shift=0.0,
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    greyscale_p=0.0,
    gamma=0.0,
    colour_mix=0.0,
    jpeg_p=0.0,
)


def _dihedral(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 2) random rotations by multiples of 90° combined with an optional flip."""
    k = torch.randint(0, 4, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
    angle = k.float() * (math.pi / 2)
    cos, sin = torch.cos(angle).round(), torch.sin(angle).round()
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    rot[:, :, 0] = rot[:, :, 0] * flip[:, None]
    return rot


def sample_crops(
    images: torch.Tensor,
    masks: torch.Tensor | None,
    crop_px: int,
    zoom: float,
    config: AugmentConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Crop ``crop_px`` patches from (N, 3, S, S) sources (and (N, 1, S, S) masks).

    ``zoom`` is output µm per px over source µm per px (model spacing / dataset spacing): 1.0 takes
    pixels as they are. The crop covers ``crop_px * zoom`` source pixels, jittered in scale, moved
    at random within the source, and turned/flipped.
    """
    n, _, size, _ = images.shape
    ratio = crop_px * zoom / size  # crop side as a fraction of the source side
    theta = torch.zeros(n, 2, 3)
    scale = torch.full((n,), ratio)
    if config.scale_jitter > 0:
        scale = scale * (1 + (torch.rand(n, generator=generator) * 2 - 1) * config.scale_jitter)
    linear = torch.eye(2).expand(n, 2, 2).clone()
    if config.flips:
        linear = _dihedral(n, generator)
    theta[:, :, :2] = linear * scale[:, None, None]
    if config.shift:
        room = (1 - scale).clamp(min=0)
        theta[:, :, 2] = (torch.rand(n, 2, generator=generator) * 2 - 1) * room[:, None]
    grid = F.affine_grid(theta, [n, 3, crop_px, crop_px], align_corners=False)
    out = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    out_masks = None
    if masks is not None:
        out_masks = F.grid_sample(
            masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
    return out, out_masks


def _mix_channels(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """out[:, d] = sum_c images[:, c] * matrix[c, d], as a 1x1 convolution (faster than einsum)."""
    return F.conv2d(images, matrix.T.contiguous()[:, :, None, None])


def rgb_to_hed(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> stain densities, as skimage.color.rgb2hed."""
    rgb = rgb.clamp(min=1e-6)
    od = torch.log(rgb) / _LOG_ADJUST
    return _mix_channels(od, _HED_FROM_RGB).clamp(min=0)


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hed`, as skimage.color.hed2rgb."""
    log_rgb = -(hed * -_LOG_ADJUST)
    log_rgb = _mix_channels(log_rgb, _RGB_FROM_HED)
    return torch.exp(log_rgb).clamp(0, 1)


def colour_jitter(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Stain (HED), brightness/contrast/saturation jitter and random greyscale on (N, 3, H, W)."""
    n = images.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    out = images
    if config.hed_scale > 0 or config.hed_shift > 0:
        hed = rgb_to_hed(out)
        alpha = uniform(1 - config.hed_scale, 1 + config.hed_scale, 3, 1, 1)
        beta = uniform(-config.hed_shift, config.hed_shift, 3, 1, 1)
        out = hed_to_rgb(hed * alpha + beta)
    if config.brightness > 0:
        out = out * uniform(1 - config.brightness, 1 + config.brightness, 1, 1, 1)
    if config.contrast > 0:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * uniform(1 - config.contrast, 1 + config.contrast, 1, 1, 1) + mean
    grey = (out * _GREY).sum(1, keepdim=True)
    if config.saturation > 0:
        sat = uniform(1 - config.saturation, 1 + config.saturation, 1, 1, 1)
        out = (out - grey) * sat + grey
    if config.greyscale_p > 0:
        pick = (torch.rand(n, generator=generator) < config.greyscale_p).view(n, 1, 1, 1)
        out = torch.where(pick, grey.expand_as(out), out)
    return encoding_jitter(out.clamp(0, 1), config, generator)


def encoding_jitter(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """ICC-like colour shifts (gamma per channel, a near-identity colour matrix) and JPEG
    re-encoding of (N, 3, H, W) RGB in [0, 1]: the differences between two encodings of one slide."""
    n = images.shape[0]
    out = images
    if config.gamma > 0:
        g = 1 + (torch.rand(n, 3, 1, 1, generator=generator) * 2 - 1) * config.gamma
        out = out.clamp(min=1e-6) ** g
    if config.colour_mix > 0:
        mix = (torch.rand(n, 3, 3, generator=generator) * 2 - 1) * config.colour_mix
        mix = mix + torch.eye(3) - torch.diag_embed(torch.diagonal(mix, dim1=1, dim2=2))
        mix = mix / mix.sum(dim=2, keepdim=True)  # rows sum to 1: white stays white
        out = torch.einsum("nij,njhw->nihw", mix, out)
    out = out.clamp(0, 1)
    if config.blur_p > 0:
        out = _random_blur(out, config, generator)
    if config.jpeg_p > 0:
        pick = torch.rand(n, generator=generator) < config.jpeg_p
        qualities = torch.randint(config.jpeg_quality_min, 96, (n,), generator=generator)
        fine = torch.rand(n, generator=generator) < config.jpeg_fine_share
        chosen = torch.nonzero(pick).flatten()
        if len(chosen):
            out = out.clone()
            for finer in (False, True):
                part = chosen[fine[chosen] == finer]
                if len(part):
                    out[part] = _jpeg_batch(out[part], qualities[part], 2 if finer else 1)
    return out


def _jpeg_batch(images: torch.Tensor, qualities: torch.Tensor, scale: int) -> torch.Tensor:
    """JPEG round trip of (n, 3, H, W) in [0, 1], encoded at ``scale`` times the size."""
    h, w = images.shape[-2:]
    x = F.interpolate(images, scale_factor=scale, mode="bilinear") if scale > 1 else images
    batch = x.clamp(0, 1).permute(0, 2, 3, 1).mul(255).round().to(torch.uint8).numpy()
    coded = np.stack([jpeg_roundtrip(b, int(q)) for b, q in zip(batch, qualities, strict=True)])
    y = torch.from_numpy(coded).permute(0, 3, 1, 2).float().div_(255.0)
    return F.interpolate(y, size=(h, w), mode="area") if scale > 1 else y


def _random_blur(
    images: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Gaussian blur of a share of (N, 3, H, W) crops, each with its own sigma."""
    n = images.shape[0]
    pick = torch.nonzero(torch.rand(n, generator=generator) < config.blur_p).flatten()
    if not len(pick):
        return images
    sigma = 0.2 + torch.rand(len(pick), generator=generator) * max(config.blur_sigma - 0.2, 0)
    radius = max(1, int(np.ceil(3 * config.blur_sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(3, 0)  # (3k, taps)
    x = images[pick].reshape(1, -1, *images.shape[-2:])
    groups = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel[:, None, None, :], groups=groups)
    x = F.conv2d(x, kernel[:, None, :, None], groups=groups)
    out = images.clone()
    out[pick] = x.reshape(len(pick), 3, *images.shape[-2:])
    return out


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 through a JPEG encoder and decoder (4:2:0 chroma, as most scanners)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1] (what the contract's ToTensor gives)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def centre_crops(images: np.ndarray, crop_px: int, zoom: float) -> torch.Tensor:
    """Deterministic centre crops at the model's spacing (for validation and evaluation)."""
    return sample_crops(to_tensor(images), None, crop_px, zoom, NO_AUGMENT, torch.Generator())[0]
