"""Evaluation: patch metrics (accuracy, ROC AUC, sensitivity/specificity, confusion matrix,
calibration), slide metrics (pixel Dice/IoU, slide AUC) and Camelyon16's lesion-level FROC, with
their plots."""

from napari_metastasis.evaluation.metrics import (
    PatchMetrics,
    confusion_matrix,
    patch_metrics,
    roc_auc,
    roc_curve,
)

__all__ = ["PatchMetrics", "confusion_matrix", "patch_metrics", "roc_auc", "roc_curve"]
