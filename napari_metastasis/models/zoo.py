"""``models pull NAME``: copy a WSInfer zoo model from the Hugging Face hub into the user's models.

The only code of the package that touches the network, and only when the user runs ``models pull``:
nothing calls it at import or while predicting. It follows WSInfer's zoo client
(``wsinfer_zoo/client.py``): the registry is the dataset ``kaczmarj/wsinfer-model-zoo-json``'s
``wsinfer-zoo-registry.json`` (``{"models": {NAME: {description, hf_repo_id, hf_revision}}}``), and a
model is its repository's ``config.json`` and ``torchscript_model.pt`` at the pinned revision.
A NAME with a slash is taken as a hub repository id directly. Files go through a temporary cache,
the config is validated with the project's own rules, and the folder appears in the models folder
only once complete. ``HF_ENDPOINT`` (a mirror, or the stand-in the tests use) is honoured.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_metastasis.errors import ModelError
from napari_metastasis.models.contract import CONFIG_FILE, WEIGHTS_FILE, load_config
from napari_metastasis.models.registry import USER_DIR

REGISTRY_REPO = "kaczmarj/wsinfer-model-zoo-json"
REGISTRY_FILE = "wsinfer-zoo-registry.json"
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    repo_id: str
    revision: str | None
    description: str = ""


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise ModelError(
            "pulling zoo models needs huggingface_hub: pip install 'napari-metastasis[zoo]'"
        ) from None
    return huggingface_hub


def _download(repo_id: str, filename: str, cache: Path, **kwargs: Any) -> Path:
    hub = _hub()
    try:
        return Path(
            hub.hf_hub_download(
                repo_id,
                filename,
                cache_dir=str(cache),
                endpoint=os.environ.get("HF_ENDPOINT") or None,
                **kwargs,
            )
        )
    except Exception as exc:  # network, 404, bad revision: one readable sentence
        text = str(exc).strip().splitlines()
        reason = text[0] if text else type(exc).__name__
        raise ModelError(f"cannot fetch {filename} of {repo_id} from the hub ({reason})") from exc


#: One part of a hub repository id, and so a folder name: no path syntax ("..", "/") gets through.
_NAME_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9])?")


def check_model_name(name: str) -> None:
    """Refuse a name that is not ``NAME`` or ``OWNER/NAME`` of plain parts.

    The last part becomes a folder under the models folder (and ``--force`` replaces it), so
    ``org/..`` or a registry key such as ``../x`` must never reach the file system.
    """
    parts = name.split("/")
    if len(parts) > 2 or not all(_NAME_PART.fullmatch(p) and ".." not in p for p in parts):
        raise ModelError(
            f"{name!r} is not a model name: give NAME or OWNER/NAME (letters, digits, '-', '_', "
            "'.'; no '..', no other '/')"
        )


def zoo_entry(name: str, cache: Path) -> ZooEntry:
    """Where the zoo keeps model ``name`` (a NAME with a slash is a repository id)."""
    check_model_name(name)
    if "/" in name:
        return ZooEntry(name.rsplit("/", 1)[-1], name, None)
    path = _download(REGISTRY_REPO, REGISTRY_FILE, cache, repo_type="dataset", revision="main")
    try:
        models = json.loads(path.read_text(encoding="utf-8"))["models"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"the zoo's {REGISTRY_FILE} is not a registry ({exc})") from exc
    if name not in models:
        known = ", ".join(sorted(models)) or "none"
        raise ModelError(f"{name}: not in the WSInfer zoo (models: {known})")
    entry = models[name]
    return ZooEntry(
        name, entry["hf_repo_id"], entry.get("hf_revision"), entry.get("description", "")
    )


def pull_model(name: str, dest: str | Path | None = None, *, force: bool = False) -> Path:
    """Download zoo model ``name`` into ``dest`` (default: the user's models folder); its folder."""
    dest = Path(dest).expanduser() if dest is not None else USER_DIR.expanduser()
    with tempfile.TemporaryDirectory(prefix="napari-metastasis-pull-") as tmp:
        cache = Path(tmp) / "cache"
        entry = zoo_entry(name, cache)
        target = dest / entry.name
        if target.exists() and not force:
            raise ModelError(f"{target} already exists (pass --force to replace it)")
        staging = Path(tmp) / entry.name
        staging.mkdir()
        for filename in MODEL_FILES:
            path = _download(entry.repo_id, filename, cache, revision=entry.revision)
            shutil.copyfile(path, staging / filename)
        load_config(staging)  # refuse a config the loader would refuse, before it is installed
        source = {"hf_repo_id": entry.repo_id, "hf_revision": entry.revision, "zoo_name": name}
        (staging / "zoo_source.json").write_text(json.dumps(source, indent=2) + "\n")
        dest.mkdir(parents=True, exist_ok=True)
        partial = dest / f".{entry.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(staging, partial)
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    return target
