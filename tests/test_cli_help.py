"""The command line's help: fast (no heavy imports to build the parser), complete sentences with
defaults; ``view`` without a display says so; ``info --sample``."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from napari_metastasis.annotations.io import FORMAT_NAMES
from napari_metastasis.cli import COMMAND_MODULES, build_parser
from napari_metastasis.commands.view import display_problem
from napari_metastasis.defaults import ANNOTATION_FORMATS

HEAVY = ("torch", "skimage", "pandas", "scipy", "napari", "shapely", "dask", "matplotlib")


def _python(code: str, env: dict, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_building_the_parser_imports_nothing_heavy(project_env):
    code = (
        "import sys; from napari_metastasis.cli import build_parser; build_parser();"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = _python(code, project_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [None, *COMMAND_MODULES])
def test_every_help_is_fast(command, project_env):
    args = [
        sys.executable,
        "-m",
        "napari_metastasis.cli",
        *([command] if command else []),
        "--help",
    ]
    started = time.perf_counter()
    out = subprocess.run(args, env=project_env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    assert out.returncode == 0, out.stderr
    assert "usage: napari-metastasis" in out.stdout
    assert elapsed < 3.0, f"--help took {elapsed:.1f} s"


def test_predict_help_is_whole_sentences_with_defaults():
    parser = build_parser()
    predict = parser._subparsers._group_actions[0].choices["predict"]
    text = predict.format_help()
    assert "Default: 64." in text and "Default: 0.25." in text and "Default: default," in text
    assert "camelyon16/<stem>.csv" in text and "exit code is then 1." in text
    for action in predict._actions:
        if action.help and action.help != "==SUPPRESS==" and action.dest not in ("help", "debug"):
            helptext = action.help % {"default": action.default, "prog": "x"}
            assert helptext[0].isupper() and helptext.endswith("."), (action.dest, helptext)


def test_convert_offers_every_annotation_format():
    assert set(ANNOTATION_FORMATS) == set(FORMAT_NAMES)


@pytest.mark.slow
def test_view_without_a_display_says_so_instead_of_aborting(tmp_path, project_env):
    env = {
        k: v
        for k, v in project_env.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    }
    out = subprocess.run(
        [sys.executable, "-m", "napari_metastasis.cli", "view"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "no display to open a window on" in out.stderr and "predict" in out.stderr
    env["DISPLAY"] = ":4711"  # no X server there
    out = subprocess.run(
        [sys.executable, "-m", "napari_metastasis.cli", "view"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and "no X server on display :4711" in out.stderr


def test_display_problem_rules():
    assert display_problem({}, "linux") is not None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert display_problem({"DISPLAY": "remote:10.0"}, "linux") is None
    assert display_problem({}, "darwin") is None


def test_info_sample(capsys, tmp_path):
    from napari_metastasis.cli import main

    thumb = tmp_path / "t.png"
    assert main(["info", "--sample", "--thumbnail", str(thumb), "--size", "64"]) == 0
    out = capsys.readouterr().out
    meta = json.loads(out[: out.rindex("}") + 1])
    assert meta["dimensions"] == [2220, 2967]
    assert thumb.is_file()
    assert main(["info"]) == 1
    assert "pass a SLIDE path, or --sample" in capsys.readouterr().err
