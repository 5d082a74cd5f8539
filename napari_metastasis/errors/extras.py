"""Optional dependencies: what not every user needs, with one sentence when it is missing.

``distributed`` (many slides on a dask cluster) and ``h5py`` (PatchCamelyon's HDF5 files) are
extras, not requirements: a pathologist who analyses slides in napari needs neither. A feature
that needs one imports it through :func:`require_extra`, which names the pip command to run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from napari_metastasis.errors import MetastasisError

#: module -> the extra of napari-metastasis that installs it
EXTRAS = {"distributed": "distributed", "h5py": "pcam-h5"}


class MissingExtraError(MetastasisError):
    """A feature needs an optional dependency that is not installed."""


def require_extra(module: str, purpose: str) -> ModuleType:
    """``module`` imported, or one sentence saying which extra to install for ``purpose``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS.get(module, module)
        raise MissingExtraError(
            f"{purpose} needs the optional package '{module}': install it with "
            f"pip install 'napari-metastasis[{extra}]'"
        ) from None
