"""From a network's output to class probabilities, as WSInfer does it.

WSInfer (``wsinfer/modellib/run_inference.py``) applies a softmax over the classes when the network
returns (N, C) logits with C > 1, and a sigmoid when it returns one value per patch, (N, 1) or
(N,): such a model gives the probability of its one class. A softmax over a single value would be
1.0 for every patch.
"""

from __future__ import annotations

import torch


def is_single_output(logits: torch.Tensor) -> bool:
    """One value per patch: (N,) or (N, 1)."""
    return logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1)


def to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) float32 probabilities: softmax over C > 1 classes, else a sigmoid, as (N, 1)."""
    logits = logits.float()
    if is_single_output(logits):
        return torch.sigmoid(logits.reshape(-1, 1))
    return torch.softmax(logits, dim=1)
