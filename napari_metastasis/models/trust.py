"""Which model files the user has said they trust, remembered by their SHA-256.

A TorchScript model is a program. The loader refuses operators outside an allowlist
(:mod:`.operator_check`), but that is a filter, not a sandbox, so a TorchScript model from outside
the package (a colleague's, a download, or one the user exported elsewhere) also needs the user's
explicit trust the first time it is used:
``--trust-model`` on ``predict``/``evaluate``, a question in the viewer. The answer is remembered
for that exact file (its SHA-256) in ``trusted_models.json`` in the user's config folder, so a
changed file is asked about again. Models inside the installed package, and folders whose weights
are data (``model.safetensors``, as ``train`` writes them: the loader runs no code from them), need
no trust step.

The config folder is platformdirs' user config folder for ``napari-metastasis``, or the folder in
the ``NAPARI_METASTASIS_CONFIG_DIR`` environment variable (the tests use a temporary one).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from napari_metastasis.errors import MetastasisError, UntrustedModelError
from napari_metastasis.models.contract import WEIGHTS_FILE
from napari_metastasis.models.registry import BUNDLED_DIR, resolve_model

CONFIG_ENV_VAR = "NAPARI_METASTASIS_CONFIG_DIR"
TRUST_FILE = "trusted_models.json"
_lock = threading.Lock()


def config_dir() -> Path:
    """The user's config folder for napari-metastasis (``NAPARI_METASTASIS_CONFIG_DIR`` wins)."""
    override = os.environ.get(CONFIG_ENV_VAR)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("napari-metastasis", appauthor=False))


def trust_store() -> Path:
    return config_dir() / TRUST_FILE


def is_bundled(folder: str | Path) -> bool:
    """Whether ``folder`` lies inside the installed package's bundled models."""
    try:
        Path(folder).resolve().relative_to(BUNDLED_DIR.resolve())
    except ValueError:
        return False
    return True


_digests: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256 (cached by path, size and modification time)."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    cached = _digests.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    _digests[key] = digest.hexdigest()
    return _digests[key]


def _read_store() -> dict[str, dict]:
    """sha256 -> {"path", "added"}; a missing or unreadable store trusts nothing."""
    try:
        data = json.loads(trust_store().read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    entries = data.get("trusted") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        return {}
    return {k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, dict)}


def is_trusted_digest(digest: str) -> bool:
    return digest in _read_store()


def remember(digest: str, path: str | Path) -> None:
    """Add ``digest`` (the file at ``path``) to the user's trusted models."""
    from napari_metastasis.outputs.atomic import write_text_atomic

    with _lock:
        entries = _read_store()
        entries[digest] = {"path": str(Path(path).resolve()), "added": time.strftime("%Y-%m-%d")}
        text = json.dumps({"version": 1, "trusted": entries}, indent=2) + "\n"
        write_text_atomic(trust_store(), text)


@dataclass(frozen=True)
class TrustCheck:
    """The trust state of one model: where it is, its weights' SHA-256, and whether it is trusted."""

    folder: Path
    weights: Path
    sha256: str | None  # None for a bundled model (not hashed)
    trusted: bool
    bundled: bool

    def remember(self) -> None:
        if self.sha256 is not None:
            remember(self.sha256, self.weights)

    def confirm(self) -> None:
        """After the model loaded (its operators passed): remember a newly trusted file."""
        if self.sha256 is not None and not is_trusted_digest(self.sha256):
            self.remember()

    def refusal(self, how: str = "run again with --trust-model") -> UntrustedModelError:
        return UntrustedModelError(
            f"model {self.folder.name} ({self.folder}) is not part of napari-metastasis and this "
            "computer has not been told to trust it: a TorchScript model is a program. If you "
            f"know where it comes from, {how} (remembered for this file, sha256 "
            f"{(self.sha256 or '')[:12]}…)"
        )


def check_trust(model: str | Path) -> TrustCheck:
    """Where ``model`` (a name or folder) stands; hashes the weights of a model not in the package.

    A folder whose weights are data (``model.safetensors`` for a network defined in the package,
    as ``train`` writes) needs no trust step: the loader runs none of its code.
    """
    from napari_metastasis.models.contract import load_config
    from napari_metastasis.models.exported import EXPORTED_FILE
    from napari_metastasis.models.safe_weights import has_safe_weights

    folder = resolve_model(model)
    weights = folder / WEIGHTS_FILE
    if (folder / EXPORTED_FILE).is_file():  # the file the loader runs (it prefers model.pt2)
        weights = folder / EXPORTED_FILE
    if is_bundled(folder):
        return TrustCheck(folder, weights, None, True, True)
    try:
        safe = has_safe_weights(folder, load_config(folder))
    except MetastasisError:
        safe = False  # the loader says what is wrong with the config
    if safe:
        return TrustCheck(folder, weights, None, True, False)
    if not weights.is_file():  # the loader says what is missing
        return TrustCheck(folder, weights, None, True, False)
    digest = file_sha256(weights)
    return TrustCheck(folder, weights, digest, is_trusted_digest(digest), False)


def require_trust(model: str | Path, *, trust: bool = False) -> TrustCheck:
    """Pass a bundled or already-trusted model, or any with ``trust``; else refuse.

    With ``trust`` the file is remembered when the caller calls :meth:`TrustCheck.confirm`, after
    the model has loaded (so a model the loader refuses is not remembered).
    """
    state = check_trust(model)
    if state.trusted or trust:
        return state
    raise state.refusal()
