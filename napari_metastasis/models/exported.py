"""``torch.export`` programs (``model.pt2``): TorchScript's successor, loaded only when it is safe.

TorchScript is deprecated in torch 2.13, so a model folder may hold ``model.pt2`` (written by
``torch.export.save``) beside, or instead of, ``torchscript_model.pt``; WSInfer still needs the
TorchScript file, so the project keeps writing it too. A folder with both is run from ``model.pt2``.

``torch.export.load`` itself is not safe on files from others: weights or constants stored pickled
are read with ``torch.load(weights_only=False)``, sample inputs fall back to it when the safe load
fails, custom objects are unpickled, and an AOTInductor package would load a compiled library. So
:func:`check_archive` reads the archive's own index first and refuses anything but plain tensors,
JSON graphs and sample inputs that load with ``weights_only=True``; after loading, every operation of
the graph must be one of PyTorch's own (``aten``/``prims``), so no Python or custom operator runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import torch

from napari_metastasis.errors import ModelError
from napari_metastasis.models.operator_check import check_operator_names, exported_program_operators

EXPORTED_FILE = "model.pt2"
#: Operator namespaces an exported graph may call: PyTorch's own.
SAFE_NAMESPACES = frozenset({"aten", "prims"})
_ARCHIVE_META = {"archive_format", "archive_version", ".data/version", "byteorder"}
_ARCHIVE_META_PREFIX = (".data/serialization_id",)


def _fail(path: Path, problem: str) -> ModelError:
    return ModelError(f"{path.parent.name}/{path.name}: {problem}")


def check_archive(path: str | Path, raw: bytes | None = None) -> None:
    """Refuse a ``.pt2`` archive whose loading could run code (see the module's docstring).

    ``raw``: the file's bytes, when already read (the bytes checked are then the bytes loaded).
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw) if raw is not None else path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise _fail(path, f"not a torch.export archive ({exc})") from exc
    with archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or not all("/" in n for n in names):
            raise _fail(path, "not a torch.export archive (no single top folder)")
        root = roots.pop() + "/"
        configs = {}
        for name in names:
            inner = name[len(root) :]
            if inner in _ARCHIVE_META or inner.startswith(_ARCHIVE_META_PREFIX):
                continue
            if inner.startswith("models/") and inner.endswith(".json"):
                continue
            if inner.startswith(("data/weights/", "data/constants/")):
                if inner.endswith("_config.json"):
                    configs[inner] = archive.read(name)
                elif inner.endswith(".pt"):
                    raise _fail(path, f"{inner} is a pickled (legacy) payload; refused")
                continue
            if inner.startswith("data/sample_inputs/") and inner.endswith(".pt"):
                _check_sample_inputs(path, inner, archive.read(name))
                continue
            raise _fail(
                path, f"{inner} is not part of a plain exported program (compiled code?); refused"
            )
        if f"{root}models/model.json" not in names:
            raise _fail(path, "no exported program called 'model' in the archive")
        for inner, raw in configs.items():
            _check_payload_config(path, inner, raw)


def _check_payload_config(path: Path, inner: str, raw: bytes) -> None:
    try:
        entries = json.loads(raw)["config"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(path, f"{inner} is not a payload index ({exc})") from exc
    for key, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise _fail(path, f"{key!r} is stored pickled; refused (only plain tensors load)")
        if "constants/" in inner and not str(meta.get("path_name", "")).startswith("tensor_"):
            raise _fail(path, f"constant {key!r} is a custom object; refused")


def _check_sample_inputs(path: Path, inner: str, raw: bytes) -> None:
    try:
        torch.load(io.BytesIO(raw), weights_only=True)
    except Exception as exc:
        raise _fail(path, f"{inner} is not plain tensors ({_first_line(exc)}); refused") from exc


def load_exported(
    path: str | Path, device: torch.device, *, sha256: str | None = None
) -> torch.nn.Module:
    """The exported program at ``path`` as a callable module on ``device``, after the checks.

    ``sha256``: the file must still have this digest (the one the user trusted).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()  # the bytes inspected are the bytes loaded
    except OSError as exc:
        raise _fail(path, f"cannot read the model file ({exc.strerror or exc})") from exc
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise _fail(path, "the file changed after it was checked; run again")
    check_archive(path, raw)
    try:
        program = torch.export.load(io.BytesIO(raw))
    except Exception as exc:
        raise _fail(path, f"not a loadable torch.export program ({_first_line(exc)})") from exc
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        namespace = getattr(node.target, "namespace", None)
        if namespace not in SAFE_NAMESPACES:
            raise _fail(path, f"the graph calls {node.target!r}, not a PyTorch operator; refused")
    # PyTorch's own namespaces still hold file and storage operators (aten::from_file): the same
    # allowlist as TorchScript models, over every graph of the program
    check_operator_names(exported_program_operators(program), path.name)
    module = program.module()
    return module.to(device)


def export_program(module: torch.nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Export ``module`` (batch size free) to ``path`` with ``torch.export.save``; returns ``path``.

    The exported program is checked against ``module`` on ``example`` before it is kept.
    """
    from napari_metastasis.outputs.atomic import write_bytes_atomic

    path = Path(path)
    module = module.eval()
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    with torch.no_grad():
        if not torch.allclose(program.module()(example), module(example), atol=1e-5):
            raise RuntimeError("the exported program disagrees with the network")
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
