"""Class imbalance: report it, and correct it by undersampling, oversampling or class weights.

Whole slides are mostly normal tissue, so a dataset extracted from them is dominated by negatives; a
network trained on it as it is learns to say "normal". Which remedy is best depends on the data, so
all three are offered and the report says what the counts were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_metastasis.defaults import BALANCE_STRATEGIES as STRATEGIES


@dataclass(frozen=True)
class ImbalanceReport:
    positives: int
    negatives: int
    per_slide: dict[str, tuple[int, int]]  # slide -> (negatives, positives)

    @property
    def ratio(self) -> float:
        """Majority over minority count (inf when a class is absent)."""
        lo, hi = sorted((self.positives, self.negatives))
        return float("inf") if lo == 0 else hi / lo

    def to_dict(self) -> dict:
        return {
            "positives": self.positives,
            "negatives": self.negatives,
            "majority_to_minority": self.ratio,
            "per_slide": {
                k: {"negatives": v[0], "positives": v[1]} for k, v in self.per_slide.items()
            },
        }

    def format(self) -> str:
        lines = [
            f"{self.positives} tumour / {self.negatives} normal patches "
            f"(majority:minority = {self.ratio:.1f}:1)"
        ]
        for slide, (neg, pos) in sorted(self.per_slide.items()):
            lines.append(f"  {slide}: {pos} tumour, {neg} normal")
        return "\n".join(lines)


def imbalance_report(labels: np.ndarray, slides: np.ndarray | None = None) -> ImbalanceReport:
    labels = np.asarray(labels)
    per_slide: dict[str, tuple[int, int]] = {}
    if slides is not None:
        for slide in np.unique(np.asarray(slides, dtype=str)):
            sel = np.asarray(slides, dtype=str) == slide
            per_slide[str(slide)] = (int((labels[sel] == 0).sum()), int((labels[sel] == 1).sum()))
    return ImbalanceReport(int((labels == 1).sum()), int((labels == 0).sum()), per_slide)


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Per-class loss weights (w0, w1) = N / (2 * N_c), so both classes weigh the same in total."""
    labels = np.asarray(labels)
    counts = np.array([(labels == 0).sum(), (labels == 1).sum()], dtype=np.float64)
    return np.where(counts > 0, len(labels) / (2 * np.maximum(counts, 1)), 0.0)


def undersample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices keeping every minority patch and as many random majority patches."""
    labels = np.asarray(labels)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    small, large = (pos, neg) if len(pos) <= len(neg) else (neg, pos)
    keep = rng.choice(large, size=len(small), replace=False)
    return np.sort(np.concatenate([small, keep]))


def oversample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices with every majority patch and minority patches repeated (random) to match."""
    labels = np.asarray(labels)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    small, large = (pos, neg) if len(pos) <= len(neg) else (neg, pos)
    if len(small) == 0:
        return np.arange(len(labels))
    extra = rng.choice(small, size=len(large) - len(small), replace=True)
    return np.sort(np.concatenate([large, small, extra]))


def sampling_weights(
    labels: np.ndarray,
    strategy: str,
    within_class: np.ndarray | None = None,
    positive_share: float = 0.5,
) -> np.ndarray:
    """Per-patch probabilities for drawing training batches under ``strategy``.

    ``oversample`` and ``undersample`` both draw each class half of the time (with replacement, the
    stochastic equivalent of the index lists above); ``none`` and ``weights`` keep the dataset's
    class shares. ``within_class`` re-weights patches inside their class only (e.g. to mix sources
    of normal tissue) without changing the class shares. ``positive_share`` is the tumour share of
    the draws under over/undersampling (0.5: balanced).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown balancing {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    labels = np.asarray(labels)
    within = np.ones(len(labels)) if within_class is None else np.asarray(within_class, np.float64)
    if within.shape != labels.shape or (within < 0).any():
        raise ValueError("within-class weights must be one non-negative number per patch")
    present = [c for c in (0, 1) if (labels == c).any()]
    weights = np.zeros(len(labels), dtype=np.float64)
    for c in present:
        sel = labels == c
        if strategy in ("oversample", "undersample") and len(present) == 2:
            share = positive_share if c == 1 else 1 - positive_share
        else:
            share = sel.mean()
        total = within[sel].sum()
        weights[sel] = share * (within[sel] / total if total > 0 else 1 / sel.sum())
    return weights / weights.sum()
