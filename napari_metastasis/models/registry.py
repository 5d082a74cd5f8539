"""Where models are found by name: the bundled ones, then folders the user points at.

A name is a model folder's name. Search order (first hit wins): ``napari_metastasis/models/bundled/``
inside the package, then every folder in the ``NAPARI_METASTASIS_MODELS`` environment variable
(separated like ``PATH``), then ``~/.napari-metastasis/models``. Anything that is an existing folder
is used as a path directly, so ``--model ./my_model`` always works.
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_metastasis.errors import ModelError
from napari_metastasis.models.contract import CONFIG_FILE

BUNDLED_DIR = Path(__file__).parent / "bundled"
ENV_VAR = "NAPARI_METASTASIS_MODELS"
USER_DIR = Path("~/.napari-metastasis/models")


def search_dirs() -> list[Path]:
    dirs = [BUNDLED_DIR]
    dirs += [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    dirs.append(USER_DIR.expanduser())
    return dirs


def available_models() -> dict[str, Path]:
    """Model name -> folder, for every folder holding a config.json in the search directories."""
    found: dict[str, Path] = {}
    for base in search_dirs():
        if not base.is_dir():
            continue
        for folder in sorted(base.iterdir()):
            if folder.is_dir() and (folder / CONFIG_FILE).is_file():
                found.setdefault(folder.name, folder)
    return found


def resolve_model(path_or_name: str | Path) -> Path:
    """A model folder from a path or a registered name."""
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        return path
    models = available_models()
    name = str(path_or_name)
    if name in models:
        return models[name]
    known = ", ".join(sorted(models)) or "none"
    raise ModelError(f"{name}: no such model folder or model name (available models: {known})")
