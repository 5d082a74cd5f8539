"""``napari-metastasis models``: list the models ``--model NAME`` can use, with their folders."""

from __future__ import annotations

import argparse
import sys

from ..errors import MetastasisError
from ..models import available_models, load_config
from ..models.registry import ENV_VAR, search_dirs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list available models and their folders")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    models = available_models()
    for name, folder in models.items():
        try:
            config = load_config(folder)
            detail = (
                f"{config.architecture}, {config.patch_size_pixels} px at "
                f"{config.spacing_um_px:g} µm/px, classes {', '.join(config.class_names)}"
            )
        except MetastasisError as exc:
            detail = f"INVALID: {exc}"
        print(f"{name}\t{folder}\t{detail}")
    searched = ", ".join(str(d) for d in search_dirs())
    print(f"(searched: {searched}; add folders with {ENV_VAR})", file=sys.stderr)
    return 0
