"""``napari-metastasis models``: list the models ``--model NAME`` can use; ``models pull NAME`` fetches
one from the WSInfer zoo (Hugging Face hub) into your models folder."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list available models; 'models pull NAME' fetches a WSInfer zoo model",
        description="List the models --model NAME can use (no action, or 'list'), or fetch one "
        "from the WSInfer model zoo on the Hugging Face hub ('pull', needs internet).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="list available models and their folders (the default)")
    pull = actions.add_parser(
        "pull",
        help="download a WSInfer zoo model into your models folder",
        description="Download a WSInfer zoo model (its config.json and torchscript_model.pt, at "
        "the revision the zoo pins) into your models folder, so --model NAME finds it. NAME is a "
        "zoo name (as 'wsinfer-zoo ls' lists them) or a hub repository id (owner/name). "
        "HF_ENDPOINT selects a hub mirror.",
    )
    pull.add_argument("name", metavar="NAME", help="zoo model name, or a hub repository id")
    pull.add_argument(
        "--dest",
        metavar="DIR",
        help="models folder to put it in (default: ~/.napari-metastasis/models)",
    )
    pull.add_argument("--force", action="store_true", help="replace a model folder of that name")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "pull":
        from napari_metastasis.models.zoo import pull_model

        folder = pull_model(args.name, args.dest, force=args.force)
        print(f"{args.name} -> {folder}")
        return 0
    return list_models()


def list_models() -> int:
    from napari_metastasis.errors import MetastasisError
    from napari_metastasis.models.contract import load_config
    from napari_metastasis.models.registry import ENV_VAR, available_models, search_dirs

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
