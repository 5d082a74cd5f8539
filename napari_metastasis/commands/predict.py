"""``napari-metastasis predict SLIDE ... --out DIR``: classify slides headless and write their files.

What is written is listed in :data:`DESCRIPTION` (the command's ``--help``) and in docs/formats.md.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from napari_metastasis.commands.report import add_case_arguments
from napari_metastasis.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MODEL,
    DEFAULT_TISSUE_MIN_FRACTION,
    DEVICE_CHOICES,
)
from napari_metastasis.errors import MetastasisError

#: ``--backend`` (napari_metastasis.models.onnx_runtime.BACKENDS; not imported here: torch is slow
#: to import and --help must be quick)
BACKENDS = ("auto", "torch", "onnxruntime")

DESCRIPTION = """\
Classify whole-slide images with a patch classifier and write, for each slide, into --out:

  <stem>.csv              one row per classified patch: WSInfer's columns minx, miny, width,
                          height (level-0 pixels) and prob_<class>
  <stem>.geojson          the regions at the threshold as QuPath annotations (level-0 pixels):
                          confirmed deposits as Tumor, candidates not confirmed as Candidate
  <stem>.heatmap.png      a thumbnail with the probability map over it
  <stem>.prob.tiff        the probability grid, which the viewer and `evaluate` read
  <stem>.prob.zarr        the same map as OME-Zarr, written batch by batch (see --resume)
  <stem>.summary.json     the clinical answer: slide verdict (confirmed deposits only, by the
                          model folder's deposit rule, named there) and each region's size,
                          category and decision
  camelyon16/<stem>.csv   Camelyon16's lesion-detection file (Confidence, X, Y; no header)
  <stem>.tiles.geojson    with --tiles: every patch as a QuPath tile with prob_<class>

and for the whole run stages.csv, each patient's pN stage in Camelyon17's format (a set of its
own, stages.outputs.json, out of date once a slide it was made from changes).

A slide's files are written as one set (all or none; <stem>.outputs.json, written last, lists
them with their SHA-256; a move into place that Ctrl-C or a kill stopped is finished by the next
run); --out is checked for writing and free space before any slide is classified. A slide that fails gets one line on stderr naming it and the reason; the other slides
are still processed, and the exit code is then 1."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify slides with a model; write CSV, GeoJSON, heatmap and probability maps",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "slides",
        nargs="*",
        type=Path,
        metavar="SLIDE",
        help="Slide files (any format OpenSlide reads) or DICOM folders.",
    )
    parser.add_argument(
        "--out",
        type=out_folder,
        required=True,
        metavar="DIR",
        help="Folder to write the files into (made when the first slide's files are written).",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="DIR|NAME",
        help="Model folder, or the name of one (see `napari-metastasis models`). "
        "Default: %(default)s, the bundled model.",
    )
    parser.add_argument(
        "--trust-model",
        action="store_true",
        help="Trust a model from outside the package (a TorchScript model is a program); "
        "the trust is remembered for that file.",
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=DEVICE_CHOICES,
        help="Where the network runs; auto is CUDA when present, else Apple's MPS, else the CPU. "
        "Default: %(default)s.",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help="Patches per forward pass. Default: %(default)s.",
    )
    parser.add_argument(
        "--threshold",
        type=_probability,
        metavar="P",
        help="Probability at or above which patches make regions and detections. Default: the "
        "model card's threshold, else 0.5.",
    )
    parser.add_argument(
        "--region",
        type=_region,
        metavar="X,Y,W,H",
        help="Classify only this rectangle, in level-0 pixels. Default: the whole slide.",
    )
    parser.add_argument(
        "--mpp",
        type=_positive_float,
        metavar="UM",
        help="Level-0 µm per pixel, overriding the file's. Default: the file's own.",
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help="Also run on the bundled sample slide (CMU-1-Small-Region).",
    )
    parser.add_argument(
        "--tissue-min-fraction",
        type=_fraction,
        default=DEFAULT_TISSUE_MIN_FRACTION,
        metavar="F",
        help="Skip patches with less tissue than this fraction of their area; 0 classifies every "
        "patch. Default: %(default)s.",
    )
    parser.add_argument(
        "--stride-um",
        type=_positive_float,
        metavar="UM",
        help="Grid step in µm; sizes are measured to about one step. Default: the model's patch "
        "size, so patches do not overlap.",
    )
    add_case_arguments(parser)
    parser.add_argument(
        "--positive-class",
        metavar="NAME",
        help="Class whose probability the maps show. Default: the class called tumor (or the "
        "config's positive_class).",
    )
    parser.add_argument(
        "--min-area",
        type=float,
        default=0.0,
        metavar="UM2",
        help="Drop regions smaller than this many µm². Default: %(default)s.",
    )
    parser.add_argument(
        "--tiles",
        action="store_true",
        help="Also write <stem>.tiles.geojson: every classified patch as a QuPath tile with its "
        "prob_<class> measurements, classified as its most probable class.",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Continue an interrupted run: keep the patches already in <stem>.prob.zarr and "
        "classify only the missing ones.",
    )
    parser.add_argument(
        "--exhaustive",
        action="store_true",
        help="Run every patch through the full model. Default: a cheap first pass (two of the "
        "bundled model's eight views) settles the plainly normal patches, and the full model "
        "classifies the rest and the patches around every candidate region, so candidates, "
        "deposits and verdicts are the full model's. Models without a first pass always run "
        "exhaustively.",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="What runs the network: onnxruntime (the package's own models on the CPU: about "
        "1.35x torch's pass on two cores, the same answers to float rounding), torch, or auto: "
        "onnxruntime where it can run the model, else torch. Default: %(default)s.",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="Threads reading patches. Default: one per CPU core, at most 8.",
    )
    parser.add_argument(
        "--dask",
        type=_dask_scheduler,
        metavar="local[:N]|ADDRESS",
        help="Spread slides over dask.distributed: a local cluster of N worker processes, or a "
        "running scheduler's address (tcp://host:8786). Default: one slide after another here.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_metastasis.clinical.staging import read_cases
    from napari_metastasis.clinical.summary import SUMMARY_SUFFIX, stage_run, write_stages
    from napari_metastasis.models import load_model
    from napari_metastasis.models.trust import require_trust
    from napari_metastasis.outputs.output_set import check_writable
    from napari_metastasis.pipeline.slide_outputs import PredictOptions, predict_many, unique_stems

    slides = list(args.slides)
    if args.sample:
        from napari_metastasis._napari.sample_data import SAMPLE_SLIDE

        slides.append(SAMPLE_SLIDE)
    if not slides:
        raise MetastasisError("no slide given: pass one or more SLIDE paths, or --sample")
    options = PredictOptions(
        model=str(args.model),
        device=args.device,
        positive_class=args.positive_class,
        batch_size=args.batch_size,
        threshold=args.threshold,  # None: the model's recommended threshold
        region=args.region,
        mpp=args.mpp,
        tissue_min_fraction=args.tissue_min_fraction,
        stride_um=args.stride_um,
        min_area_um2=args.min_area,
        reader_threads=args.workers,
        tiles=args.tiles,
        resume=args.resume,
        exhaustive=args.exhaustive,
        backend=args.backend,
    )
    # A file, a read-only folder or a full disk: found now, not later; nothing is made yet, so a
    # run refused below (an untrusted model, a bad list of cases) leaves no empty --out behind.
    check_writable(args.out, create=False)
    cases = read_cases(args.cases) if args.cases else None  # a bad list fails before the run
    trusted = require_trust(args.model, trust=args.trust_model)
    model = None
    if args.dask is None:
        model = load_model(
            args.model,
            device=args.device,
            positive_class=args.positive_class,
            sha256=trusted.sha256,
            backend=args.backend,
        )
        trusted.confirm()
        print(
            f"model {model.name} ({model.folder}): {model.config.patch_size_pixels} px at "
            f"{model.config.spacing_um_px:g} µm/px on {model.device}"
            + (" (ONNX Runtime)" if model.backend == "onnxruntime" else ""),
            file=sys.stderr,
        )
    else:
        trusted.confirm()  # each worker's loader still checks the operators
        print(f"scaling out on dask.distributed ({args.dask})", file=sys.stderr)
    failed = []
    for outcome in predict_many(slides, options, args.out, scheduler=args.dask, model=model):
        if outcome.ok:
            print(outcome.message)
        else:
            failed.append(outcome.path)
            print(f"napari-metastasis predict: error: {outcome.message}", file=sys.stderr)
    stems = unique_stems(slides)
    patients, unstaged = stage_run(slides, stems, failed, args.out, case=args.case, cases=cases)
    for line in unstaged:
        print(f"napari-metastasis predict: warning: {line}", file=sys.stderr)
    if patients:
        failed_names = {str(p) for p in failed}
        sources = [  # the summaries stages.csv is made from: it is stale once one changes
            f"{stem}{SUMMARY_SUFFIX}"
            for path, stem in zip(slides, stems, strict=True)
            if str(path) not in failed_names
        ]
        path = write_stages(args.out, patients, sources)
        staged = ", ".join(f"{p.patient} {p.stage}" for p in patients)
        print(f"pN stages ({staged}) -> {path}")
        for note in sorted({note for p in patients for note in p.notes}):
            print(f"Note: {note}")
    failures = len(failed)
    if failures:
        print(
            f"napari-metastasis predict: {failures} of {len(slides)} slides failed", file=sys.stderr
        )
    return 1 if failures else 0


# --- argument types ---------------------------------------------------------------------------
def out_folder(text: str) -> Path:
    """An output folder: ``--out ''`` is refused, not taken as the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "the folder name is empty (give a folder, e.g. --out results; --out . is this one)"
        )
    return Path(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _probability(text: str) -> float:
    value = _fraction(text)
    if value == 0:
        raise argparse.ArgumentTypeError("threshold must be greater than 0")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _region(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected X,Y,W,H in level-0 pixels, got {text!r}"
        ) from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return x, y, w, h


_ADDRESS = re.compile(r"^(?:(?:tcp|tls|ucx|ws|wss)://)?\[?[A-Za-z0-9_.:-]+?\]?:(\d{1,5})$")


def _dask_scheduler(text: str) -> str:
    """``local``, ``local:N`` or a scheduler address with a port (``tcp://host:8786``)."""
    if text == "local":
        return text
    if text.startswith("local:"):
        n = text.partition(":")[2]
        if not n.isdigit() or int(n) < 1 or int(n) > 1024:
            raise argparse.ArgumentTypeError(
                f"expected local:N with N a number of worker processes (1-1024), got {text!r}"
            )
        return text
    match = _ADDRESS.match(text)
    if not match or not 0 < int(match.group(1)) < 65536:
        raise argparse.ArgumentTypeError(
            f"expected 'local', 'local:N' or a scheduler address with its port "
            f"(tcp://host:8786), got {text!r}"
        )
    return text
