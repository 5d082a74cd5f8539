"""docs/cli.md, the command-line reference, is generated from the parsers and kept up to date:
a new option or a changed help text without ``python scripts/cli_reference.py`` fails here."""

from __future__ import annotations

import argparse
import importlib.util
import sys

import pytest

from napari_metastasis.cli import COMMAND_MODULES, build_parser


@pytest.fixture(scope="module")
def reference(project_root):
    path = project_root / "scripts" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_the_page_is_what_the_parsers_say(project_root, reference):
    assert (project_root / "docs" / "cli.md").read_text(encoding="utf-8") == reference.render(), (
        "docs/cli.md is out of date with the parsers: run python scripts/cli_reference.py"
    )


def test_every_command_option_and_help_text_is_on_the_page(reference):
    text = reference.render()
    for name in COMMAND_MODULES:
        assert f"## napari-metastasis {name}\n" in text
    assert "### napari-metastasis models pull\n" in text
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            name = ", ".join(action.option_strings) or action.dest
            assert f"| `{name}` |" in text, f"{parser.prog}: {name}"
    # help texts with their defaults filled in, as --help prints them
    assert "Patches per forward pass. Default: 64." in text
    assert "%(default)" not in text


def test_check_mode_reports_a_stale_page(reference, tmp_path, capsys):
    stale = tmp_path / "cli.md"
    stale.write_text(reference.render().replace("Patches per forward pass", "Patches per pass"))
    assert reference.main(["--check", "--out", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert reference.main(["--out", str(stale)]) == 0
    assert reference.main(["--check", "--out", str(stale)]) == 0
