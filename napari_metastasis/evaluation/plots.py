"""ROC, FROC and reliability plots as PNG files.

Figures are made with matplotlib's object API (no pyplot), so plotting neither needs a display nor
changes the backend of a running napari session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from napari_metastasis.evaluation.froc import FP_RATES, FrocResult
from napari_metastasis.evaluation.metrics import Calibration
from napari_metastasis.outputs.atomic import atomic_path


def _figure(size: tuple[float, float]) -> tuple[Figure, Any]:
    fig = Figure(figsize=size)
    return fig, fig.subplots()


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def plot_roc(
    fpr: np.ndarray, tpr: np.ndarray, auc: float, path: str | Path, title: str = ""
) -> Path:
    fig, ax = _figure((4.5, 4.5))
    ax.plot(fpr, tpr, lw=2, label=f"ROC AUC = {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(title or "Patch ROC")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_froc(result: FrocResult, path: str | Path, title: str = "") -> Path:
    fig, ax = _figure((5, 4))
    x = np.maximum(result.fps_per_slide, 1e-3)
    order = np.argsort(x)
    ax.step(
        x[order],
        result.sensitivity[order],
        where="post",
        lw=2,
        label=f"FROC score = {result.score:.3f}",
    )
    ax.scatter(FP_RATES, [result.sensitivity_at[r] for r in FP_RATES], c="C3", zorder=3, s=18)
    ax.set_xscale("log")
    ax.set(xlabel="average false positives per slide", ylabel="lesion sensitivity", ylim=(0, 1.01))
    ax.set_title(title or f"FROC ({result.n_slides} slides, {result.n_lesions} lesions)")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_calibration(cal: Calibration, path: str | Path, title: str = "") -> Path:
    fig, ax = _figure((4.5, 4.5))
    mean_p = np.asarray(cal.bin_mean_probability, dtype=float)
    frac = np.asarray(cal.bin_fraction_positive, dtype=float)
    ok = np.isfinite(mean_p)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.plot(mean_p[ok], frac[ok], "o-", lw=2, label=f"ECE {cal.ece:.3f}, Brier {cal.brier:.3f}")
    ax.set(
        xlabel="predicted probability", ylabel="observed tumour fraction", xlim=(0, 1), ylim=(0, 1)
    )
    ax.set_title(title or "Reliability")
    ax.legend(loc="upper left")
    return _save(fig, path)
