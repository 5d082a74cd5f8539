"""The package's layout is its architecture (issue 22): subpackages in layers, imports only downwards.

Read from the source with :mod:`ast` (every import, those inside functions and under
``TYPE_CHECKING`` too), so an arrow upwards or a circle between subpackages fails here before it
shows in a review. ``docs/architecture.md`` draws the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "napari_metastasis"
#: Lowest first; a subpackage imports only from its own layer and those below it.
LAYERS = (
    ("errors", "defaults"),
    ("outputs",),
    ("slides",),
    ("annotations",),
    ("maps",),
    ("clinical",),
    ("models",),
    ("pipeline",),
    ("datasets",),
    ("evaluation",),
    ("training",),
    ("_napari",),
    ("widgets", "commands"),
    ("cli",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
#: The napari/Qt side: only ``_napari`` and ``widgets`` (and ``commands.view``, which starts napari).
GUI_MODULES = (
    "napari",
    "qtpy",
    "magicgui",
    "superqt",
    "vispy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
)
GUI_SIDE = ("_napari", "widgets")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _part(module: str) -> str | None:
    """The subpackage (or root module) a package module belongs to."""
    parts = module.split(".")
    if parts[0] != "napari_metastasis" or len(parts) < 2:
        return None
    return parts[1]


MODULES = _modules()


def test_the_package_root_holds_only_its_face():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "cli.py", "defaults.py"]


def test_every_subpackage_has_a_layer():
    parts = {_part(m) for m in MODULES} - {None}
    assert parts <= set(RANK), sorted(parts - set(RANK))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module):
    source = _part(module)
    if source is None:
        return
    upwards = sorted(
        target
        for target in _imports(MODULES[module])
        if (part := _part(target)) in RANK and part != source and RANK[part] > RANK[source]
    )
    assert not upwards, f"{module} imports upwards: {upwards}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_library_code_never_imports_napari_or_qt(module):
    if _part(module) in GUI_SIDE or module == "napari_metastasis.commands.view":
        return
    gui = sorted(t for t in _imports(MODULES[module]) if t.split(".")[0] in GUI_MODULES)
    assert not gui, f"{module} imports {gui}"
