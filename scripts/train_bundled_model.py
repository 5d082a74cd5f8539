"""The recipe of the bundled default model: ``make model`` (``python scripts/train_bundled_model.py``).

It reads ``../shared/data`` only, runs on 2 CPU cores in well under 30 minutes, and writes:

* the model folder ``napari_metastasis/models/bundled/default`` (weights as safetensors + a
  TorchScript copy for WSInfer, config.json, model_card.json, README.md);
* ``resources/bundled_model_recipe.json``: every number the recipe measured (per-epoch curves,
  out-of-fold and held-out predictions' metrics, calibration, whole-slide false positives); the model
  card is built from this file only, and a test checks that they agree;
* ``resources/bundled_model_fp_<slide>.png``: heatmaps of the two metastasis-free slides;
* the model-card section of the docs' model-card page, ``docs/model-card.md`` (between its
  markers).

Design (what each choice is for):

* **Data**: 4,989 PCam/Kaggle patches (both Camelyon16 centres), the 57 Camelyon16 patches of
  tumor_001/004/064 with exact masks from the official polygons, and normal tiles mined from the two
  metastasis-free slides (skin, breast). Everything is kept at 0.972 µm/px (PCam's), 96 px
  (the Camelyon16 patches, 62 µm across, are mirrored out at their edges to that size).
* **Held-out PCam**: a fixed, stratified 20 % of the PCam patches is the test set, never trained on
  or looked at to choose anything; another 10 % is the validation set (threshold, calibration
  checks, the epoch count chosen in trials). PCam has no slide ids, so these splits may share slides
  with training: the by-slide Camelyon16 numbers below are the stricter test.
* **Validation by slide**: three folds, each trained without one Camelyon16 tumour slide (and, in two
  folds, without one of the normal slides); each held-out slide is predicted only by the network that
  never saw it. The bundled model is the average of the three fold networks, so no extra training is
  needed and each member has missed a different slide.
* **Encodings**: JPEG re-encoding (half of it at twice the model's resolution, as a slide
  re-encoded at 0.5 µm/px shows it), blur, per-channel gamma and a near-identity colour matrix
  (what a different scanner profile or a DICOM conversion does) on top of strong HED stain jitter.
  The first 80-px run without the fine JPEG and the blur moved the sample's probabilities by 0.035
  on average between its SVS and DICOM copies; re-encoding the SVS pixels as JPEG (quality 90)
  reproduced that shift exactly, and a 0.5-px blur gave the same shift the other way.
* **Test-time augmentation**: the bundled network averages the 8 flips/90° rotations of each patch,
  dealt out to the three fold networks in turn (8 forward passes a patch, not 24).
* **Threshold** on the validation PCam patches (Youden's J), never on test numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(PROJECT_ROOT))

from napari_metastasis.datasets.annotations_source import geometries_by_slide  # noqa: E402
from napari_metastasis.datasets.extract import extract_from_slide  # noqa: E402
from napari_metastasis.datasets.ingest import (  # noqa: E402
    CAMELYON16_MPP,
    ingest_kaggle_pcam,
    ingest_labelled_folder,
)
from napari_metastasis.datasets.patchset import PatchSet  # noqa: E402
from napari_metastasis.datasets.pcam_splits import (  # noqa: E402
    read_kaggle_labels,
    split_folder_labels,
)
from napari_metastasis.evaluation.metrics import (  # noqa: E402
    calibration,
    patch_metrics,
    roc_auc,
    sensitivity_at_specificity,
    youden_threshold,
)
from napari_metastasis.models.networks import Ensemble, SmallCNN, count_parameters  # noqa: E402
from napari_metastasis.models.registry import BUNDLED_DIR  # noqa: E402
from napari_metastasis.training.augment import AugmentConfig  # noqa: E402
from napari_metastasis.training.card import base_card, render_card  # noqa: E402
from napari_metastasis.training.export import publish_model  # noqa: E402
from napari_metastasis.training.trainer import (  # noqa: E402
    TrainConfig,
    predict_probabilities,
    train_model,
)

DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data"
DEFAULT_OUT = BUNDLED_DIR / "default"
RESULTS_FILE = PROJECT_ROOT / "resources" / "bundled_model_recipe.json"
NODE_VALIDATION_FILE = PROJECT_ROOT / "resources" / "bench_nodes.json"
HEATMAP_PATTERN = "bundled_model_fp_{slide}.png"

STORE_SPACING = 0.972  # µm/px the sources are kept at (PCam's spacing)
STORE_SIZE = 96  # PCam's whole patch: 93 µm
CAMELYON_STORE_SIZE = 64  # the Camelyon16 patches cover 62 µm (256 px at 0.243 µm/px)
CROP_PX = 80
MINE_STRIDE_UM = 32.0  # normal tiles mined from the metastasis-free slides every 32 µm
MODEL_SPACING = 1.0
#: µm/px assumed for CropBreastSlide.tiff (its TIFF says 96 dpi, i.e. 264.6 µm/px: impossible).
CROP_BREAST_MPP = 0.5
NORMAL_SLIDES = {
    "CMU-1-Small-Region": ("slides/aperio_svs/CMU-1-Small-Region.svs", None),
    "CropBreastSlide": ("slides/generic_tiff/CropBreastSlide.tiff", CROP_BREAST_MPP),
}
#: (held-out Camelyon16 slide, held-out normal slide, seed) per fold.
FOLDS = (
    ("tumor_001", "CropBreastSlide", 0),
    ("tumor_004", "CMU-1-Small-Region", 1),
    ("tumor_064", None, 2),
)
#: The PCam/Kaggle folders trained on (their splits: napari_metastasis.datasets.pcam_splits).
PCAM_FOLDERS = ("pcam_kaggle_5k", "pcam_kaggle_more")
#: Share of each class's draws per source (within the class); the batches are half tumour.
NORMAL_MIX = {"pcam": 0.75, "camelyon": 0.05, "mined": 0.20}
TUMOUR_MIX = {"pcam": 0.9, "camelyon": 0.1}
TTA = True
#: From this epoch on (every 2 epochs) half the normal draws go to the 20 % of normal training
#: patches the network scores highest (training/hard_negatives.py).
HARD_NEGATIVE_START = 8
#: The specificities a clinic reads a detector at (mostly normal tissue on every node).
HIGH_SPECIFICITIES = (0.99, 0.999)

#: The config.json block of the deposit decision (napari_metastasis.clinical.decision.CONFIG_KEY).
DECISION_KEY = "napari_metastasis_decision"

#: The docs page that shows the card (between these markers): docs/model-card.md.
CARD_PAGE = PROJECT_ROOT / "docs" / "model-card.md"
README_START = "<!-- bundled-model-card:start -->"
README_END = "<!-- bundled-model-card:end -->"


def recipe_config(quick: bool = False) -> TrainConfig:
    return TrainConfig(
        architecture="smallcnn",
        width=16,
        dropout=0.2,
        crop_px=CROP_PX,
        spacing_um=MODEL_SPACING,
        epochs=2 if quick else 24,
        steps_per_epoch=2 if quick else 60,
        batch_size=16 if quick else 64,
        lr=3e-3,
        weight_decay=1e-4,
        balance="oversample",
        positive_share=0.5,
        ema=0.98,
        hard_negative_start=1 if quick else HARD_NEGATIVE_START,
        hard_negative_every=2,
        hard_negative_top=0.2,
        hard_negative_share=0.5,
        augment=AugmentConfig(
            hed_scale=0.3,
            greyscale_p=0.05,
            gamma=0.1,
            colour_mix=0.05,
            jpeg_p=0.6,
            jpeg_quality_min=50,
            jpeg_fine_share=0.5,
            blur_p=0.25,
            blur_sigma=1.0,
        ),
        threads=int(os.environ.get("NAPARI_METASTASIS_THREADS", "1")),
    )


def _cpu_seconds() -> float:
    """CPU time of this process and its finished workers (what the recipe costs on free cores)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- data ---------------------------------------------------------------------------------------
