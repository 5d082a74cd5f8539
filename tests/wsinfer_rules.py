"""What WSInfer does with a model folder, re-done here (WSInfer and torchvision are not installed).

From WSInfer's source (``wsinfer_zoo/client.py``, ``wsinfer/modellib/transforms.py``,
``data.py``, ``run_inference.py``) and its zoo's ``model-config.schema.json``:

* the config must validate against the zoo's schema: required ``spec_version`` ("1.0"),
  ``architecture``, ``num_classes`` (integer >= 1), ``patch_size_pixels`` (integer >= 1),
  ``spacing_um_px`` (number >= 0), ``class_names`` (unique strings; as many as ``num_classes``) and
  ``transform`` (items with a ``name`` among Resize, ToTensor, Normalize, an optional ``arguments``
  object, nothing else);
* a patch is read at level 0 with the side ``round(patch_size_pixels * spacing_um_px / slide_mpp)``
  and converted to an RGB PIL image;
* the transform list becomes ``torchvision.transforms.Compose([cls(**arguments) ...])`` in the
  config's order: ``Resize`` on a PIL image is Pillow's ``resize`` with the given filter (bilinear by
  default; an int size on a square patch gives a square of that side), ``ToTensor`` is
  HWC uint8 -> CHW float / 255, ``Normalize`` is (x - mean) / std per channel; there is no other step;
* the network's output gets a softmax over classes when it has more than one column, else a sigmoid.
"""

from __future__ import annotations

import jsonschema
import numpy as np
import torch
from PIL import Image

#: WSInfer zoo's model-config schema, as its rules (written out here, not copied).
MODEL_CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "spec_version": {"type": "string", "enum": ["1.0"]},
        "architecture": {"type": "string"},
        "num_classes": {"type": "integer", "minimum": 1},
        "patch_size_pixels": {"type": "integer", "minimum": 1},
        "spacing_um_px": {"type": "number", "minimum": 0},
        "class_names": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "transform": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "enum": ["Resize", "ToTensor", "Normalize"]},
                    "arguments": {"type": "object"},
                },
                "additionalProperties": False,
                "required": ["name"],
            },
        },
    },
    "required": [
        "spec_version",
        "architecture",
        "num_classes",
        "patch_size_pixels",
        "spacing_um_px",
        "class_names",
        "transform",
    ],
}


def validate_config(config: dict) -> None:
    jsonschema.validate(config, MODEL_CONFIG_SCHEMA)
    assert len(config["class_names"]) == config["num_classes"]  # ModelConfiguration.__post_init__


def slide_patch_size(config: dict, slide_mpp: float) -> int:
    """ModelConfiguration.get_slide_patch_size."""
    return round(config["patch_size_pixels"] * config["spacing_um_px"] / slide_mpp)


def _resize(image: Image.Image, size, interpolation: int = 2, max_size=None, antialias=True):
    del antialias  # Pillow always antialiases; torchvision ignores it for PIL images
    width, height = image.size
    if isinstance(size, int) or (isinstance(size, list) and len(size) == 1):
        side = size if isinstance(size, int) else size[0]
        short, long = min(width, height), max(width, height)
        new_short, new_long = side, int(side * long / short)
        if max_size is not None and new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    else:
        new_h, new_w = size
    return image.resize((new_w, new_h), interpolation)


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.array(image, dtype=np.uint8, copy=True)
    return torch.from_numpy(array).permute(2, 0, 1).float().div(255)


def _normalize(tensor: torch.Tensor, mean, std, inplace=False) -> torch.Tensor:
    del inplace
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=tensor.dtype).view(-1, 1, 1)
    return (tensor - mean_t) / std_t


_STEPS = {"Resize": _resize, "ToTensor": _to_tensor, "Normalize": _normalize}


def preprocess(config: dict, patch: np.ndarray) -> torch.Tensor:
    """One level-0 RGB uint8 patch through the config's transform, as WSInfer composes it."""
    value = Image.fromarray(patch).convert("RGB")
    for step in config["transform"]:
        value = _STEPS[step["name"]](value, **(step.get("arguments") or {}))
    assert isinstance(value, torch.Tensor), "WSInfer's transform must end in a tensor"
    return value


def probabilities(network, config: dict, patches: list[np.ndarray]) -> np.ndarray:
    """(N, C) (or (N,) for one output) probabilities WSInfer computes for level-0 patches."""
    batch = torch.stack([preprocess(config, p) for p in patches])
    with torch.no_grad():
        logits = network(batch)
    if logits.ndim > 1 and logits.shape[1] > 1:
        return torch.softmax(logits, dim=1).numpy()
    return torch.sigmoid(logits.squeeze(1)).numpy()
