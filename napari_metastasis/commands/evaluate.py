"""``napari-metastasis evaluate``: score a model on patches, and probability maps on slides.

Patches: ``--model M --dataset D``: accuracy, ROC AUC, sensitivity/specificity at the threshold,
confusion matrix, calibration; ``roc.png``, ``calibration.png``, ``predictions.csv``.
Slides: ``--maps a.tif b.tif --annotations a.xml none``: pixel Dice/IoU at the threshold, slide AUC
from the maximum probability, Camelyon16 lesion-level FROC; ``froc.png``.
Stages: ``--stages REFERENCE PREDICTED`` (Camelyon17 stages files, e.g. ``predict``'s
``stages.csv``): Camelyon17's quadratic-weighted kappa over the five pN stages, and the slide-category
confusion matrix and accuracy.
Everything goes to ``--out`` as ``metrics.json`` too (optional for ``--stages`` alone).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from napari_metastasis.commands.predict import out_folder
from napari_metastasis.errors import DatasetError
from napari_metastasis.outputs.atomic import write_text_atomic


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="patch metrics (AUC, ...), slide metrics (FROC, Dice), pN stages (kappa)",
    )
    p.add_argument("--model", help="model folder or name (patch evaluation)")
    p.add_argument("--dataset", nargs="+", type=Path, default=[], help="dataset folder(s)")
    p.add_argument("--maps", nargs="+", type=Path, default=[], help="probability maps (.tif)")
    p.add_argument(
        "--annotations", nargs="+", default=[], help="one per map; 'none' = normal slide"
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="decision threshold (default: the model card's, of --model or of the model that made "
        "the maps, else 0.5)",
    )
    p.add_argument(
        "--stages",
        nargs=2,
        type=Path,
        metavar=("REFERENCE", "PREDICTED"),
        help="two Camelyon17 stages files: quadratic-weighted kappa, slide confusion matrix",
    )
    p.add_argument("--out", type=out_folder, help="folder for metrics.json and plots")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--trust-model",
        action="store_true",
        help="trust a model from outside the package (a TorchScript model is a program); "
        "remembered for that file",
    )
    p.set_defaults(func=run)


def evaluate_patches(args: argparse.Namespace, results: dict) -> None:
    from napari_metastasis.datasets.patchset import PatchSet, load_patchset
    from napari_metastasis.evaluation.metrics import calibration, patch_metrics, roc_curve
    from napari_metastasis.evaluation.patches import predict_dataset
    from napari_metastasis.evaluation.plots import plot_calibration, plot_roc
    from napari_metastasis.models import load_model, resolve_threshold
    from napari_metastasis.models.trust import require_trust
    from napari_metastasis.outputs.csv_cells import neutralise

    trusted = require_trust(args.model, trust=args.trust_model)
    model = load_model(args.model, device=args.device, sha256=trusted.sha256)
    trusted.confirm()
    data = PatchSet.concat([load_patchset(d) for d in args.dataset])
    probs = predict_dataset(model, data)
    threshold = resolve_threshold(args.threshold, model).value
    metrics = patch_metrics(data.labels, probs, threshold)
    print(metrics.format())
    fpr, tpr, _ = roc_curve(data.labels, probs)
    plot_roc(fpr, tpr, metrics.roc_auc, args.out / "roc.png", title=f"{model.name}: patch ROC")
    cal = calibration(data.labels, probs)
    plot_calibration(cal, args.out / "calibration.png")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["slide", "x_level0", "y_level0", "label", "probability"])
    for i in range(len(data)):
        slide = neutralise(str(data.slides[i]))  # a slide's name is never run as a formula
        w.writerow([slide, data.x[i], data.y[i], data.labels[i], f"{probs[i]:.5f}"])
    write_text_atomic(args.out / "predictions.csv", buf.getvalue())
    results["patches"] = {**metrics.to_dict(), "model": model.name, "calibration": cal.__dict__}


def evaluate_slides(args: argparse.Namespace, results: dict) -> None:
    import numpy as np

    from napari_metastasis.datasets.annotations_source import load_tumour_geometry
    from napari_metastasis.evaluation.froc import froc
    from napari_metastasis.evaluation.metrics import roc_auc
    from napari_metastasis.evaluation.plots import plot_froc
    from napari_metastasis.evaluation.slides import overlap, slide_hits
    from napari_metastasis.maps.probability import ProbabilityMap
    from napari_metastasis.models import resolve_threshold

    if len(args.annotations) != len(args.maps):
        raise DatasetError(
            f"{len(args.maps)} maps but {len(args.annotations)} annotations: give one per map "
            "('none' for a slide without tumour)"
        )
    from napari_metastasis.outputs.output_set import check_saved_map

    for path in args.maps:  # a map from a broken or half-moved predict set is refused
        check_saved_map(path)
    maps = [ProbabilityMap.load(path) for path in args.maps]
    # the model card of --model, else of the model that made the maps, else 0.5
    threshold = resolve_threshold(args.threshold, args.model or maps[0].model_name or None).value
    per_slide, hits, scores, labels = [], [], [], []
    for map_path, pmap, ann in zip(args.maps, maps, args.annotations, strict=True):
        geometry = load_tumour_geometry(ann)
        ov = overlap(pmap, geometry, threshold)
        hits.append(slide_hits(pmap, geometry, threshold))
        tumour = geometry is not None and not geometry.is_empty
        scores.append(pmap.max_probability())
        labels.append(int(tumour))
        per_slide.append(
            {"map": str(map_path), "tumour": tumour, "max_probability": scores[-1], **ov.to_dict()}
        )
        print(f"{map_path.name}: max p {scores[-1]:.3f}  Dice {ov.dice:.3f}  IoU {ov.iou:.3f}")
    result = froc(hits)
    plot_froc(result, args.out / "froc.png")
    slide_auc = roc_auc(np.array(labels), np.nan_to_num(np.array(scores)))
    print(
        f"slide AUC (max probability) {slide_auc:.3f}  FROC {result.score:.3f} ({result.n_lesions} lesions)"
    )
    results["slides"] = {
        "threshold": threshold,
        "slide_auc": slide_auc,
        "per_slide": per_slide,
        "froc": result.to_dict(),
    }


def evaluate_stages(args: argparse.Namespace, results: dict) -> None:
    from napari_metastasis.clinical.staging import read_stages
    from napari_metastasis.clinical.summary import check_stages
    from napari_metastasis.evaluation.stages import compare_stages

    reference, predicted = args.stages
    for path in (reference, predicted):  # predict's stages.csv: only a complete, current set
        check_stages(path)
    comparison = compare_stages(read_stages(reference), read_stages(predicted))
    print(comparison.format())
    results["stages"] = {
        "reference": str(reference),
        "predicted": str(predicted),
        **comparison.to_dict(),
    }


def run(args: argparse.Namespace) -> int:
    if not (args.model and args.dataset) and not args.maps and not args.stages:
        raise DatasetError(
            "nothing to evaluate: give --model with --dataset, --maps with --annotations, "
            "or --stages REFERENCE PREDICTED"
        )
    if args.out is None and ((args.model and args.dataset) or args.maps):
        raise DatasetError("--out is needed for patch and slide evaluation (plots go there)")
    results: dict = {}
    if args.model and args.dataset:
        evaluate_patches(args, results)
    if args.maps:
        evaluate_slides(args, results)
    if args.stages:
        evaluate_stages(args, results)
    if args.out is not None:
        write_text_atomic(
            args.out / "metrics.json", json.dumps(results, indent=2, default=float) + "\n"
        )
        print(f"results written to {args.out}")
    return 0