def load_sources(data: Path, pcam_limit: int | None = None) -> dict[str, PatchSet]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the official polygons self-intersect; they are repaired
        geometries = geometries_by_slide(
            sorted((data / "annotations" / "camelyon16_ncrf_json").glob("*.json"))
        )
    camelyon = ingest_labelled_folder(
        data / "patches" / "camelyon16_256",
        spacing_um=STORE_SPACING,
        patch_size=CAMELYON_STORE_SIZE,
        source_mpp=CAMELYON16_MPP,
        geometries=geometries,
    )
    camelyon = reflect_pad(camelyon, STORE_SIZE)
    mined = [
        extract_from_slide(
            data / rel,
            None,
            spacing_um=STORE_SPACING,
            patch_size=STORE_SIZE,
            stride_um=MINE_STRIDE_UM,
            min_tissue=0.05,
            mpp=mpp,
            slide_name=name,
        )
        for name, (rel, mpp) in NORMAL_SLIDES.items()
    ]
    pcam = PatchSet.concat(
        [
            ingest_kaggle_pcam(
                data / "patches" / folder / "train",
                spacing_um=STORE_SPACING,
                patch_size=STORE_SIZE,
                limit=pcam_limit,
            )
            for folder in PCAM_FOLDERS
            if (data / "patches" / folder / "train_labels.csv").is_file()
        ]
    )
    return {"camelyon": camelyon, "mined": PatchSet.concat(mined), "pcam": pcam}


