"""``napari-metastasis`` command line: one subcommand per module in :mod:`napari_metastasis.commands`.

Each command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed arguments and returning an exit code.

Error policy (:mod:`.error_policy`): every error is printed as one sentence, ``napari-metastasis
COMMAND: error: ...``, with exit code 1, whatever raised it; ``--debug`` (anywhere on the line, or
``NAPARI_METASTASIS_DEBUG=1``) prints the traceback too. Ctrl-C exits with 130, bad arguments with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from napari_metastasis import __version__
from napari_metastasis.errors.policy import user_message

DEBUG_ENV_VAR = "NAPARI_METASTASIS_DEBUG"

#: Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "info",
    "view",
    "predict",
    "report",
    "models",
    "convert",
    "extract",
    "train",
    "evaluate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-metastasis",
        description="Find breast-cancer metastases in lymph-node whole-slide images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    debug_help = "on an error, print the full traceback as well as the one-line message"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f".commands.{name}", __package__).register(subparsers)
    for sub in subparsers.choices.values():  # --debug after the command works too
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = (
            build_parser()
        )  # imports the commands (torch, openslide, ...): Ctrl-C may land here
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("napari-metastasis: interrupted", file=sys.stderr)
        return 130
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV_VAR, "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"napari-metastasis {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the catch-all: one sentence, never a traceback unless asked
        if debug:
            traceback.print_exc()
        message = user_message(exc)
        hint = "" if debug or _is_ours(exc) else " (run with --debug for the details)"
        print(f"napari-metastasis {args.command}: error: {message}{hint}", file=sys.stderr)
        return 1


def _is_ours(exc: BaseException) -> bool:
    from napari_metastasis.errors import MetastasisError

    return isinstance(exc, MetastasisError)


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """The console command: :func:`main`, then exit with its code.

    A Ctrl-C that lands once the work is done, while Python shuts down (joining threads, closing
    files), would otherwise end a finished run as killed by SIGINT (exit -2, nothing printed):
    from here on it is ignored, and the run's own exit code stands.
    """
    try:
        code = main(argv)
    except KeyboardInterrupt:  # between main's own handlers and here
        code = 130
    with contextlib.suppress(ValueError):  # signals can be set from the main thread only
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
