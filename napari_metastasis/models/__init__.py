"""Patch classifiers: the folder contract, safe loading, the registry of available models.

from napari_metastasis.models import load_model, available_models
model = load_model("default")            # or a folder path; device="auto"|"cpu"|"cuda"|"mps"
probs = model.predict(uint8_nhwc_batch)  # (N, num_classes) softmax probabilities
tumour = probs[:, model.positive_class_index]
"""

from napari_metastasis.defaults import DEFAULT_MODEL
from napari_metastasis.models.contract import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelConfig,
    TransformStep,
    load_config,
    parse_config,
)
from napari_metastasis.models.loading import DEVICE_CHOICES, LoadedModel, load_model, select_device
from napari_metastasis.models.registry import BUNDLED_DIR, available_models, resolve_model
from napari_metastasis.models.threshold import (
    DEFAULT_THRESHOLD,
    MODEL_CARD_FILE,
    Threshold,
    card_threshold,
    resolve_threshold,
)

__all__ = [
    "BUNDLED_DIR",
    "CONFIG_FILE",
    "DEFAULT_MODEL",
    "DEFAULT_THRESHOLD",
    "DEVICE_CHOICES",
    "MODEL_CARD_FILE",
    "WEIGHTS_FILE",
    "LoadedModel",
    "ModelConfig",
    "Threshold",
    "TransformStep",
    "available_models",
    "card_threshold",
    "load_config",
    "load_model",
    "parse_config",
    "resolve_model",
    "resolve_threshold",
    "select_device",
]