def reflect_pad(patches: PatchSet, size: int) -> PatchSet:
    """Patches (and masks) mirrored out at their edges to ``size`` px.

    The Camelyon16 patches cover 62 µm, less than the other sources' 93 µm; mirrored borders let
    them share batches (a crop always keeps most of the real patch, and the mask follows the
    pixels, so the soft target stays right).
    """
    pad = (size - patches.patch_size) // 2
    if pad <= 0:
        return patches
    spec = ((0, 0), (pad, size - patches.patch_size - pad), (pad, size - patches.patch_size - pad))
    return replace(
        patches,
        images=np.pad(patches.images, (*spec, (0, 0)), mode="reflect"),
        masks=np.pad(patches.masks, spec, mode="reflect"),
    )


def split_pcam(data: Path, pcam_limit: int | None = None) -> dict[str, np.ndarray]:
    """Train / validation / test indices into the concatenated PCam folders: each folder split as
    :mod:`napari_metastasis.datasets.pcam_splits` fixes it (the node validation's held-out
    patches are exactly the "test" ones)."""
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    offset = 0
    for folder in PCAM_FOLDERS:
        if not (data / "patches" / folder / "train_labels.csv").is_file():
            continue
        _ids, labels = read_kaggle_labels(data / "patches" / folder)
        labels = labels[:pcam_limit] if pcam_limit else labels
        for part, index in split_folder_labels(folder, labels).items():
            parts[part].append(index + offset)
        offset += len(labels)
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def draw_weights(labels: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Within-class draw weights mixing the sources (:data:`NORMAL_MIX`, :data:`TUMOUR_MIX`)."""
    w = np.zeros(len(labels))
    for label, mix in ((0, NORMAL_MIX), (1, TUMOUR_MIX)):
        present = {s: (labels == label) & (source == s) for s in mix}
        total = sum(share for s, share in mix.items() if present[s].any())
        for s, share in mix.items():
            if present[s].any():
                w[present[s]] = share / total / present[s].sum()
    return w


# --- training -----------------------------------------------------------------------------------
def _tta_probabilities(
    model: torch.nn.Module, patches: PatchSet, config: TrainConfig
) -> np.ndarray:
    return predict_probabilities(Ensemble([model], tta=TTA).eval(), patches, config)


def _fold_job(sources, pcam_split, config: TrainConfig, fold: tuple, progress: bool) -> dict:
    """Train one fold's network; per-epoch curves on the validation PCam patches and its held-out
    slides. Returns plain data (the weights as a state dict) so it can run in a worker process."""
    held_tumour, held_normal, seed = fold
    torch.set_num_threads(config.threads or 1)
    camelyon, mined, pcam = sources["camelyon"], sources["mined"], sources["pcam"]
    pcam_val = pcam.subset(pcam_split["val"])
    cam_keep = camelyon.slides != held_tumour
    mined_keep = mined.slides != held_normal
    parts = [
        pcam.subset(pcam_split["train"]),
        camelyon.subset(np.flatnonzero(cam_keep)),
        mined.subset(np.flatnonzero(mined_keep)),
    ]
    names = ["pcam", "camelyon", "mined"]
    train = PatchSet.concat(parts)
    source = np.concatenate(
        [np.full(len(p), n, dtype=object) for p, n in zip(parts, names, strict=True)]
    )
    held_cam = camelyon.subset(np.flatnonzero(~cam_keep))
    held_mined = mined.subset(np.flatnonzero(~mined_keep)) if held_normal else None
    curve: list[dict] = []

    def record(epoch, model):
        pv = predict_probabilities(model, pcam_val, config)
        row = {"epoch": epoch + 1, "pcam_val_auc": roc_auc(pcam_val.labels, pv)}
        row["held_slide_probabilities"] = predict_probabilities(model, held_cam, config).tolist()
        if held_mined is not None:
            pm = predict_probabilities(model, held_mined, config)
            row["held_normal_tiles_mean_probability"] = float(pm.mean())
        curve.append(row)
        _log(
            f"  without {held_tumour}: epoch {epoch + 1}, PCam validation AUC {row['pcam_val_auc']:.3f}"
        )

    _log(
        f"fold without {held_tumour}"
        + (f" and {held_normal}" if held_normal else "")
        + f" ({len(train)} patches)"
    )
    result = train_model(
        train,
        None,
        replace(config, seed=seed),
        sample_weights=draw_weights(train.labels, source),
        progress=progress,
        on_epoch=record,
    )
    for row, h in zip(curve, result.history, strict=True):
        row["train_loss"] = h["train_loss"]
    model = result.model.eval()
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "fold": {
            "held_out_camelyon_slide": held_tumour,
            "held_out_normal_slide": held_normal,
            "seed": seed,
            "train_patches": len(train),
            "held_labels": held_cam.labels.tolist(),
            "held_probabilities_tta": _tta_probabilities(model, held_cam, config).tolist(),
            "epochs": curve,
        },
    }


def train_folds(sources, pcam_split, config: TrainConfig, progress: bool, workers: int):
    """One network per fold, ``workers`` folds at a time in separate processes (one thread each:
    on a small, shared machine, processes share the cores better than threads of one process)."""
    jobs = [(sources, pcam_split, config, fold, progress and workers == 1) for fold in FOLDS]
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            outputs = list(pool.map(_fold_job, *zip(*jobs, strict=True)))
    else:
        outputs = [_fold_job(*job) for job in jobs]
    members = []
    for out in outputs:
        model = SmallCNN(width=config.width, dropout=config.dropout)
        model.load_state_dict(out["state"])
        members.append(model.eval())
    return members, [out["fold"] for out in outputs]


# --- whole slides -------------------------------------------------------------------------------
def whole_slide_false_positives(
    model_dir: Path, data: Path, threshold: float, heatmap_dir: Path | None
) -> dict[str, dict]:
    """Regions at the threshold per cm² of tissue on the metastasis-free slides, the deposits the
    model folder's decision confirms there, and heatmaps."""
    from napari_metastasis.clinical.decision import rule_for_model
    from napari_metastasis.maps.heatmap import render_heatmap, save_heatmap
    from napari_metastasis.models import load_model
    from napari_metastasis.pipeline import answer_slide, predict_slide
    from napari_metastasis.slides.slide import Slide

    model = load_model(model_dir, device="cpu")
    out = {}
    for name, (rel, mpp) in NORMAL_SLIDES.items():
        with Slide(data / rel, mpp=mpp) as slide:
            result = predict_slide(slide, model, num_workers=0)
            rule = rule_for_model(model.config.extra, threshold)
            answer = answer_slide(result.prob_map, threshold, rule=rule)
            regions, confirmed = answer.regions, answer.confirmed
            tissue = result.tissue
            res = slide.require_resolution()
            tissue_cm2 = (
                float(
                    tissue.mask.sum()
                    * tissue.downsample_x
                    * tissue.downsample_y
                    * res.mpp_x
                    * res.mpp_y
                )
                / 1e8
            )
            values = result.prob_map.values[~np.isnan(result.prob_map.values)]
            out[name] = {
                "patches": len(values),
                "tissue_cm2": tissue_cm2,
                "regions_at_threshold": len(regions),
                "regions_per_cm2": len(regions) / tissue_cm2 if tissue_cm2 else float("nan"),
                "confirmed_deposits": len(confirmed),
                "patches_at_threshold": int((values >= threshold).sum()),
                "max_probability": float(values.max()) if len(values) else float("nan"),
                "mean_probability": float(values.mean()) if len(values) else float("nan"),
            }
            if heatmap_dir is not None:
                path = heatmap_dir / HEATMAP_PATTERN.format(slide=name)
                save_heatmap(path, render_heatmap(slide, result.prob_map, regions, max_size=512))
                out[name]["heatmap"] = (
                    str(path.relative_to(PROJECT_ROOT))
                    if path.resolve().is_relative_to(PROJECT_ROOT)
                    else str(path)
                )
    return out


# --- results and card ---------------------------------------------------------------------------
def _metrics(labels, probs, threshold) -> dict:
    m = patch_metrics(np.asarray(labels), np.asarray(probs), threshold)
    at_high = {
        f"sensitivity_at_{spec:.1%}_specificity": sensitivity_at_specificity(
            np.asarray(labels), np.asarray(probs), spec
        )[0]
        for spec in HIGH_SPECIFICITIES
    }
    return {
        **at_high,
        "patches": m.n,
        "tumour": m.positives,
        "roc_auc": m.roc_auc,
        "sensitivity": m.sensitivity,
        "specificity": m.specificity,
        "accuracy": m.accuracy,
        "brier": m.brier,
        "ece": m.ece,
    }


def summarise(sources, pcam_split, folds, ensemble, config) -> dict:
    """Every number of the card, from predictions (test numbers are computed, never used)."""
    pcam = sources["pcam"]
    val = pcam.subset(pcam_split["val"])
    test = pcam.subset(pcam_split["test"])
    p_val = predict_probabilities(ensemble, val, config)
    p_test = predict_probabilities(ensemble, test, config)
    threshold = youden_threshold(val.labels, p_val)
    oof_labels = np.concatenate([f["held_labels"] for f in folds])
    oof_p = np.concatenate([f["held_probabilities_tta"] for f in folds])
    n_epochs = len(folds[0]["epochs"])
    curves = {
        "epoch": list(range(1, n_epochs + 1)),
        "pcam_val_auc_per_fold": [[row["pcam_val_auc"] for row in f["epochs"]] for f in folds],
        "camelyon_out_of_fold_auc": [
            roc_auc(
                oof_labels,
                np.concatenate([f["epochs"][e]["held_slide_probabilities"] for f in folds]),
            )
            for e in range(n_epochs)
        ],
        "train_loss_per_fold": [[row["train_loss"] for row in f["epochs"]] for f in folds],
    }
    per_slide = {}
    for f in folds:
        labels = np.asarray(f["held_labels"])
        probs = np.asarray(f["held_probabilities_tta"])
        per_slide[f["held_out_camelyon_slide"]] = {
            "patches": len(labels),
            "tumour": int(labels.sum()),
            "roc_auc": roc_auc(labels, probs),
            "called_correctly_at_threshold": float(((probs >= threshold) == labels).mean()),
        }
    return {
        "threshold": threshold,
        "threshold_rule": (
            "Youden's J on the validation PCam patches (10 %, predicted by the bundled model); "
            "never on the test patches"
        ),
        "pcam_split": {k: len(v) for k, v in pcam_split.items()},
        "pcam_validation": _metrics(val.labels, p_val, threshold),
        "pcam_test": _metrics(test.labels, p_test, threshold),
        "camelyon_out_of_fold": _metrics(oof_labels, oof_p, threshold),
        "camelyon_per_slide": per_slide,
        "calibration_pcam_test": calibration(test.labels, p_test, bins=10).__dict__,
        "calibration_camelyon_out_of_fold": calibration(oof_labels, oof_p, bins=5).__dict__,
        "curves": curves,
    }


def build_card(results: dict) -> dict:
    """The model card, from the recipe's results file only (so a test can check it)."""
    s = results["summary"]
    cfg = results["config"]
    counts = results["data"]
    card = base_card(
        "default",
        results["architecture"],
        results["parameters"],
        cfg["crop_px"],
        cfg["spacing_um"],
    )
    card["input"]["transform"] = (
        f"Resize to {cfg['crop_px']} px, ToTensor (RGB in [0, 1]); normalisation is inside the network"
    )
    card["test_time_augmentation"] = (
        "each patch is classified in its 8 flips/90° rotations, dealt out to the fold networks "
        "in turn (8 forward passes a patch), and the probabilities averaged"
        if results["tta"]
        else "off"
    )
    card["threshold"] = s["threshold"]
    card["threshold_rule"] = s["threshold_rule"]
    decision = results.get("decision")
    if decision and "region_threshold" in decision:
        measured = decision["measured"]
        card["patch_threshold"] = s["threshold"]
        card["threshold"] = decision["region_threshold"]
        card["threshold_rule"] = (
            f"the region threshold at which the deposits of {decision['chosen']['nodes']} "
            f"validation node slides measure best ({measured['within_stride']} of "
            f"{measured['deposits']} within one stride, mean error "
            f"{measured['mean_error_mm']:+.3f} mm; scripts/choose_decision_rule.py), never on the "
            f"test (held-out) nodes or patches; Youden's J on the validation PCam patches is "
            f"{s['threshold']:.3f}, where the patch numbers below are taken"
        )
    card["intended_use"] = (
        "Research use: a first-pass heatmap of possible breast-cancer metastasis in H&E lymph-node "
        "slides at any 20x/40x scan, for a person to review. Not a diagnostic device."
    )
    split = s["pcam_split"]
    card["data"] = [
        f"{counts['pcam']} PatchCamelyon/Kaggle patches of pcam_kaggle_5k and pcam_kaggle_more "
        f"({counts['pcam_tumour']} tumour; both Camelyon16 centres), 96 px at 0.972 µm/px: "
        f"{split['train']} for training, {split['val']} validation, {split['test']} held-out test "
        "(stratified, fixed seed per folder: napari_metastasis/datasets/pcam_splits.py)",
        f"{counts['camelyon']} Camelyon16 patches (tumor_001/004/064, Radboud) labelled and masked "
        "from the official lesion polygons (62 µm across, mirrored out at the edges to "
        f"{STORE_SIZE * STORE_SPACING:.0f} µm); used by slide (see validation)",
        f"{counts['mined']} normal tiles ({STORE_SIZE * STORE_SPACING:.0f} µm, every "
        f"{MINE_STRIDE_UM:.0f} µm) mined from the two metastasis-free "
        "slides (CMU-1-Small-Region, skin; CropBreastSlide, breast, taken as "
        f"{CROP_BREAST_MPP} µm/px because its resolution tag is bogus)",
    ]
    aug = cfg["augment"]
    card["training"] = [
        f"crops of {cfg['crop_px']} px at {cfg['spacing_um']} µm/px from patches stored at 0.972 "
        "µm/px; target = tumour fraction of the centre third where a mask exists, else the label",
        f"augmentation: flips/90° rotations, scale ±{aug['scale_jitter']:.0%}, random position, HED "
        f"stain jitter (×U(1±{aug['hed_scale']}), shift ±{aug['hed_shift']}), brightness/contrast/"
        f"saturation, {aug['greyscale_p']:.0%} greyscale, per-channel gamma ±{aug['gamma']}, colour "
        f"matrix ±{aug['colour_mix']}, Gaussian blur of {aug['blur_p']:.0%} of crops (sigma "
        f"0.2-{aug['blur_sigma']} px), JPEG re-encoding of {aug['jpeg_p']:.0%} of crops at quality "
        f"{aug['jpeg_quality_min']}-95 ({aug['jpeg_fine_share']:.0%} of them at twice the "
        "resolution, then halved: artefacts of a slide re-encoded at 0.5 µm/px)",
        f"batches of {cfg['batch_size']}, half tumour; normal draws "
        + ", ".join(f"{v:.0%} {k}" for k, v in results["normal_mix"].items())
        + "; tumour draws "
        + ", ".join(f"{v:.0%} {k}" for k, v in results["tumour_mix"].items()),
        *(
            [
                f"hard-negative mining: from epoch {cfg['hard_negative_start'] + 1}, every "
                f"{cfg['hard_negative_every']} epochs, the averaged network scores every normal "
                f"training patch and {cfg['hard_negative_share']:.0%} of the normal draws go to the "
                f"{cfg['hard_negative_top']:.0%} it scores highest"
            ]
            if cfg.get("hard_negative_start")
            else []
        ),
        f"{cfg['epochs']} epochs of {cfg['steps_per_epoch']} steps, AdamW lr {cfg['lr']} "
        f"one-cycle, weight decay {cfg['weight_decay']}; the weights kept are an exponential moving "
        f"average (decay {cfg['ema']}); fixed schedule, the last epoch is kept",
        f"3 fold networks (seeds 0-2) averaged into the bundled model; recipe ran in "
        f"{results['elapsed_s'] / 60:.1f} min wall, {results['cpu_s'] / 60:.1f} min of CPU time "
        f"({results['workers']} fold processes of {results['threads']} thread each; "
        f"{results['machine']})",
    ]
    per_slide = {
        f"{name} (held out)": {
            "patches (tumour)": f"{v['patches']} ({v['tumour']})",
            "ROC AUC": v["roc_auc"],
            "called correctly at the threshold": v["called_correctly_at_threshold"],
        }
        for name, v in s["camelyon_per_slide"].items()
    }

    def row(m: dict) -> dict:
        return {
            "patches (tumour)": f"{m['patches']} ({m['tumour']})",
            "ROC AUC": m["roc_auc"],
            "sensitivity": m["sensitivity"],
            "specificity": m["specificity"],
            **{
                f"sensitivity at {spec:.1%} specificity": m[
                    f"sensitivity_at_{spec:.1%}_specificity"
                ]
                for spec in HIGH_SPECIFICITIES
                if f"sensitivity_at_{spec:.1%}_specificity" in m
            },
            "accuracy": m["accuracy"],
            "Brier score": m["brier"],
            "expected calibration error": m["ece"],
        }

    fp = results["whole_slide_false_positives"]
    card["validation"] = {
        "scheme": (
            "By slide on Camelyon16: 3 folds, each trained without one tumour slide (tumor_001, "
            "tumor_004, tumor_064) and, in two folds, without one normal slide; each held-out patch "
            "is predicted by the one network that never saw its slide (weaker than the bundled "
            "3-network average). Held-out PCam: the test share of each PCam folder (20 % of "
            "pcam_kaggle_5k, 40 % of pcam_kaggle_more; datasets/pcam_splits.py, fixed seeds), never "
            "trained on and never used for a choice; the node validation is built from these patches only (PCam has no slide ids, so these may share slides with "
            "training). Patch numbers at Youden's J threshold on the validation patches, with "
            "test-time augmentation."
        ),
        "results": {
            "Camelyon16 patches, by slide (out of fold)": row(s["camelyon_out_of_fold"]),
            **per_slide,
            "Held-out PCam patches (test)": row(s["pcam_test"]),
            "Validation PCam patches (threshold chosen here)": row(s["pcam_validation"]),
        },
    }
    cal = s["calibration_pcam_test"]
    card["calibration"] = {
        **cal,
        "ece_camelyon_out_of_fold": s["calibration_camelyon_out_of_fold"]["ece"],
        "note": (
            f"Reliability of the bundled model on the {s['pcam_test']['patches']} held-out PCam "
            f"patches: expected calibration error {cal['ece']:.3f}, Brier {cal['brier']:.3f} "
            f"(Camelyon16 out of fold: ECE {s['calibration_camelyon_out_of_fold']['ece']:.3f}). "
            "Training batches are half tumour, so on a whole slide, where tumour is rare, read the "
            "probabilities as a ranking and use the threshold, not as the chance a patch is tumour."
        ),
    }
    card["whole_slide_false_positives"] = {
        name: {
            "tissue (cm²)": v["tissue_cm2"],
            "patches": v["patches"],
            "regions at the threshold": v["regions_at_threshold"],
            "regions per cm² of tissue": v["regions_per_cm2"],
            "max probability": v["max_probability"],
        }
        for name, v in fp.items()
    }
    card["whole_slide_false_positives_note"] = (
        "Both slides hold no metastasis; normal tiles from them were in the training data of two "
        "of the three fold networks, so this is a check of the whole pipeline on whole slides "
        "(tissue detection, reading, the threshold), not an unseen-data estimate."
    )
    card["history"] = s["curves"]
    card["limitations"] = [
        "The PCam patches carry no slide ids: the held-out PCam numbers may be optimistic.",
        "The by-slide validation has 3 slides of one centre and 57 patches: noisy.",
        "Negatives include skin and breast tissue, not lymph-node capsule, fat or vessels from "
        "metastasis-free lymph nodes; expect false positives on dense fibrous tissue, germinal "
        "centres and histiocytes.",
        f"{cfg['crop_px'] * cfg['spacing_um']:.0f} µm field of view: isolated tumour cells and "
        "small clusters are not reliably detected.",
    ]
    card["reproduce"] = "make model   # = python scripts/train_bundled_model.py"
    card["environment"] = results["environment"]
    card["recipe_results"] = "resources/bundled_model_recipe.json"
    decision = results.get("decision")
    if decision:
        rule = decision["rule"]
        card["config_blocks"] = {DECISION_KEY: rule}
        chosen = decision["chosen"]
        card["deposit_decision"] = {
            "note": (
                "A region above the threshold is a candidate; it is a confirmed deposit (what the "
                "verdict, the pN stage and the report count) when it holds at least "
                f"{rule['min_seed_patches']} patches with p >= {rule['seed_threshold']:g}. Chosen "
                f"on {chosen['nodes']} node slides of the validation patches (never the held-out "
                f"ones): there the {chosen['false_regions']} false regions held at most "
                f"{chosen['false_max']} such patches and every micro- or macrometastasis at least "
                f"{chosen['true_min']}; the count sits at the geometric middle of that gap "
                f"(scripts/choose_decision_rule.py). ITC deposits confirmed there: "
                f"{chosen['itc_confirmed']} of {chosen['itc_nodes']}."
            ),
            "rule": {k: v for k, v in rule.items() if k != "source"},
        }
    nodes = results.get("node_validation")
    if nodes:
        card["node_validation"] = nodes
    return card


def update_readme(readme: Path, markdown: str) -> bool:
    """Replace the text between the page's bundled-model-card markers (if present): the docs'
    model-card page (:data:`CARD_PAGE`) by default."""
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


def node_validation(bench_file: Path) -> dict | None:
    """The held-out node validation (``make validate``'s JSON) as the card shows it, if run."""
    if not bench_file.is_file():
        return None
    from napari_metastasis.evaluation.node_scores import markdown_table

    bench = json.loads(bench_file.read_text())
    return {
        "note": (
            f"{bench['n_nodes']} node slides ({bench['n_patients']} patients) built from held-out "
            "patches only (the test share of each PCam folder, datasets/pcam_splits.py), run "
            "through `predict` with this model folder (`make validate`, "
            "benchmarks/bench_nodes.py; resources/bench_nodes.json). Mosaics of 80-µm patches "
            "are not whole sections: no capsule, fat, germinal centres or sinus histiocytes at "
            "their natural frequency, and a PCam negative may hold tumour outside its centre."
        ),
        "table": markdown_table(bench),
    }


def recard(
    results_file: Path,
    out: Path,
    readme: Path,
    data: Path = DEFAULT_DATA,
    heatmaps: Path | None = PROJECT_ROOT / "resources",
) -> int:
    """Rebuild the card from the results file and the weights in ``out`` (e.g. after a change of
    the card's layout), with what the pipeline measures again without training: the node
    validation's file, and the whole metastasis-free slides run with the shipped folder at the
    card's threshold (the decision's region threshold once one is chosen): their regions depend
    on the pipeline too, e.g. on where the patch grid puts its cells."""
    from napari_metastasis.models import load_config
    from napari_metastasis.models.safe_weights import build_safe_module

    results = json.loads(results_file.read_text())
    results["node_validation"] = node_validation(NODE_VALIDATION_FILE)
    decision = results.get("decision") or {}
    threshold = decision.get("region_threshold", results["summary"]["threshold"])
    results["whole_slide_false_positives"] = whole_slide_false_positives(
        out, data, threshold, heatmaps
    )
    results_file.write_text(json.dumps(results, indent=1, default=float) + "\n")
    ensemble = build_safe_module(out, load_config(out))
    card = build_card(results)
    publish_model(list(ensemble.members), out, card, tta=results["tta"])
    if update_readme(readme, render_card(card)):
        _log(f"model card copied into {readme}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train the bundled default model from ../shared/data"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--results", type=Path, default=RESULTS_FILE)
    parser.add_argument("--heatmaps", type=Path, default=PROJECT_ROOT / "resources")
    parser.add_argument(
        "--card-page",
        "--readme",
        dest="readme",
        type=Path,
        default=CARD_PAGE,
        help="the page whose bundled-model-card section gets the card (default: %(default)s)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few steps only (to test the recipe)"
    )
    parser.add_argument("--pcam-limit", type=int, help="use only the first N PCam patches")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--workers",
        type=int,
        default=len(FOLDS),
        help="folds trained at once, one process and one thread each (default: all)",
    )
    parser.add_argument(
        "--recard",
        action="store_true",
        help="no training: rebuild the card, the model folder's files and the card page's section from "
        "--results and the weights already in --out, measuring the whole slides again",
    )
    args = parser.parse_args(argv)
    if args.recard:
        return recard(args.results, args.out, args.readme, args.data, args.heatmaps)
    start = time.time()
    load_at_start = os.getloadavg()[0]  # other work on the machine stretches the wall clock
    config = recipe_config(args.quick)
    torch.set_num_threads(config.threads or 2)
    progress = not args.no_progress and sys.stderr.isatty()

    _log(f"reading data from {args.data}")
    sources = load_sources(args.data, args.pcam_limit)
    pcam = sources["pcam"]
    pcam_split = split_pcam(args.data, args.pcam_limit)
    _log(
        f"{len(pcam)} PCam ({int(pcam.labels.sum())} tumour; split "
        f"{ {k: len(v) for k, v in pcam_split.items()} }), {len(sources['camelyon'])} Camelyon16, "
        f"{len(sources['mined'])} mined normal tiles"
    )
    members, folds = train_folds(sources, pcam_split, config, progress, args.workers)
    ensemble = Ensemble(members, tta=TTA).eval()
    summary = summarise(sources, pcam_split, folds, ensemble, config)
    _log(
        f"threshold {summary['threshold']:.3f}; Camelyon16 by slide AUC "
        f"{summary['camelyon_out_of_fold']['roc_auc']:.3f}; PCam test AUC "
        f"{summary['pcam_test']['roc_auc']:.3f}"
    )
    results = {
        "architecture": (
            f"napari_metastasis SmallCNN(width={config.width}) x{len(members)} fold networks "
            f"({count_parameters(members[0]):,} parameters each), probabilities averaged"
            + (" over 8 flips/rotations dealt out to the networks in turn" if TTA else "")
        ),
        "parameters": count_parameters(ensemble),
        "tta": TTA,
        "config": config.to_dict(),
        "normal_mix": NORMAL_MIX,
        "tumour_mix": TUMOUR_MIX,
        "data": {
            "pcam": len(pcam),
            "pcam_tumour": int(pcam.labels.sum()),
            "camelyon": len(sources["camelyon"]),
            "mined": len(sources["mined"]),
        },
        "folds": folds,
        "summary": summary,
        "threads": torch.get_num_threads(),
        "workers": args.workers,
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs visible, load average "
            f"{load_at_start:.1f} when the recipe started"
        ),
        "environment": {"python": platform.python_version(), "torch": torch.__version__},
    }
    # Whole slides through the real pipeline: the model folder as users load it.
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "default"
        results["elapsed_s"] = time.time() - start
        results["cpu_s"] = _cpu_seconds()
        publish_model(
            members, staged, build_card({**results, "whole_slide_false_positives": {}}), tta=TTA
        )
        results["whole_slide_false_positives"] = whole_slide_false_positives(
            staged, args.data, summary["threshold"], None if args.quick else args.heatmaps
        )
    results["elapsed_s"] = time.time() - start
    results["cpu_s"] = _cpu_seconds()
    card = build_card(results)
    publish_model(members, args.out, card, tta=TTA)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1, default=float) + "\n")
    _log(f"model written to {args.out}, results to {args.results}")
    if not args.quick and update_readme(args.readme, render_card(card)):
        _log(f"model card copied into {args.readme}")
    print(json.dumps(card["validation"]["results"], indent=2, default=float))
    _log(f"done in {results['elapsed_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
