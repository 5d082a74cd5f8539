"""The config's transform, split where it is cheapest to run.

``Resize`` runs on uint8 pixels in the reader threads (PIL's bilinear filter with antialiasing, as
torchvision does on PIL images in WSInfer), so only network-sized patches travel to the device.
``ToTensor`` and ``Normalize`` run on the device on the whole batch, after the uint8 batch has been
copied there (four times fewer bytes than float32).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def resize_patch(patch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 (h, w, 3) -> (size[0], size[1], 3); a no-op when it already has that size."""
    height, width = size
    if patch.shape[0] == height and patch.shape[1] == width:
        return patch
    image = Image.fromarray(patch).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image)


def to_model_input(
    batch: torch.Tensor,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    *,
    channels_last: bool = True,
) -> torch.Tensor:
    """uint8 (N, H, W, 3) on the target device -> normalised float32 (N, 3, H, W).

    Permuting an NHWC tensor gives NCHW with channels-last strides, which is what cuDNN's fastest
    convolutions want; with ``channels_last=False`` the result is made plainly contiguous.
    """
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    if mean is not None and std is not None:
        m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = x.sub_(m).div_(s)
    if channels_last:
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()
