"""The config's transform, split where it is cheapest to run.

``Resize`` runs on uint8 pixels before the network, with PIL's bilinear filter with antialiasing (as
torchvision does on PIL images in WSInfer): one patch at a time with PIL (:func:`resize_patch`), or
a whole batch at once with torch (:func:`resize_batch`, the same pixels on the CPU).
``ToTensor`` and ``Normalize`` run on the device on the whole batch, after the uint8 batch has been
copied there (four times fewer bytes than float32).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def resize_patch(patch: np.ndarray, size: tuple[int, int], resample: int = 2) -> np.ndarray:
    """RGB uint8 (h, w, 3) -> (size[0], size[1], 3); a no-op when it already has that size.

    ``resample`` is Pillow's filter code, as a config's ``Resize`` ``interpolation`` gives it
    (default 2, bilinear: torchvision's default).
    """
    height, width = size
    if patch.shape[0] == height and patch.shape[1] == width:
        return patch
    image = Image.fromarray(patch).resize((width, height), Image.Resampling(resample))
    return np.asarray(image)


def resize_batch(batch: torch.Tensor, size: tuple[int, int], resample: int = 2) -> torch.Tensor:
    """uint8 (N, h, w, 3) -> uint8 (N, size[0], size[1], 3) on the batch's device, all at once.

    Bilinear with antialiasing: on the CPU torch's uint8 kernel runs several times faster than
    PIL patch by patch and gives PIL's pixels exactly at whole-number ratios (2x, 4x, none); at
    other ratios (a 129-px crop to 64) its 16-bit filter weights round differently from PIL's
    22-bit ones, by one or two grey levels in up to 3 % of the values (``tests/test_transforms``).
    Elsewhere it runs in float and rounds.
    The result is an NHWC view of channels-last memory. Another ``resample`` (a config's Resize
    ``interpolation``, Pillow's filter code) is done by Pillow patch by patch, as torchvision does
    on the PIL images WSInfer feeds it.
    """
    height, width = size
    if batch.shape[1] == height and batch.shape[2] == width:
        return batch
    if resample != 2:
        pixels = batch.cpu().numpy()
        resized = np.stack([resize_patch(p, size, resample) for p in pixels])
        return torch.from_numpy(resized).to(batch.device)
    nchw = batch.contiguous().permute(0, 3, 1, 2)  # channels-last strides: torch's uint8 path
    if batch.device.type == "cpu":
        out = F.interpolate(nchw, size=(height, width), mode="bilinear", antialias=True)
    else:
        out = F.interpolate(nchw.float(), size=(height, width), mode="bilinear", antialias=True)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out.permute(0, 2, 3, 1)


def normalisation_constants(
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    device: torch.device,
    width: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) such that ``x_uint8 * scale + shift`` is ToTensor then Normalize, for one
    NHWC row of ``width`` pixels: each a (3 * width,) vector of the 3 channel constants repeated,
    as :func:`to_model_input` wants them (made once per model, not per batch)."""
    mean_t = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0), dtype=torch.float32)
    std_t = torch.tensor(std if std is not None else (1.0, 1.0, 1.0), dtype=torch.float32)
    scale = (1.0 / (255.0 * std_t)).repeat(width).to(device)
    shift = (-mean_t / std_t).repeat(width).to(device)
    return scale, shift


def to_model_input(
    batch: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    *,
    channels_last: bool = True,
) -> torch.Tensor:
    """uint8 (N, H, W, 3) on the target device -> normalised float32 (N, 3, H, W).

    ToTensor and Normalize are fused into one multiply-add on the NHWC pixels as they come, with
    each row's ``W x 3`` interleaved channel constants laid out as one vector
    (:func:`normalisation_constants`): the kernel then runs along rows of ``3 W`` contiguous
    values and vectorises. Broadcasting 3 constants along a last axis of 3 instead ran 6x slower
    on a CPU (13.6 against 2.1 µs per 64-px patch), where this step is most of the main thread's
    work for a cheap model. Permuting the result gives NCHW with channels-last strides, which is
    what cuDNN's and oneDNN's fastest convolutions want, so it is kept that way; with
    ``channels_last=False`` it is made plainly contiguous.
    """
    n, h, w, c = batch.shape
    if scale.numel() != w * c:  # constants made for another width: repeat them for this one
        scale, shift = scale[:c].repeat(w), shift[:c].repeat(w)
    rows = batch.reshape(n, h, w * c)  # a view of contiguous pixels, else one copy
    x = torch.addcmul(shift, rows, scale).view(n, h, w, c).permute(0, 3, 1, 2)
    if channels_last:
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()
