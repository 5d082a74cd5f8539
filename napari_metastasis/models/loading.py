"""Load a model folder, refusing unsafe code, and run it on a batch, on the best device available.

The project's own models carry their weights as data (``model.safetensors``, loaded into a network
defined in the package: :mod:`.safe_weights`), so loading them runs no code from the folder. Other
folders hold TorchScript archives, and a TorchScript file is a program, not data: it can read and
write files (``torch.from_file``, ``torch.save``) like any code. So before anything of it runs, the
file is inspected (:mod:`.operator_check`): no ``__setstate__`` (which ``torch.jit.load`` would run
while opening it), and no operator outside an allowlist of pure tensor operators in any method of
any submodule. That is a filter, not a sandbox; models from outside the package also need the
user's trust once (:mod:`.trust`, asked by the CLI and the viewer, not by this library function).

At load time the network runs on two blank patches, to check that it accepts the config's input size
and returns ``num_classes`` finite values per patch: a mismatch fails here with a message naming the
field, not halfway through a slide. Every later batch is checked for one row per patch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from napari_metastasis.defaults import DEVICE_CHOICES
from napari_metastasis.errors import ModelError
from napari_metastasis.errors.policy import exception_reason as torchscript_reason
from napari_metastasis.models.contract import CONFIG_FILE, WEIGHTS_FILE, ModelConfig, load_config
from napari_metastasis.models.exported import EXPORTED_FILE, load_exported
from napari_metastasis.models.networks import first_pass_module, rest_pass_module
from napari_metastasis.models.operator_check import (
    check_torchscript_archive,
    check_torchscript_module,
)
from napari_metastasis.models.outputs import is_single_output, to_probabilities
from napari_metastasis.models.threshold import card_threshold
from napari_metastasis.models.transforms import (
    normalisation_constants,
    resize_patch,
    to_model_input,
)

logger = logging.getLogger(__name__)

#: A forward pass over one batch (or part of one).
Forward = Callable[[torch.Tensor], torch.Tensor]

#: Patches per part of a batch on the CPU: small parts keep a part's activations in the core's
#: cache (the bundled model classified 1.2-1.3x faster in parts of 16 than of 32, on two cores).
CPU_PART_SIZE = 16


class ForwardPool:
    """Threads that run parts of one batch through the network at once, on the CPU.

    Each thread runs its parts with one torch thread of its own, so the parts never wait for
    each other inside the network. One OpenMP team over all cores waits at every step for its
    slowest thread instead: whenever another program (or the slide's decoders) takes a core, the
    whole team stalls. On two shared cores the bundled model classified 88-153 patches/s split in
    two this way, 22-55 with a team of two and 62-94 with one thread; the answers are the same
    to the bit (every patch goes through the same operations, only fewer at a time).

    A batch is cut into parts of at most ``part_size`` patches (and at least ``width`` parts),
    dealt out in order to ``width`` threads (at most ``threads``); the engine's
    :class:`~napari_metastasis.pipeline.reader.ThreadTuner` sets ``width``. With a width of one
    the parts run one after the other in the caller's thread. Close the pool (or use it as a
    context manager) to end its threads.
    """

    def __init__(self, threads: int, part_size: int = CPU_PART_SIZE):
        self.threads = max(1, int(threads))
        self.width = self.threads
        self.part_size = max(1, int(part_size))
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="forward")

    def parts(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x`` cut into parts of whole patches, in order."""
        n = int(x.shape[0])
        width = max(1, min(self.width, self.threads))
        return list(torch.tensor_split(x, max(1, min(n, max(width, -(-n // self.part_size))))))

    def map(self, run: Forward, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """``run(part)`` for every part, in order; ``width`` threads at once, each with one
        torch thread and a consecutive share of the parts."""
        width = max(1, min(self.width, self.threads, len(parts)))
        if width == 1:
            return [run(part) for part in parts]
        share = -(-len(parts) // width)
        groups = [parts[k : k + share] for k in range(0, len(parts), share)]
        one_thread = _one_torch_thread(run)
        done = self._executor.map(lambda group: [one_thread(part) for part in group], groups)
        return [out for group in done for out in group]

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> ForwardPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _one_torch_thread(run: Forward) -> Forward:
    def call(part: torch.Tensor) -> torch.Tensor:
        # A new thread takes torch's process-wide count when it first runs an operator; a part
        # must run on one. (Set only where it differs: setting it also sets the process's count.)
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        with torch.inference_mode():
            return run(part)

    return call


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
        module: torch.nn.Module,
        config: ModelConfig,
        *,
        folder: Path | None = None,
        name: str = "",
        device: torch.device,
        positive_class: str | int | None = None,
        amp: bool = True,
    ):
        self.module = module
        #: the network's cheap first pass (two of the bundled ensemble's eight views), or None,
        #: and the rest of the network's views (with the first pass's: the full model)
        self.first_pass = first_pass_module(module)
        self.rest_pass = rest_pass_module(self.first_pass) if self.first_pass else None
        self.backend = "torch"  # or "onnxruntime" (:meth:`use_onnxruntime`)
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
        self._scale, self._shift = normalisation_constants(
            mean, std, device, self.config.input_size[1]
        )

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

    def forward(
        self,
        x: torch.Tensor,
        pool: ForwardPool | None = None,
        *,
        first_pass: bool = False,
        rest_pass: bool = False,
    ) -> torch.Tensor:
        """Prepared float input -> probabilities on the device (float32).

        With a :class:`ForwardPool` (CPU only) the batch is split into ``pool.width`` parts run
        at once, one torch thread each. ``first_pass``: the network's cheap first pass
        (:attr:`first_pass`) instead of the whole network; ``rest_pass``: the rest of its views
        (:attr:`rest_pass`; :func:`~.networks.combine_passes` makes the full model's answer of
        both). The network must return one row of ``num_classes`` logits per patch; anything
        else, or a failure inside the network, is a :class:`ModelError` naming the model and the
        real reason.
        """
        network = self.first_pass if first_pass else self.rest_pass if rest_pass else self.module
        if network is None:
            raise ValueError(f"model {self.name} has no first pass")
        try:
            with self._lock, torch.inference_mode(), self._autocast():
                if pool is None or self.device.type != "cpu":
                    logits = network(x)
                else:
                    parts = pool.map(network, pool.parts(x))
                    tensors = all(isinstance(t, torch.Tensor) and t.ndim for t in parts)
                    logits = torch.cat(parts) if tensors else parts[0]  # else: refused below
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise
            raise ModelError(
                f"model {self.name}: the network failed on a batch of {x.shape[0]} patches "
                f"({torchscript_reason(exc)})"
            ) from exc
        expected = (x.shape[0], self.config.num_classes)
        if not isinstance(logits, torch.Tensor) or not _one_row_per_patch(logits, expected):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ModelError(
                f"model {self.name}: the network returned {got} for a batch of {x.shape[0]} "
                f"patches; it must return one row of {self.config.num_classes} values per patch "
                f"{expected}"
            )
        return to_probabilities(logits)  # softmax, or a sigmoid for one-output models (WSInfer)

    def predict(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Probabilities (N, num_classes) for a batch of patches (see the class docstring)."""
        if isinstance(batch, torch.Tensor) and batch.is_floating_point():
            x = batch.to(self.device, non_blocking=True)
        else:
            x = self.prepare(batch)
        return self.forward(x).cpu().numpy()

    def use_onnxruntime(self) -> LoadedModel:
        """Run the network (and its first pass and rest) through ONNX Runtime on the CPU
        (:mod:`.onnx_runtime`; the package's own models only). Returns self; on a
        :class:`ModelError` nothing has changed (the three graphs replace torch's together)."""
        from napari_metastasis.models.onnx_runtime import onnx_network

        weights = self._own_weights()
        if self.device.type != "cpu" or weights is None:
            raise ModelError(
                f"model {self.name}: ONNX Runtime runs only the package's own models "
                "(model.safetensors) on the CPU; use --backend torch"
            )
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        size = self.input_size
        module = onnx_network(self.module, digest, size)
        first_pass, rest_pass = self.first_pass, self.rest_pass
        if first_pass is not None and rest_pass is not None:
            first_pass = onnx_network(first_pass, digest, size)  # type: ignore[assignment]
            rest_pass = onnx_network(rest_pass, digest, size)  # type: ignore[assignment]
        self.module = module  # type: ignore[assignment]
        self.first_pass, self.rest_pass = first_pass, rest_pass
        self.backend = "onnxruntime"
        return self

    def use_fastest_backend(self) -> LoadedModel:
        """``--backend auto``: ONNX Runtime where it runs this model (the package's own networks
        on the CPU, with the ``onnxruntime`` package installed), else torch. ONNX Runtime gives
        the same probabilities to float rounding (within 1e-5 on probe patches at every load)
        and is 1.35x torch's pass on two cores (``resources/bench_cpu_options.json``); where it
        cannot run, or its graph does not answer as torch does, torch runs, as before. Returns
        self."""
        try:  # use_onnxruntime checks the device, the weights and the package itself
            self.use_onnxruntime()
        except Exception as exc:  # noqa: BLE001 - any failure of an optional speed-up: torch runs
            logger.info("model %s: ONNX Runtime not used (%s); torch runs it", self.name, exc)
        return self

    def _own_weights(self) -> Path | None:
        """The folder's ``model.safetensors`` (the package's own network), or None."""
        from napari_metastasis.models.safe_weights import SAFETENSORS_FILE

        weights = self.folder / SAFETENSORS_FILE if self.folder else None
        return weights if weights is not None and weights.is_file() else None

    def to(self, device: str | torch.device) -> LoadedModel:
        """Move to another device (returns self)."""
        target = select_device(device)
        if self.backend != "torch":
            if target.type != "cpu":
                raise ModelError(f"model {self.name}: ONNX Runtime runs on the CPU only")
            return self
        self.module = self.module.to(target)
        self._set_device(target)
        return self

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()


def load_model(
    path_or_name: str | Path = "default",
    *,
    device: str | torch.device | None = "auto",
    positive_class: str | int | None = None,
    amp: bool = True,
    sha256: str | None = None,
    backend: str = "auto",
) -> LoadedModel:
    """Load a model folder (or a registered model's name, see :func:`available_models`).

    ``sha256``: the weights file must still have this digest (the one the user trusted).
    ``backend``: ``auto`` (ONNX Runtime where it runs this model, else torch:
    :meth:`LoadedModel.use_fastest_backend`), ``torch``, or ``onnxruntime``
    (:meth:`LoadedModel.use_onnxruntime`, an error where it cannot run).
    """
    from napari_metastasis.models.registry import resolve_model
    from napari_metastasis.models.safe_weights import build_safe_module, has_safe_weights

    folder = resolve_model(path_or_name)
    config = load_config(folder)
    torch_device = select_device(device)
    weights = folder / WEIGHTS_FILE
    exported = folder / EXPORTED_FILE
    if has_safe_weights(folder, config):
        # The project's own models carry weights as data (model.safetensors): no code from the
        # folder runs; the network is the package's.
        module = build_safe_module(folder, config).to(torch_device)
    elif exported.is_file():  # torch.export's program is preferred: TorchScript is deprecated
        module = load_exported(exported, torch_device, sha256=sha256)
    elif weights.is_file():
        module = _load_torchscript(folder, weights, torch_device, sha256)
    else:
        raise ModelError(f"{folder}: no {WEIGHTS_FILE} (or {EXPORTED_FILE}) in the model folder")
    if torch_device.type in ("cuda", "cpu"):
        with contextlib.suppress(Exception):  # not every scripted module accepts memory_format
            module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model = LoadedModel(
        module,  # type: ignore[arg-type]  # an eager network serves like a scripted one
        config,
        folder=folder,
        device=torch_device,
        positive_class=positive_class,
        amp=amp,
    )
    check_output_shape(model)
    if backend == "onnxruntime":
        model.use_onnxruntime()
        check_output_shape(model)
    elif backend == "auto":
        model.use_fastest_backend()
        check_output_shape(model)
    elif backend != "torch":
        raise ModelError(f"unknown backend {backend!r}; use auto, torch or onnxruntime")
    return model


def _one_row_per_patch(logits: torch.Tensor, expected: tuple[int, int]) -> bool:
    """(N, num_classes), or (N,) / (N, 1) for a one-class model."""
    if tuple(logits.shape) == expected:
        return True
    return expected[1] == 1 and is_single_output(logits) and logits.shape[0] == expected[0]


def _load_torchscript(
    folder: Path, weights: Path, torch_device: torch.device, sha256: str | None
) -> torch.jit.ScriptModule:
    source = f"{folder.name}/{WEIGHTS_FILE}"
    try:
        raw = weights.read_bytes()  # the bytes inspected are the bytes loaded
    except OSError as exc:
        raise ModelError(f"{weights}: cannot read the model file ({exc.strerror or exc})") from exc
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise ModelError(f"{source}: the file changed after it was checked; run again")
    check_torchscript_archive(raw, source)  # before torch.jit.load, which runs __setstate__
    try:
        module = torch.jit.load(io.BytesIO(raw), map_location=torch_device)
    except Exception as exc:  # torch raises RuntimeError/ValueError/zipfile errors
        raise ModelError(
            f"{source}: not a loadable TorchScript model ({torchscript_reason(exc)})"
        ) from exc
    del raw
    check_torchscript_module(module, source)  # before anything of it runs
    module.eval()
    return module


def check_output_shape(model: LoadedModel) -> None:
    """Run two blank patches through the network: it must give (2, num_classes) finite values."""
    h, w = model.input_size
    source = f"{model.folder.name if model.folder else model.name}/{CONFIG_FILE}"
    network = f"{model.folder.name if model.folder else model.name}/{WEIGHTS_FILE}"
    batch = np.full((2, h, w, 3), 255, np.uint8)
    batch[1] = 128  # one white and one grey patch: a batch of two different inputs
    try:
        with model._lock, torch.inference_mode():
            out = model.module(model.prepare(batch))
    except Exception as exc:
        raise ModelError(
            f"{source}: the network does not accept a (2, 3, {h}, {w}) batch as the config's "
            f"patch_size_pixels/Resize say ({torchscript_reason(exc)})"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim not in (1, 2):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"{network}: the network must return (N, num_classes) logits, got {shape}")
    if out.shape[0] != 2:
        raise ModelError(
            f"{network}: the network returned {tuple(out.shape)} for a batch of 2 patches; it "
            "must return one row per patch (N, num_classes)"
        )
    values = 1 if out.ndim == 1 else out.shape[1]  # (N,): one logit per patch, as WSInfer allows
    if values != model.config.num_classes:
        raise ModelError(
            f"{source}: field 'num_classes' is {model.config.num_classes} but the network returns "
            f"{values} values per patch"
        )
    probabilities = to_probabilities(out)
    if not bool(torch.isfinite(probabilities).all()):
        raise ModelError(
            f"model {model.name}: the network returns non-finite values (NaN or infinity) for a "
            "blank patch at load time; its weights are probably broken"
        )
