"""ONNX Runtime for the package's own ensembles on the CPU: the same answers, a faster pass.

``bench_cpu_options`` measured the bundled model under ONNX Runtime at 1.35x torch's pass split
over two cores (353 against 262 patches/s), with probabilities within 2e-7 of torch's: the fastest
option that keeps the answers, so it runs by default (``predict --backend auto``, the viewer,
:func:`~.loading.load_model`) wherever it can run the model: the package's own networks on the
CPU. Elsewhere (a GPU, a TorchScript model from another project, ``onnxruntime`` not installed, a
graph that does not answer as torch does) torch runs them, as ``--backend torch`` always does.

The networks are the package's own (:class:`~.networks.Ensemble` and the views of its first pass),
exported with the weights the folder's ``model.safetensors`` gave them, never a graph from the
folder: a model folder from elsewhere brings only data. An export takes seconds, so each graph is
kept in the user's cache (``$XDG_CACHE_HOME/napari-metastasis/onnx``), named by the SHA-256 of the
weights it was made from, and checked against torch on two probe patches whenever it is loaded
(a graph that answers otherwise, e.g. edited in the cache, is exported again).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_metastasis.errors import ModelError
from napari_metastasis.models.networks import Ensemble, EnsembleViews

#: ``predict --backend``: auto (the default: ONNX Runtime where it can run the model, else torch),
#: torch, or ONNX Runtime (an error where it cannot run).
BACKENDS = ("auto", "torch", "onnxruntime")
#: Largest |Δp| a cached graph may show against torch on the probe patches.
PROBE_TOLERANCE = 1e-5


class _Exportable(nn.Module):
    """Member ``j`` on view ``i`` for each ``(j, i)`` of ``passes``, probabilities averaged in that
    order, with each quarter turn written as flip + transpose (the same permutation of pixels as
    ``torch.rot90``, which ONNX's exporter lacks)."""

    def __init__(self, members: nn.ModuleList, passes: tuple[tuple[int, int], ...]):
        super().__init__()
        self.members = members
        self.passes = passes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(x[:, 0, 0, 0])
        for j, i in self.passes:
            xv = torch.flip(x, dims=[3]) if i >= 4 else x
            for _ in range(i % 4):
                xv = torch.flip(xv, dims=[3]).transpose(2, 3)
            member: Any = self.members[j]
            total = total + torch.sigmoid(member.logit(xv))
        p = (total / len(self.passes)).clamp(1e-6, 1 - 1e-6)
        z = torch.log(p) - torch.log1p(-p)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def _passes_of(network: nn.Module) -> tuple[nn.ModuleList, tuple[tuple[int, int], ...]]:
    """The (member, view) passes ``network`` averages, in its own order."""
    if isinstance(network, EnsembleViews):
        n = len(network.members)
        return network.members, tuple((i % n, i) for i in network.views)
    if isinstance(network, Ensemble):
        n = len(network.members)
        if network.tta:
            return network.members, tuple((j, i) for j in range(n) for i in range(j, 8, n))
        return network.members, tuple((j, 0) for j in range(n))
    raise ModelError("ONNX Runtime runs only the package's own networks (model.safetensors)")


class OnnxNetwork:
    """A network as an ONNX Runtime session on the CPU: (N, 3, H, W) float -> (N, 2) logits,
    callable like the torch module it replaces, from several threads at once (one intra-op
    thread each, as :class:`~.loading.ForwardPool` runs parts)."""

    def __init__(self, session: Any, views: tuple[int, ...]):
        self.session = session
        self.views = views  # of the ensemble, as EnsembleViews.views

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {"x": x.detach().cpu().contiguous().numpy()})
        return torch.from_numpy(logits)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "napari-metastasis" / "onnx"


def onnx_network(
    network: nn.Module, weights_sha256: str, input_size: tuple[int, int]
) -> OnnxNetwork:
    """``network`` (the package's ensemble, or some of its views) as an :class:`OnnxNetwork`,
    from the cache when a graph of these weights and views is there and answers as torch does."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError(
            "ONNX Runtime is not installed (pip install onnxruntime); use --backend torch"
        ) from None
    members, passes = _passes_of(network)
    views = tuple(i for _, i in passes)
    key = hashlib.sha256(f"{weights_sha256}:{passes}:{torch.__version__}".encode()).hexdigest()
    path = cache_dir() / f"{key[:32]}.onnx"
    probe = _probe(input_size)
    with torch.inference_mode():
        expected = torch.softmax(network(probe), 1).numpy()  # the torch network's own answer
    if path.is_file():
        cached = _session(ort, path.read_bytes())
        if cached is not None and _answers_like(cached, probe, expected):
            return OnnxNetwork(cached, views)
    try:
        graph = _export(_Exportable(members, passes).eval(), probe)
    except Exception as exc:  # noqa: BLE001 - the exporter's errors are many: one sentence
        raise ModelError(
            f"ONNX Runtime cannot take this model (its export failed: {exc}); use --backend torch"
        ) from None
    session = _session(ort, graph)
    if session is None or not _answers_like(session, probe, expected):
        raise ModelError("ONNX Runtime does not give this model's answers; use --backend torch")
    try:  # the cache only saves the next load a few seconds: a read-only home still runs
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(graph)
        tmp.replace(path)
    except OSError:
        pass
    return OnnxNetwork(session, views)


def _probe(input_size: tuple[int, int]) -> torch.Tensor:
    """Two patches of fixed noise in [0, 1]: torch's and the graph's answers must agree on them."""
    generator = np.random.default_rng(0)
    h, w = input_size
    return torch.from_numpy(generator.random((2, 3, h, w), dtype=np.float32))


def _export(module: nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            module,
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript-based exporter writes to files too
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
            opset_version=17,
        )
    return buffer.getvalue()


def _session(ort: Any, graph: bytes) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - a broken cached graph: exported again
        return None


def _answers_like(session: Any, probe: torch.Tensor, expected: np.ndarray) -> bool:
    try:
        (logits,) = session.run(None, {"x": probe.numpy()})
    except Exception:  # noqa: BLE001 - a graph that does not run: exported again
        return False
    got = torch.softmax(torch.from_numpy(np.asarray(logits, np.float32)), 1).numpy()
    return got.shape == expected.shape and float(np.abs(got - expected).max()) <= PROBE_TOLERANCE
