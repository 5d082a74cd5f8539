"""A short training run on a few hundred of the PCam/Kaggle patches (the data the bundled model is
trained on) beats chance by a clear margin on patches it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from napari_metastasis.datasets.ingest import ingest_kaggle_pcam
from napari_metastasis.evaluation.metrics import roc_auc
from napari_metastasis.training.augment import AugmentConfig
from napari_metastasis.training.trainer import TrainConfig, predict_probabilities, train_model


@pytest.mark.slow
def test_short_training_on_pcam_beats_chance_on_unseen_patches(patches_dir):
    patches = ingest_kaggle_pcam(
        patches_dir / "pcam_kaggle_5k" / "train", spacing_um=0.972, patch_size=64, limit=480
    )
    train = patches.subset(np.arange(0, 360))
    held = patches.subset(np.arange(360, 480))
    assert 30 < held.labels.sum() < 90  # both classes, as in the whole set
    config = TrainConfig(
        width=8,
        crop_px=48,
        spacing_um=1.0,
        epochs=6,
        steps_per_epoch=15,
        batch_size=32,
        lr=3e-3,
        ema=0.9,
        augment=AugmentConfig(jpeg_p=0.3, gamma=0.1, colour_mix=0.05),
        threads=2,
    )
    model = train_model(train, None, config, progress=False).model
    auc = roc_auc(held.labels, predict_probabilities(model, held, config))
    assert auc > 0.75, auc
