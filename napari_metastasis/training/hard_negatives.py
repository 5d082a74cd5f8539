"""Hard-negative mining: draw the normal patches the network still calls tumour more often.

On real lymph-node tissue the false deposits gather on a few kinds of normal tissue (pink,
eosinophilic stroma, dense fibrous tissue) that a uniform draw shows the network as rarely as any
other normal patch. Every few epochs the current (averaged) network scores every normal training
patch; the next draws send a share of the normal batches to the hardest ones. This is the recipe of
the Camelyon16 winners (hard-negative mining), done online so one run of the recipe does it.

Only the within-class weights of *normal* patches change: tumour draws and the class shares of the
balancing strategy stay as configured.
"""

from __future__ import annotations

import numpy as np


def hard_negative_weights(
    probabilities: np.ndarray,
    labels: np.ndarray,
    base_weights: np.ndarray,
    *,
    top: float,
    share: float,
) -> np.ndarray:
    """Within-class draw weights that send ``share`` of the normal draws to the hardest ``top``
    fraction of normal patches (highest tumour probability), the rest as ``base_weights`` say.

    ``base_weights`` are the usual within-class weights (e.g. the mix of normal sources); the
    hard share is spread over the hard patches in proportion to them too, so no source is
    over-drawn beyond what its hardness earns it.
    """
    labels = np.asarray(labels)
    base = np.asarray(base_weights, dtype=np.float64).copy()
    normal = np.flatnonzero(labels == 0)
    if len(normal) == 0 or share <= 0 or top <= 0:
        return base
    k = max(1, round(top * len(normal)))
    order = np.argsort(-np.asarray(probabilities)[normal], kind="stable")
    hard = normal[order[:k]]
    plain = base[normal] / base[normal].sum()
    boosted = np.zeros(len(labels))
    boosted[hard] = base[hard]
    boosted_total = boosted[normal].sum()
    out = base.copy()
    if boosted_total <= 0:
        return out
    out[normal] = (1 - share) * plain + share * boosted[normal] / boosted_total
    return out
