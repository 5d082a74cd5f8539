"""``napari-metastasis report FOLDER``: one PDF per patient from a ``predict`` output folder.

Page 1: the pN stage, each slide's verdict and largest deposit, model, threshold, date, measuring
error and a "research use, not a diagnosis" line; then per slide its heatmap with numbered regions
and the region table. Patients are grouped as the folder's ``stages.csv`` records, or by
``--case``/``--cases`` as in ``predict``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a PDF report per patient (pN stage, verdicts, heatmaps) from predict's output",
        description=__doc__.split("\n\n", 1)[0].split(": ", 1)[-1],
    )
    parser.add_argument("folder", type=Path, metavar="FOLDER", help="a predict --out folder")
    parser.add_argument(
        "--out", type=_out_folder, metavar="DIR", help="where the PDFs go (default: FOLDER)"
    )
    add_case_arguments(parser)
    parser.set_defaults(func=run)


def add_case_arguments(parser: argparse.ArgumentParser) -> None:
    """``--case NAME`` / ``--cases FILE``: how slides group into patients (predict and report)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--case", metavar="NAME", help="All slides are the lymph nodes of this one patient."
    )
    group.add_argument(
        "--cases",
        type=Path,
        metavar="FILE",
        help="CSV of slide,patient rows; other slides group by Camelyon17's "
        "patient_<id>_node_<n> names, or are a patient of their own.",
    )


def _out_folder(text: str) -> Path:
    from napari_metastasis.commands.predict import out_folder

    return out_folder(text)


def run(args: argparse.Namespace) -> int:
    from napari_metastasis.clinical.report import write_reports
    from napari_metastasis.clinical.staging import read_cases

    cases = read_cases(args.cases) if args.cases else None

    def warn(line: str) -> None:
        print(f"napari-metastasis report: warning: {line}", file=sys.stderr)

    for path in write_reports(args.folder, args.out, case=args.case, cases=cases, warn=warn):
        print(f"report written to {path}")
    return 0
