"""Load the project's own models from weights stored as data, into a network defined here.

A TorchScript file is a program (PyTorch's security policy says so: it can read and write files),
and a pickled checkpoint can run any Python at all. The project's own models therefore ship
``model.safetensors`` (a header of names, shapes and dtypes, then raw tensor bytes: nothing to
execute) and name their network in ``config.json`` (``napari_metastasis_network``: a name from the
package and a few whole numbers). Loading such a folder builds the network from the package's code
and copies the tensors in; no code from the folder ever runs. The folder's ``torchscript_model.pt``
is there only for WSInfer and other tools.
"""

from __future__ import annotations

from pathlib import Path

import torch

from napari_metastasis.errors import ModelError
from napari_metastasis.models.contract import CONFIG_FILE, ModelConfig

SAFETENSORS_FILE = "model.safetensors"
#: Key in config.json naming the package network the safetensors file fills.
NETWORK_KEY = "napari_metastasis_network"


def has_safe_weights(folder: Path, config: ModelConfig) -> bool:
    """True when the folder carries weights as data for a network named in its config."""
    return NETWORK_KEY in config.extra and (Path(folder) / SAFETENSORS_FILE).is_file()


def build_safe_module(folder: Path, config: ModelConfig) -> torch.nn.Module:
    """The package's network named in the config, filled with the folder's safetensors weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from napari_metastasis.models.networks import build_from_spec

    folder = Path(folder)
    spec = config.extra.get(NETWORK_KEY)
    try:
        if not isinstance(spec, dict):
            raise ValueError(f"must be an object, got {spec!r}")
        module = build_from_spec(spec)
    except ValueError as exc:
        raise ModelError(f"{folder.name}/{CONFIG_FILE}: field '{NETWORK_KEY}': {exc}") from None
    path = folder / SAFETENSORS_FILE
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(
            f"{folder.name}/{SAFETENSORS_FILE}: not a readable safetensors file ({exc})"
        ) from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "shape mismatch"
        raise ModelError(
            f"{folder.name}/{SAFETENSORS_FILE}: the weights do not fit the network named in "
            f"{CONFIG_FILE} ({reason})"
        ) from None
    return module.eval()
