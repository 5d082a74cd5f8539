"""``napari-metastasis train DATASET --out MODEL_DIR``: train a CNN and write it in the model contract."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_metastasis.defaults import BALANCE_STRATEGIES as STRATEGIES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a patch classifier on extracted datasets")
    p.add_argument("datasets", nargs="+", type=Path, help="dataset folder(s) from `extract`")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--val-slides", nargs="+", help="slides held out for validation")
    p.add_argument("--val-fraction", type=float, default=0.25, help="share of patches (by slide)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps-per-epoch", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--patience", type=int, default=8, help="epochs without better validation AUC")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="train this many seeds and average them")
    p.add_argument("--balance", choices=STRATEGIES, default="oversample")
    p.add_argument("--architecture", default="smallcnn")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--crop", type=int, default=48, help="model input in px")
    p.add_argument("--spacing", type=float, default=1.0, help="model µm per pixel")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="average each patch's 8 flips/90° rotations in the exported model (dealt out to the "
        "networks in turn when there are several)",
    )
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_metastasis.datasets.patchset import PatchSet, load_patchset
    from napari_metastasis.evaluation.metrics import calibration, patch_metrics, youden_threshold
    from napari_metastasis.models.networks import count_parameters
    from napari_metastasis.training.augment import NO_AUGMENT, AugmentConfig
    from napari_metastasis.training.balance import imbalance_report
    from napari_metastasis.training.card import base_card
    from napari_metastasis.training.export import publish_model
    from napari_metastasis.training.split import split_by_slide
    from napari_metastasis.training.trainer import TrainConfig, predict_probabilities, train_model

    data = PatchSet.concat([load_patchset(d) for d in args.datasets])
    train_idx, val_idx = split_by_slide(
        data.slides,
        data.labels,
        val_slides=args.val_slides,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    train, val = data.subset(train_idx), data.subset(val_idx)
    print(f"training: {imbalance_report(train.labels).format()}")
    print(
        f"validation ({', '.join(sorted(set(map(str, val.slides))))}): {imbalance_report(val.labels).format()}"
    )
    members, results = [], []
    for k in range(args.seeds):
        config = TrainConfig(
            architecture=args.architecture,
            width=args.width,
            crop_px=args.crop,
            spacing_um=args.spacing,
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed + k,
            patience=args.patience,
            balance=args.balance,
            augment=NO_AUGMENT if args.no_augment else AugmentConfig(),
            threads=args.threads,
        )
        result = train_model(
            train,
            val,
            config,
            checkpoint=args.out / "checkpoints" / f"seed{config.seed}.pt",
            resume=args.resume,
            progress=not args.no_progress,
        )
        members.append(result.model)
        results.append(result)
    from napari_metastasis.models.networks import Ensemble

    ensemble = Ensemble(members, tta=args.tta).eval()
    train_p = predict_probabilities(ensemble, train, results[0].config)
    threshold = youden_threshold(train.labels, train_p)
    card = base_card(
        args.out.name,
        f"{args.architecture} x{args.seeds}",
        count_parameters(ensemble),
        args.crop,
        args.spacing,
    )
    card["threshold"] = threshold
    card["threshold_rule"] = "Youden's J on the training patches (never on validation)"
    card["test_time_augmentation"] = "8 flips/90° rotations averaged" if args.tta else "off"
    card["data"] = [f"{d}" for d in args.datasets] + [
        imbalance_report(train.labels, train.slides).format()
    ]
    card["training"] = [json.dumps(results[0].config.to_dict())] + [
        f"seed {r.config.seed}: best epoch {r.best_epoch}, validation AUC {r.best_val_auc}"
        for r in results
    ]
    if len(val):
        val_p = predict_probabilities(ensemble, val, results[0].config)
        metrics = patch_metrics(val.labels, val_p, threshold)
        print(metrics.format())
        card["validation"] = {
            "scheme": f"held-out slides: {', '.join(sorted(set(map(str, val.slides))))}",
            "results": {
                "validation patches": {
                    k: v for k, v in metrics.to_dict().items() if k != "confusion"
                }
            },
        }
        card["calibration"] = {
            **calibration(val.labels, val_p).__dict__,
            "note": "on the validation patches",
        }
    card["history"] = [r.history for r in results]
    card["reproduce"] = (
        "napari-metastasis train " + " ".join(str(d) for d in args.datasets) + f" --out {args.out}"
    )
    publish_model(members, args.out, card, tta=args.tta)
    print(f"model written to {args.out} (threshold {threshold:.3f})")
    return 0
