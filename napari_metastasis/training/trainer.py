"""The training loop: balanced batches, on-the-fly augmentation, early stopping on validation ROC
AUC, a seed for reproducibility, a progress bar, and checkpoints to resume from.

Targets are soft where a tumour mask exists: the tumour fraction of the centre third of each
augmented crop (PCam's label region), so a crop that slides off a lesion's edge is not called
certain tumour. That keeps probabilities honest near boundaries (calibration, not only ranking).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from napari_metastasis.datasets.labels import centre_window
from napari_metastasis.datasets.patchset import PatchSet
from napari_metastasis.errors import CancelledError, DatasetError
from napari_metastasis.evaluation.metrics import roc_auc
from napari_metastasis.models.networks import build_network
from napari_metastasis.outputs.atomic import atomic_path
from napari_metastasis.training.augment import (
    AugmentConfig,
    centre_crops,
    colour_jitter,
    sample_crops,
)
from napari_metastasis.training.balance import class_weights, sampling_weights
from napari_metastasis.training.hard_negatives import hard_negative_weights


@dataclass
class TrainConfig:
    architecture: str = "smallcnn"
    width: int = 24
    dropout: float = 0.2
    crop_px: int = 48  # the model's input size
    spacing_um: float = 1.0  # the model's µm per pixel
    epochs: int = 30
    steps_per_epoch: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    patience: int = 8  # epochs without a better validation AUC before stopping
    balance: str = "oversample"  # none | undersample | oversample | weights
    positive_share: float = 0.5  # tumour share of the draws when over/undersampling
    ema: float = 0.0  # >0: evaluate and keep an exponential moving average of the weights
    # hard-negative mining (training/hard_negatives.py): from this epoch (0: off), every
    # ``hard_negative_every`` epochs, ``hard_negative_share`` of the normal draws go to the
    # ``hard_negative_top`` fraction of normal patches the network scores highest
    hard_negative_start: int = 0
    hard_negative_every: int = 2
    hard_negative_top: float = 0.2
    hard_negative_share: float = 0.5
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    threads: int | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["augment"] = self.augment.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["augment"] = AugmentConfig(**data.get("augment", {}))
        return cls(**data)


@dataclass
class TrainResult:
    model: torch.nn.Module  # the best epoch's weights, in eval mode
    history: list[dict]
    best_epoch: int
    best_val_auc: float | None
    config: TrainConfig


def zoom_for(patches: PatchSet, config: TrainConfig) -> float:
    """Source pixels per model pixel."""
    return config.spacing_um / patches.spacing_um


def check_fits(patches: PatchSet, config: TrainConfig) -> None:
    needed = config.crop_px * zoom_for(patches, config) * (1 + config.augment.scale_jitter)
    if needed > patches.patch_size + 1e-6:
        raise DatasetError(
            f"patches of {patches.patch_size} px at {patches.spacing_um:g} µm/px are too small for "
            f"{config.crop_px}-px crops at {config.spacing_um:g} µm/px (need {math.ceil(needed)} px)"
        )


@torch.no_grad()
def predict_probabilities(
    model: torch.nn.Module, patches: PatchSet, config: TrainConfig, batch_size: int = 256
) -> np.ndarray:
    """Tumour probability of each patch's centre crop at the model's spacing."""
    model.eval()
    zoom = zoom_for(patches, config)
    out = []
    for start in range(0, len(patches), batch_size):
        x = centre_crops(patches.images[start : start + batch_size], config.crop_px, zoom)
        out.append(torch.softmax(model(x), dim=1)[:, 1].numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _soft_targets(
    masks: torch.Tensor, has_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    window = centre_window(masks.shape[-1])
    frac = masks[:, 0, window, window].mean(dim=(1, 2))
    return torch.where(has_mask, frac.clamp(0, 1), labels.float())


def _evaluate(model: nn.Module, val: PatchSet, config: TrainConfig) -> tuple[float, float]:
    probs = predict_probabilities(model, val, config)
    auc = roc_auc(val.labels, probs)
    p = np.clip(probs, 1e-6, 1 - 1e-6)
    loss = float(-np.mean(val.labels * np.log(p) + (1 - val.labels) * np.log(1 - p)))
    return auc, loss


def _better(auc: float, loss: float, best: tuple[float, float] | None) -> bool:
    """Higher AUC wins; equal (or undefined) AUC falls back on lower validation loss."""
    if best is None:
        return True
    best_auc, best_loss = best
    a = -1.0 if math.isnan(auc) else auc
    b = -1.0 if math.isnan(best_auc) else best_auc
    if a > b + 1e-9:
        return True
    return abs(a - b) <= 1e-9 and loss < best_loss


def _mines(config: TrainConfig, epoch: int) -> bool:
    """Whether the normal draws are re-weighted by hardness before ``epoch`` (0-based)."""
    start = config.hard_negative_start
    return (
        start > 0 and epoch >= start and (epoch - start) % max(1, config.hard_negative_every) == 0
    )


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint read as data only (``weights_only=True``): tensors, numbers, strings,
    lists and dicts. A file holding anything else (a planted pickle payload, a checkpoint from
    another program) or a damaged file is refused with one sentence; nothing in it runs."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DatasetError(
            f"{path}: refused to resume: the checkpoint holds objects other than tensors and plain "
            "values (it was not written by this program, or was tampered with); delete it or train "
            "without --resume"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(
            f"{path}: cannot resume: the checkpoint is damaged or not a checkpoint ({reason})"
        ) from None
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise DatasetError(f"{path}: cannot resume: not a training checkpoint of this program")
    return state


def train_model(
    train: PatchSet,
    val: PatchSet | None,
    config: TrainConfig,
    *,
    sample_weights: np.ndarray | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    cancel: Callable[[], bool] | None = None,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """Train one network; returns the best epoch's weights (by validation AUC, else the last).

    ``sample_weights`` re-weights patches within their class (e.g. to mix sources of normal
    tissue), keeping the class shares of the balancing strategy; ``checkpoint`` is written after every epoch and, with ``resume``, continued from.
    ``cancel`` is an optional callable returning True to stop (raises CancelledError);
    ``on_epoch(epoch, model)`` is called after each epoch (e.g. to score held-out slides).
    """
    if len(train) == 0:
        raise DatasetError("the training set is empty")
    if len(np.unique(train.labels)) < 2:
        raise DatasetError("the training set needs both tumour and normal patches")
    check_fits(train, config)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = build_network(config.architecture, width=config.width, dropout=config.dropout)
    # With tiny datasets the weights wander from step to step; an average of recent weights gives
    # steadier predictions (the "eval" network below is what is validated, saved and returned).
    averaged = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
        if config.ema > 0
        else None
    )

    def evaluated() -> torch.nn.Module:
        return averaged.module if averaged is not None else model

    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    total_steps = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.lr, total_steps=total_steps, pct_start=0.15
    )
    draw = sampling_weights(train.labels, config.balance, sample_weights, config.positive_share)
    loss_weight = torch.tensor(
        class_weights(train.labels) if config.balance == "weights" else np.ones(2),
        dtype=torch.float32,
    )
    images = torch.from_numpy(train.images).permute(0, 3, 1, 2)  # uint8 view, converted per batch
    masks = torch.from_numpy(train.masks[:, None].astype(np.uint8))
    has_mask = torch.from_numpy(train.has_mask)
    labels = torch.from_numpy(train.labels)
    zoom = zoom_for(train, config)

    history: list[dict] = []
    best_state, best_key, best_epoch, start_epoch, patience_left = (
        None,
        None,
        -1,
        0,
        config.patience,
    )
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and resume and ckpt.is_file():
        state = load_checkpoint(ckpt)
        if state["config"] != config.to_dict():
            raise DatasetError(
                f"{ckpt}: checkpoint was made with different settings; cannot resume"
            )
        model.load_state_dict(state["model"])
        if averaged is not None:
            averaged.load_state_dict(state["averaged"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        best_state, best_key, best_epoch = (
            state["best_state"],
            state["best_key"],
            state["best_epoch"],
        )
        history, patience_left = state["history"], state["patience_left"]
        start_epoch = state["epoch"] + 1
        rng.bit_generator.state = state["np_rng"]
        gen.set_state(state["torch_gen"])
        torch.set_rng_state(state["torch_rng"])

    bar = tqdm(
        range(start_epoch, config.epochs), desc="training", unit="epoch", disable=not progress
    )
    normal_index = np.flatnonzero(train.labels == 0)
    for epoch in bar:
        if _mines(config, epoch) or epoch == start_epoch > config.hard_negative_start > 0:
            scores = np.full(len(train), np.nan)
            scores[normal_index] = predict_probabilities(
                evaluated(), train.subset(normal_index), config
            )
            within = hard_negative_weights(
                scores,
                train.labels,
                np.ones(len(train)) if sample_weights is None else sample_weights,
                top=config.hard_negative_top,
                share=config.hard_negative_share,
            )
            draw = sampling_weights(train.labels, config.balance, within, config.positive_share)
        model.train()
        running = 0.0
        for _ in range(config.steps_per_epoch):
            if cancel is not None and cancel():
                raise CancelledError("training cancelled; the last checkpoint is kept")
            idx = torch.from_numpy(rng.choice(len(train), size=config.batch_size, p=draw))
            x = images[idx].float().div_(255.0)
            m = masks[idx].float()
            x, m = sample_crops(x, m, config.crop_px, zoom, config.augment, gen)  # type: ignore[assignment]
            x = colour_jitter(x, config.augment, gen)
            target = _soft_targets(m, has_mask[idx], labels[idx])
            weight = loss_weight[labels[idx]]
            z = model.logit(x)  # type: ignore[operator]
            loss = (F.binary_cross_entropy_with_logits(z, target, reduction="none") * weight).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            if averaged is not None:
                averaged.update_parameters(model)
            running += loss.item()
        record = {"epoch": epoch, "train_loss": running / config.steps_per_epoch}
        if val is not None and len(val):
            auc, val_loss = _evaluate(evaluated(), val, config)
            record.update(val_auc=auc, val_loss=val_loss)
            if _better(auc, val_loss, best_key):
                best_key, best_epoch, patience_left = (auc, val_loss), epoch, config.patience
                best_state = copy.deepcopy(evaluated().state_dict())
            else:
                patience_left -= 1
        else:
            best_state, best_epoch = copy.deepcopy(evaluated().state_dict()), epoch
        if on_epoch is not None:
            on_epoch(epoch, evaluated())
            model.train()
        history.append(record)
        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "epoch"})
        if ckpt:
            with atomic_path(ckpt) as tmp:
                torch.save(
                    {
                        "config": config.to_dict(),
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "averaged": averaged.state_dict() if averaged is not None else None,
                        "optimiser": optimiser.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "best_state": best_state,
                        "best_key": best_key,
                        "best_epoch": best_epoch,
                        "history": history,
                        "patience_left": patience_left,
                        "np_rng": rng.bit_generator.state,
                        "torch_gen": gen.get_state(),
                        "torch_rng": torch.get_rng_state(),
                    },
                    tmp,
                )
        if val is not None and patience_left <= 0:
            break
    bar.close()
    final = evaluated()
    if best_state is not None:
        final.load_state_dict(best_state)
    final.eval()
    return TrainResult(
        model=final,
        history=history,
        best_epoch=best_epoch,
        best_val_auc=None if best_key is None else best_key[0],
        config=config,
    )
