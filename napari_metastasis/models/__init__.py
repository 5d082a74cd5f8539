"""Patch classifiers: the folder contract, safe loading, the registry of available models.

from napari_metastasis.models import load_model, available_models
model = load_model("default")            # or a folder path; device="auto"|"cpu"|"cuda"|"mps"
probs = model.predict(uint8_nhwc_batch)  # (N, num_classes) softmax probabilities
tumour = probs[:, model.positive_class_index]
"""

from .contract import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelConfig,
    TransformStep,
    load_config,
    parse_config,
)
from .loading import DEVICE_CHOICES, LoadedModel, load_model, select_device
from .registry import BUNDLED_DIR, DEFAULT_MODEL, available_models, resolve_model

__all__ = [
    "BUNDLED_DIR",
    "CONFIG_FILE",
    "DEFAULT_MODEL",
    "DEVICE_CHOICES",
    "WEIGHTS_FILE",
    "LoadedModel",
    "ModelConfig",
    "TransformStep",
    "available_models",
    "load_config",
    "load_model",
    "parse_config",
    "resolve_model",
    "select_device",
]
