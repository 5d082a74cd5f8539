"""The decision threshold: one rule for the widget, ``predict``, ``evaluate`` and whatever comes next.

A threshold given on purpose (``--threshold``, a slider the user moved) wins; otherwise the model
card's (``model_card.json`` in the model folder, fitted when the model was trained); otherwise 0.5.
:func:`resolve_threshold` returns the value and where it came from, so every interface can say it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: What a model folder calls its card (numbers for programs; README.md is for people).
MODEL_CARD_FILE = "model_card.json"
#: The threshold of a model without a card.
DEFAULT_THRESHOLD = 0.5

GIVEN, MODEL_CARD, DEFAULT = "given", "model card", "default"


@dataclass(frozen=True)
class Threshold:
    """A decision threshold and its source: "given", "model card" or "default"."""

    value: float
    source: str

    def describe(self) -> str:
        return f"{self.value:.3g} ({self.source})"


def card_threshold(folder: str | Path | None) -> float | None:
    """The threshold a model folder's card recommends, if it has a card with a usable one."""
    if folder is None:
        return None
    card = Path(folder) / MODEL_CARD_FILE
    if not card.is_file():
        return None
    try:
        value = float(json.loads(card.read_text(encoding="utf-8"))["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if 0 < value < 1 else None


def model_folder(model: Any) -> Path | None:
    """The folder of a loaded model, a model folder path or a registered model name (or None)."""
    if model is None:
        return None
    folder = getattr(model, "folder", None)
    if folder is not None or hasattr(model, "config"):
        return Path(folder) if folder else None
    from napari_metastasis.errors import ModelError
    from napari_metastasis.models.registry import resolve_model

    try:
        return resolve_model(str(model))
    except ModelError:
        return None


def resolve_threshold(given: float | None = None, model: Any = None) -> Threshold:
    """``given`` if not None, else the model card's (``model``: a LoadedModel, folder or name),
    else :data:`DEFAULT_THRESHOLD`."""
    if given is not None:
        return Threshold(float(given), GIVEN)
    value = card_threshold(model_folder(model))
    if value is not None:
        return Threshold(value, MODEL_CARD)
    return Threshold(DEFAULT_THRESHOLD, DEFAULT)
