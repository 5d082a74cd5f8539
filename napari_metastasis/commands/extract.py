"""``napari-metastasis extract``: build a labelled patch dataset from slides + annotations, or
ingest an existing patch set (patch folder with CSV, Kaggle/PCam TIFFs, PCam HDF5)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from napari_metastasis.defaults import BALANCE_STRATEGIES as STRATEGIES
from napari_metastasis.errors import DatasetError

if TYPE_CHECKING:
    from napari_metastasis.datasets.patchset import PatchSet


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract",
        help="build a patch dataset from slides and annotations, or ingest PCam/patch folders",
        description=(
            "Sources (combine freely): --slides with --annotations (one per slide, 'none' for a "
            "slide without tumour), --patch-folder (CSV with file,label and slide/x/y columns or "
            "<slide>_<x>_<y> file names; --annotations give exact masks), --kaggle (PCam TIFFs + "
            "train_labels.csv), --pcam-h5 X.h5 Y.h5."
        ),
    )
    p.add_argument("--slides", nargs="+", type=Path, default=[])
    p.add_argument(
        "--annotations", nargs="+", default=[], help="annotation files ('none' = normal)"
    )
    p.add_argument("--patch-folder", type=Path, help="folder of labelled patches with a CSV")
    p.add_argument("--labels-csv", type=Path, help="CSV for --patch-folder / --kaggle")
    p.add_argument(
        "--source-mpp", type=float, default=0.243, help="µm/px of --patch-folder patches"
    )
    p.add_argument("--kaggle", type=Path, help="folder of Kaggle/PCam <id>.tif patches")
    p.add_argument("--pcam-h5", nargs=2, type=Path, metavar=("X_H5", "Y_H5"))
    p.add_argument("--pcam-meta", type=Path, help="PCam meta CSV (gives slide names)")
    p.add_argument("--limit", type=int, help="read at most this many PCam patches")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--spacing", type=float, default=0.5, help="µm per pixel of the patches")
    p.add_argument("--size", type=int, default=96, help="patch side in pixels")
    p.add_argument("--stride", type=float, help="grid step in µm (default: the patch side)")
    p.add_argument("--rule", choices=("centre", "fraction"), default="centre")
    p.add_argument(
        "--fraction", type=float, default=0.5, help="tumour fraction for --rule fraction"
    )
    p.add_argument("--min-tissue", type=float, default=0.25, help="minimum tissue fraction")
    p.add_argument(
        "--max-negatives", type=int, help="keep at most this many normal patches a slide"
    )
    p.add_argument("--mpp", type=float, help="µm/px of slides whose resolution is missing")
    p.add_argument("--balance", choices=[s for s in STRATEGIES if s != "weights"], default="none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def build(args: argparse.Namespace) -> PatchSet:
    from napari_metastasis.datasets.annotations_source import (
        geometries_by_slide,
        load_tumour_geometry,
    )
    from napari_metastasis.datasets.extract import extract_from_slide
    from napari_metastasis.datasets.ingest import (
        ingest_kaggle_pcam,
        ingest_labelled_folder,
        ingest_pcam_hdf5,
    )
    from napari_metastasis.datasets.labels import LabelRule
    from napari_metastasis.datasets.patchset import PatchSet

    rule = LabelRule(args.rule, args.fraction)
    sets = []
    if args.slides:
        annotations = list(args.annotations) or ["none"] * len(args.slides)
        if len(annotations) != len(args.slides):
            raise DatasetError(
                f"{len(args.slides)} slides but {len(annotations)} annotation files: give one per "
                "slide, 'none' for a slide without tumour"
            )
        for slide, ann in zip(args.slides, annotations, strict=True):
            sets.append(
                extract_from_slide(
                    slide,
                    load_tumour_geometry(ann),
                    spacing_um=args.spacing,
                    patch_size=args.size,
                    stride_um=args.stride,
                    rule=rule,
                    min_tissue=args.min_tissue,
                    max_negatives=args.max_negatives,
                    mpp=args.mpp,
                    seed=args.seed,
                    progress=not args.no_progress,
                )
            )
    if args.patch_folder:
        geoms = (
            geometries_by_slide(args.annotations) if args.annotations and not args.slides else None
        )
        sets.append(
            ingest_labelled_folder(
                args.patch_folder,
                spacing_um=args.spacing,
                patch_size=args.size,
                source_mpp=args.source_mpp,
                labels_csv=args.labels_csv,
                geometries=geoms,
                rule=rule if args.rule == "fraction" else LabelRule("fraction", 0.5),
            )
        )
    if args.kaggle:
        sets.append(
            ingest_kaggle_pcam(
                args.kaggle,
                args.labels_csv,
                spacing_um=args.spacing,
                patch_size=args.size,
                limit=args.limit,
            )
        )
    if args.pcam_h5:
        sets.append(
            ingest_pcam_hdf5(
                args.pcam_h5[0],
                args.pcam_h5[1],
                args.pcam_meta,
                spacing_um=args.spacing,
                patch_size=args.size,
                limit=args.limit,
            )
        )
    if not sets:
        raise DatasetError(
            "nothing to extract: give --slides, --patch-folder, --kaggle or --pcam-h5"
        )
    return sets[0] if len(sets) == 1 else PatchSet.concat(sets)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_metastasis.datasets.patchset import save_patchset
    from napari_metastasis.training.balance import imbalance_report, oversample, undersample

    patches = build(args)
    report = imbalance_report(patches.labels, patches.slides)
    print(report.format())
    if args.balance != "none":
        rng = np.random.default_rng(args.seed)
        pick = undersample if args.balance == "undersample" else oversample
        patches = patches.subset(pick(patches.labels, rng))
        print(f"after {args.balance}: {imbalance_report(patches.labels).format()}")
    patches.meta = {**patches.meta, "imbalance": report.to_dict(), "balance": args.balance}
    save_patchset(patches, args.out)
    print(
        f"{len(patches)} patches ({args.size} px at {args.spacing:g} µm/px) written to {args.out}"
    )
    return 0
