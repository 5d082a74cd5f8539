"""Load a model folder safely and run it on a batch, on the best device available.

Networks are ``torch.export`` programs (``model.pt2``, checked by :mod:`.exported` before they load)
or TorchScript archives loaded with ``torch.jit.load``, which rebuilds the network from its
serialised code and tensors without executing arbitrary pickled Python (unlike ``torch.load`` of a
pickled module), so a model folder from a colleague cannot run code on the user's machine.

At load time the network runs once on a blank patch, to check that it accepts the config's input size
and returns ``num_classes`` values per patch: a mismatch fails here with a message naming the field,
not halfway through a slide.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError
from .contract import CONFIG_FILE, WEIGHTS_FILE, ModelConfig, load_config
from .exported import EXPORTED_FILE, load_exported
from .outputs import check_logits, to_probabilities
from .threshold import card_threshold
from .transforms import normalisation_constants, resize_patch, to_model_input

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``: CUDA when present, else Apple's MPS, else CPU. An explicit choice must exist."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError("device 'cuda' requested but no CUDA GPU is available to PyTorch")
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise ModelError("device 'mps' requested but Apple MPS is not available to PyTorch")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ModelError(f"unknown device {device!r}; use one of {', '.join(DEVICE_CHOICES)}")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


class LoadedModel:
    """A network ready for inference, with its config and device.

    ``predict`` takes either a uint8 batch of RGB patches (N, H, W, 3), numpy or torch, which gets
    the config's full transform, or a float tensor (N, 3, H, W) that is already transformed; it
    returns softmax probabilities (N, num_classes) as float32 numpy.
    """

    def __init__(
        self,
        module: torch.jit.ScriptModule,
        config: ModelConfig,
        *,
        folder: Path | None = None,
        name: str = "",
        device: torch.device,
        positive_class: str | int | None = None,
        amp: bool = True,
    ):
        self.module = module
        self.config = config
        self.folder = folder
        self.name = name or (folder.name if folder else config.architecture)
        self.positive_class_index = config.positive_class_index(positive_class)
        self._lock = threading.Lock()  # one forward pass at a time per loaded model
        self._amp_requested = amp
        self._set_device(device)

    def _set_device(self, device: torch.device) -> None:
        self.device = device
        self.amp = self._amp_requested and device.type == "cuda"
        # Channels-last helps cuDNN and oneDNN (CPU); MPS support for it is patchy.
        self.channels_last = device.type in ("cuda", "cpu")
        mean_std = self.config.normalize
        mean, std = mean_std if mean_std else (None, None)
        self._scale, self._shift = normalisation_constants(mean, std, device)

    # --- description --------------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @property
    def recommended_threshold(self) -> float | None:
        """Decision threshold the model's card recommends (``model_card.json``), if any."""
        return card_threshold(self.folder)

    @property
    def positive_class(self) -> str:
        return self.config.class_names[self.positive_class_index]

    @property
    def input_size(self) -> tuple[int, int]:
        return self.config.input_size

    def __repr__(self) -> str:
        return f"LoadedModel({self.name!r}, device={self.device}, classes={list(self.class_names)})"

    # --- inference ----------------------------------------------------------------------------
    def prepare(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> the network's float input on this model's device."""
        if isinstance(batch, np.ndarray):
            if batch.ndim != 4 or batch.shape[-1] != 3:
                raise ValueError(f"expected a (N, H, W, 3) uint8 batch, got shape {batch.shape}")
            if batch.shape[1:3] != self.input_size:
                resample = self.config.resize_interpolation
                batch = np.stack([resize_patch(p, self.input_size, resample) for p in batch])
            if not batch.flags.writeable:  # torch warns on read-only arrays (e.g. from PIL)
                batch = batch.copy()
            batch = torch.from_numpy(np.ascontiguousarray(batch))
        elif batch.shape[1:3] != self.input_size:
            return self.prepare(batch.cpu().numpy())
        batch = batch.to(self.device, non_blocking=True)
        return to_model_input(batch, self._scale, self._shift, channels_last=self.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared float input -> probabilities on the device (float32)."""
        with self._lock, torch.inference_mode(), self._autocast():
            logits = self.module(x)
        return to_probabilities(logits)  # softmax, or a sigmoid for one-output models (WSInfer)

    def predict(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Probabilities (N, num_classes) for a batch of patches (see the class docstring)."""
        if isinstance(batch, torch.Tensor) and batch.is_floating_point():
            x = batch.to(self.device, non_blocking=True)
        else:
            x = self.prepare(batch)
        return self.forward(x).cpu().numpy()

    def to(self, device: str | torch.device) -> LoadedModel:
        """Move to another device (returns self)."""
        target = select_device(device)
        self.module = self.module.to(target)
        self._set_device(target)
        return self

    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()


def load_model(
    path_or_name: str | Path = "default",
    *,
    device: str | torch.device | None = "auto",
    positive_class: str | int | None = None,
    amp: bool = True,
) -> LoadedModel:
    """Load a model folder (or a registered model's name, see :func:`available_models`)."""
    from .registry import resolve_model

    folder = resolve_model(path_or_name)
    config = load_config(folder)
    weights = folder / WEIGHTS_FILE
    exported = folder / EXPORTED_FILE
    if not weights.is_file() and not exported.is_file():
        raise ModelError(f"{folder}: no {WEIGHTS_FILE} (or {EXPORTED_FILE}) in the model folder")
    torch_device = select_device(device)
    if exported.is_file():  # torch.export's program is preferred: TorchScript is deprecated
        module = load_exported(exported, torch_device)
    else:
        try:
            module = torch.jit.load(str(weights), map_location=torch_device)
        except Exception as exc:  # torch raises RuntimeError/ValueError/zipfile errors
            raise ModelError(
                f"{folder.name}/{WEIGHTS_FILE}: not a loadable TorchScript model "
                f"({_first_line(exc)})"
            ) from exc
        module.eval()  # an exported program is already in inference form (and refuses eval())
    if torch_device.type in ("cuda", "cpu"):
        with contextlib.suppress(Exception):  # not every scripted module accepts memory_format
            module = module.to(memory_format=torch.channels_last)
    model = LoadedModel(
        module,
        config,
        folder=folder,
        device=torch_device,
        positive_class=positive_class,
        amp=amp,
    )
    check_output_shape(model)
    return model


def check_output_shape(model: LoadedModel) -> None:
    """Run one blank patch through the network: it must give (1, num_classes) finite values."""
    h, w = model.input_size
    source = f"{model.folder.name if model.folder else model.name}/{CONFIG_FILE}"
    try:
        with model._lock, torch.inference_mode():
            out = model.module(model.prepare(np.full((1, h, w, 3), 255, np.uint8)))
    except Exception as exc:
        raise ModelError(
            f"{source}: the network does not accept a (1, 3, {h}, {w}) patch as the config's "
            f"patch_size_pixels/Resize say ({_first_line(exc)})"
        ) from exc
    check_logits(out, model.config.num_classes, source)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
