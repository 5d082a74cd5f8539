"""The recipe of the bundled default model: ``make model`` (``python -m
napari_metastasis.training.bundled_recipe``). It uses ``../shared/data`` only and runs on 2 CPU cores.

Why it is built this way (see the model card it writes):

* **Resolution**: ~1 µm/px with 48-px crops (48 µm), which any 20x or 40x slide provides and which did
  slightly better than 0.5 µm/px in trials. The 57 Camelyon16 patches (256 px at 0.243 µm/px, 62 µm)
  are stored at 0.972 µm/px (64 px) and cropped with position and ±10 % scale jitter.
* **Exact labels**: each crop's target is the tumour fraction of its centre third, from the official
  Camelyon16 polygons (exclusions cut out), not the folder name.
* **Negatives that look like a whole slide**: the 57 patches are tumour and lymphoid tissue, but a
  slide is mostly capsule, stroma, fat and vessels. Tiles mined from two slides without metastasis
  (CMU-1-Small-Region, skin; CropBreastSlide, breast, whose resolution tag is bogus: we take it as
  0.5 µm/px, which its nuclear sizes agree with) teach the network that those are normal.
* **Strong stain augmentation** (HED ±50 %, random greyscale): other hospitals stain differently.
* **Validation by slide**: three folds, each leaving one Camelyon16 slide out (and one of the normal
  slides, so false positives on unseen normal tissue are measured too). The pooled out-of-fold
  predictions choose the number of epochs and the decision threshold (training data only), and give
  the calibration we report.
* **Seed averaging**: the final model averages three seeds inside one TorchScript module.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..evaluation.metrics import calibration, patch_metrics, roc_auc, youden_threshold
from ..models.registry import BUNDLED_DIR
from .annotations_source import geometries_by_slide
from .augment import AugmentConfig
from .card import base_card, render_card
from .export import export_model
from .extract import extract_from_slide
from .ingest import CAMELYON16_MPP, ingest_kaggle_pcam, ingest_labelled_folder
from .networks import Ensemble, count_parameters
from .patchset import PatchSet
from .trainer import TrainConfig, predict_probabilities, train_model

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data"
DEFAULT_OUT = BUNDLED_DIR / "default"

STORE_SPACING = 0.972  # µm/px the sources are kept at (PCam's spacing)
STORE_SIZE = 64
CROP_PX = 48
MODEL_SPACING = 1.0
#: µm/px assumed for CropBreastSlide.tiff (its TIFF says 96 dpi, i.e. 264.6 µm/px: impossible).
CROP_BREAST_MPP = 0.5
SEEDS = (0, 1, 2)
#: (held-out Camelyon16 slide, held-out normal slide) per fold.
FOLDS = (
    ("tumor_001", "CropBreastSlide"),
    ("tumor_004", "CMU-1-Small-Region"),
    ("tumor_064", None),
)
#: Share of the normal draws that come from the Camelyon16 lymph-node patches (rest: mined tiles).
CAMELYON_NORMAL_SHARE = 0.3

README_START = "<!-- bundled-model-card:start -->"
README_END = "<!-- bundled-model-card:end -->"


def recipe_config(quick: bool = False) -> TrainConfig:
    return TrainConfig(
        architecture="smallcnn",
        width=16,
        dropout=0.2,
        crop_px=CROP_PX,
        spacing_um=MODEL_SPACING,
        epochs=2 if quick else 14,
        steps_per_epoch=2 if quick else 24,
        batch_size=16 if quick else 64,
        lr=3e-3,
        weight_decay=1e-4,
        balance="oversample",
        ema=0.98,
        augment=AugmentConfig(),
        threads=int(os.environ.get("NAPARI_METASTASIS_THREADS", "2")),
    )


def load_sources(data: Path) -> dict[str, PatchSet]:
    """The Camelyon16 patches (exact masks), mined normal tiles, and PCam patches (check only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the official polygons self-intersect; they are repaired
        geometries = geometries_by_slide(
            sorted((data / "annotations" / "camelyon16_ncrf_json").glob("*.json"))
        )
    camelyon = ingest_labelled_folder(
        data / "patches" / "camelyon16_256",
        spacing_um=STORE_SPACING,
        patch_size=STORE_SIZE,
        source_mpp=CAMELYON16_MPP,
        geometries=geometries,
    )
    mined = [
        extract_from_slide(
            data / "slides" / "aperio_svs" / "CMU-1-Small-Region.svs",
            None,
            spacing_um=STORE_SPACING,
            patch_size=STORE_SIZE,
            stride_um=32.0,
            min_tissue=0.05,
        ),
        extract_from_slide(
            data / "slides" / "generic_tiff" / "CropBreastSlide.tiff",
            None,
            spacing_um=STORE_SPACING,
            patch_size=STORE_SIZE,
            stride_um=32.0,
            min_tissue=0.05,
            mpp=CROP_BREAST_MPP,
        ),
    ]
    pcam = ingest_kaggle_pcam(
        data / "patches" / "pcam_kaggle_96" / "train", spacing_um=STORE_SPACING, patch_size=96
    )
    return {"camelyon": camelyon, "mined": PatchSet.concat(mined), "pcam": pcam}


def draw_weights(patches: PatchSet, is_camelyon: np.ndarray) -> np.ndarray:
    """Within-class draw weights: the normal draws split between Camelyon16 lymph node and mined
    tiles (:data:`CAMELYON_NORMAL_SHARE`); tumour patches uniform. The balancing strategy still
    decides the tumour/normal shares."""
    w = np.ones(len(patches))
    normal = patches.labels == 0
    for sel, share in (
        (normal & is_camelyon, CAMELYON_NORMAL_SHARE),
        (normal & ~is_camelyon, 1 - CAMELYON_NORMAL_SHARE),
    ):
        if sel.any():
            w[sel] = share / sel.sum()
    return w


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cross_validate(data: PatchSet, is_camelyon: np.ndarray, config: TrainConfig, progress: bool):
    """Leave-one-slide-out: out-of-fold probabilities of every patch after every epoch."""
    oof = np.full((config.epochs, len(data)), np.nan)
    for camelyon_slide, normal_slide in FOLDS:
        held = (data.slides == camelyon_slide) | (data.slides == normal_slide)
        train, val = data.subset(np.flatnonzero(~held)), data.subset(np.flatnonzero(held))

        def record(epoch, model, held=held, val=val):
            oof[epoch, held] = predict_probabilities(model, val, config)

        _log(f"fold without {camelyon_slide}" + (f" and {normal_slide}" if normal_slide else ""))
        train_model(
            train,
            None,
            config,
            sample_weights=draw_weights(train, is_camelyon[~held]),
            progress=progress,
            on_epoch=record,
        )
    return oof


def choose_epochs(
    oof: np.ndarray, labels: np.ndarray, is_camelyon: np.ndarray, min_epoch: int
) -> tuple[int, list[float]]:
    """The epoch whose out-of-fold predictions score best (later epoch on ties).

    The score is the mean of two ROC AUCs: on the Camelyon16 patches (tumour vs lymph node) and
    on everything (tumour vs lymph node and unseen skin/breast tissue), so that neither ranking
    within lymph node nor robustness to tissue never trained on is given up for the other.
    """
    scores = [
        (roc_auc(labels[is_camelyon], oof[e][is_camelyon]) + roc_auc(labels, oof[e])) / 2
        for e in range(len(oof))
    ]
    candidates = list(range(min_epoch, len(oof))) or list(range(len(oof)))
    best = max(candidates, key=lambda e: (round(scores[e], 4), e))
    return best, scores


def train_final(
    data: PatchSet, is_camelyon: np.ndarray, config: TrainConfig, stop_epoch: int, progress: bool
):
    """One network per seed on all the data, kept as it was after ``stop_epoch``."""
    members = []
    for seed in SEEDS:
        cfg = TrainConfig.from_dict({**config.to_dict(), "seed": seed})
        snapshot: dict = {}

        def keep(epoch, model, snapshot=snapshot):
            if epoch == stop_epoch:
                snapshot["state"] = {k: v.clone() for k, v in model.state_dict().items()}

        _log(f"final network, seed {seed}")
        result = train_model(
            data,
            None,
            cfg,
            sample_weights=draw_weights(data, is_camelyon),
            progress=progress,
            on_epoch=keep,
            stop_after_epoch=stop_epoch,
        )
        result.model.load_state_dict(snapshot["state"])
        members.append(result.model.eval())
    return members


def _metric_row(m) -> dict:
    return {
        "patches (tumour)": f"{m.n} ({m.positives})",
        "ROC AUC": m.roc_auc,
        "sensitivity": m.sensitivity,
        "specificity": m.specificity,
        "accuracy": m.accuracy,
        "Brier score": m.brier,
        "expected calibration error": m.ece,
    }


def build_card(
    sources, data, is_camelyon, config, stop_epoch, aucs, oof_p, threshold, pcam_p, members, elapsed
):
    camelyon, mined, pcam = sources["camelyon"], sources["mined"], sources["pcam"]
    labels = data.labels
    cam_sel = is_camelyon
    card = base_card(
        "default",
        f"SmallCNN(width={config.width}) x{len(members)} seeds "
        f"({count_parameters(members[0]):,} parameters each), probabilities averaged",
        count_parameters(Ensemble(members)),
        CROP_PX,
        MODEL_SPACING,
    )
    card["threshold"] = threshold
    card["threshold_rule"] = (
        "Youden's J on the pooled leave-one-slide-out predictions (training data only)"
    )
    card["intended_use"] = (
        "Research use: a first-pass heatmap of possible breast-cancer metastasis in H&E lymph-node "
        "slides at any 20x/40x scan, for a person to review. Not a diagnostic device."
    )
    per_slide = ", ".join(
        f"{s}: {int(((camelyon.slides == s) & (camelyon.labels == 1)).sum())} tumour / "
        f"{int(((camelyon.slides == s) & (camelyon.labels == 0)).sum())} normal"
        for s in sorted(set(camelyon.slides))
    )
    mined_counts = ", ".join(
        f"{s}: {int((mined.slides == s).sum())}" for s in sorted(set(mined.slides))
    )
    card["data"] = [
        f"57 Camelyon16 patches (256 px at 0.243 µm/px, Radboud) from 3 slides ({per_slide}), labelled "
        "and masked from the official lesion polygons (exclusions cut out); stored at 0.972 µm/px, 64 px",
        f"{len(mined)} normal tiles (64 µm, 50 % overlap, ≥5 % tissue incl. fat, stroma, capsule-like "
        f"dermis, epidermis, a normal breast lobule) mined from slides without metastasis ({mined_counts}); "
        f"CropBreastSlide's resolution tag is bogus (96 dpi), taken as {CROP_BREAST_MPP} µm/px",
        "8 Kaggle/PCam patches (3 tumour) kept out of training as a small external check",
    ]
    card["training"] = [
        f"crops of {CROP_PX} px at {MODEL_SPACING} µm/px; target = tumour fraction of the centre third "
        "(PCam's label region) of each augmented crop",
        "augmentation: flips and 90° rotations, scale ±10 %, random position, HED stain jitter "
        "(density ×U(0.5, 1.5), shift ±0.015), brightness/contrast/saturation, 15 % greyscale",
        f"batches: half tumour, half normal (normal: {CAMELYON_NORMAL_SHARE:.0%} Camelyon16 lymph node, "
        f"rest mined tiles); {config.batch_size} per step, {config.steps_per_epoch} steps per epoch, "
        f"AdamW lr {config.lr} one-cycle, weight decay {config.weight_decay}; the network kept is an "
        f"exponential moving average of the weights (decay {config.ema} per step)",
        f"epochs: {stop_epoch + 1} of {config.epochs}, chosen on the leave-one-slide-out predictions: "
        "mean of the ROC AUC on Camelyon16 patches and on Camelyon16 + unseen normal tiles "
        f"(per epoch: {', '.join(f'{a:.3f}' for a in aucs)})",
        f"seeds {', '.join(map(str, SEEDS))}, averaged in one TorchScript module; "
        f"recipe ran in {elapsed / 60:.1f} min on {torch.get_num_threads()} CPU threads",
    ]
    oof_all = patch_metrics(labels, oof_p, threshold)
    oof_cam = patch_metrics(labels[cam_sel], oof_p[cam_sel], threshold)
    neg_mined = oof_p[~cam_sel]
    pcam_m = patch_metrics(pcam.labels, pcam_p, threshold)
    card["validation"] = {
        "scheme": (
            "Leave one slide out: 3 folds, each trained without one Camelyon16 slide "
            "(tumor_001, tumor_004, tumor_064) and, in two folds, without one normal slide "
            "(CropBreastSlide, CMU-1-Small-Region); every patch is predicted by the fold that did "
            "not see its slide (one seed per fold, weaker than the final 3-seed model trained on all "
            "slides). Thresholded at the card's threshold. The PCam patches come from other "
            "Camelyon16 slides and were never trained on."
        ),
        "results": {
            "Camelyon16 patches, out of fold": _metric_row(oof_cam),
            "Camelyon16 patches + unseen normal tiles, out of fold": _metric_row(oof_all),
            "Unseen normal tiles (skin, breast), out of fold": {
                "tiles": len(neg_mined),
                "called tumour at the threshold": float((neg_mined >= threshold).mean()),
                "mean probability": float(neg_mined.mean()),
            },
            "8 Kaggle/PCam patches, final model (external check, tiny)": _metric_row(pcam_m),
        },
    }
    cal = calibration(labels[cam_sel], oof_p[cam_sel], bins=5)
    pooled = calibration(labels, oof_p)
    card["calibration"] = {
        **cal.__dict__,
        "pooled_with_unseen_normal_tiles": pooled.__dict__,
        "note": (
            f"Out-of-fold probabilities of the 57 Camelyon16 patches (5 bins below): Brier "
            f"{cal.brier:.3f}, expected calibration error {cal.ece:.3f}. With the unseen skin and "
            f"breast tiles pooled in: Brier {pooled.brier:.3f}, ECE {pooled.ece:.3f}, because tissue "
            "never seen in training gets middling-to-high probabilities. Training draws tumour and "
            "normal equally often, so probabilities assume a 50 % prior: on a whole slide, where "
            "tumour is rare, read them as a ranking and use the threshold above, not as the chance "
            "that a patch is tumour."
        ),
    }
    card["limitations"] = [
        "Trained on 28 tumour patches from 2 slides of one centre (Radboud): expect lower accuracy "
        "on other centres, scanners and stains despite the stain augmentation.",
        "The validation sets are tiny (57 patches, 3 slides); the numbers are noisy.",
        "Negatives include skin and breast tissue, not lymph-node capsule, fat or vessels from real "
        "Camelyon slides; expect some false positives there and on germinal centres and histiocytes.",
        "48 µm field of view: isolated tumour cells and small clusters are not reliably detected.",
    ]
    card["reproduce"] = "make model   # = python -m napari_metastasis.training.bundled_recipe"
    card["environment"] = {"python": platform.python_version(), "torch": torch.__version__}
    return card


def update_readme(readme: Path, markdown: str) -> bool:
    """Replace the text between the README's bundled-model-card markers (if present)."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    body = markdown.replace("# Model card", "### Model card", 1).replace("\n## ", "\n#### ")
    new = re.sub(
        re.escape(README_START) + r".*?" + re.escape(README_END),
        lambda _: f"{README_START}\n{body}{README_END}",
        text,
        flags=re.S,
    )
    readme.write_text(new)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train the bundled default model from ../shared/data"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--readme", type=Path, default=PROJECT_ROOT / "README.md")
    parser.add_argument(
        "--quick", action="store_true", help="a few steps only (to test the recipe)"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    start = time.time()
    config = recipe_config(args.quick)
    torch.set_num_threads(config.threads or 2)
    progress = not args.no_progress and sys.stderr.isatty()

    _log(f"reading data from {args.data}")
    sources = load_sources(args.data)
    data = PatchSet.concat([sources["camelyon"], sources["mined"]])
    is_camelyon = np.arange(len(data)) < len(sources["camelyon"])
    _log(
        f"{len(sources['camelyon'])} Camelyon16 patches, {len(sources['mined'])} mined normal tiles"
    )

    oof = cross_validate(data, is_camelyon, config, progress)
    stop_epoch, aucs = choose_epochs(oof, data.labels, is_camelyon, min_epoch=config.epochs // 2)
    oof_p = oof[stop_epoch]
    threshold = youden_threshold(data.labels, oof_p)
    _log(
        f"out-of-fold selection score per epoch {np.round(aucs, 3).tolist()}; keeping epoch {stop_epoch}, "
        f"threshold {threshold:.3f}"
    )

    members = train_final(data, is_camelyon, config, stop_epoch, progress)
    pcam_p = predict_probabilities(Ensemble(members).eval(), sources["pcam"], config)
    elapsed = time.time() - start
    card = build_card(
        sources,
        data,
        is_camelyon,
        config,
        stop_epoch,
        aucs,
        oof_p,
        threshold,
        pcam_p,
        members,
        elapsed,
    )
    card["history"] = {
        "oof_selection_score_per_epoch": aucs,
        "oof_all_auc_per_epoch": [roc_auc(data.labels, oof[e]) for e in range(len(oof))],
        "oof_camelyon_auc_per_epoch": [
            roc_auc(data.labels[is_camelyon], oof[e][is_camelyon]) for e in range(len(oof))
        ],
    }
    markdown = render_card(card)
    export_model(
        members,
        args.out,
        architecture=card["architecture"],
        patch_px=CROP_PX,
        spacing_um=MODEL_SPACING,
        card_markdown=markdown,
        card_data=card,
    )
    _log(f"model written to {args.out}")
    if not args.quick and update_readme(args.readme, markdown):
        _log(f"model card copied into {args.readme}")
    print(json.dumps(card["validation"]["results"], indent=2, default=float))
    _log(f"done in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
