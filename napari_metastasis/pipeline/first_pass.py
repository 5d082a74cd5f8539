"""The first-pass shortcut: the full model only where a cheap first pass is not plainly normal.

Most of a lymph node is plainly normal, and the bundled model spends eight forward passes on every
patch (three networks, eight flips and turns). A run with the shortcut classifies every patch with
two of the eight views (a quarter of the cost; :data:`~napari_metastasis.models.networks.
FIRST_PASS_VIEWS`); the patches of a batch that the first pass leaves uncertain get the other six
views at once, while their pixels are in memory (the eight views' mean is the full model's answer),
and after the first pass the full model classifies the settled patches around candidate regions:

* a patch is **settled** when its first-pass probability is under the *cut* (``CUT_RATIO`` x the
  run's threshold: 0.25 at the usual 0.5) **and** it does not touch (8-connected) a *candidate*:
  a region at the threshold holding a patch at the deposit rule's seed threshold (0.9);
* everything else (uncertain or positive patches, and the ring around every candidate) gets the
  full model; when that grows a candidate or makes a new one, the settled patches around it get
  the full model too, until nothing changes.

So every patch at or above the cut holds the full model's probability, and a candidate and the
ring of patches around it hold nothing else: its extent, its seeds and the deposit decision are the
full model's, and so are the verdict and the deposits' sizes. A region without a seed (the exploring
view's) changes only where a settled patch would reach the threshold with the full model, which no
settled validation patch did. A settled patch keeps its first-pass probability in the map, marked as
such (``ProbabilityMap.first_pass``), and counts as analysed. The views and the cut were chosen
on the validation patches (``benchmarks/bench_first_pass.py``, ``resources/bench_first_pass.json``):
among first passes and cuts that settle no patch the full model puts at 0.4 or more, the cheapest for
a normal node. Two views at 0.25 settle 71 % of the normal patches (the highest full-model
probability among them 0.33) for a quarter of the cost; on the held-out test patches, the same
72 % and 0.33. ``--exhaustive`` (CLI)``--exhaustive`` (CLI)
and the viewer's *Exhaustive* choice run every patch through the full model; a model without a
first pass (any network but the package's own ensembles) always runs exhaustively.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_metastasis.clinical.decision import rule_for_model
from napari_metastasis.maps.probability import ProbabilityMap

#: The cut as a share of the run's threshold (0.25 at 0.5).
CUT_RATIO = 0.5
#: Rounds of "positive patches' settled neighbours get the full model" before the run stops
#: widening (each round is a few patches at a region's edge; a region grows a patch per round).
MAX_ROUNDS = 50

_EIGHT_NEIGHBOURS = np.ones((3, 3), bool)


@dataclass(frozen=True)
class FirstPass:
    """The shortcut of a run at ``threshold`` (the probability its regions are drawn at), whose
    candidates are the regions holding a patch at ``seed`` (None: every region is one)."""

    threshold: float
    seed: float | None = None

    @classmethod
    def for_model(cls, model_extra: Mapping, threshold: float) -> FirstPass:
        """The shortcut at ``threshold`` for a model whose config.json ``extra`` is
        ``model_extra``: candidates are the regions its deposit rule could confirm."""
        return cls(threshold, rule_for_model(model_extra, threshold).seed_threshold)

    @property
    def cut(self) -> float:
        """First-pass probabilities under this are settled (unless next to a positive patch)."""
        return CUT_RATIO * self.threshold

    def to_dict(self) -> dict:
        """What the map's metadata records of the shortcut."""
        return {"threshold": self.threshold, "cut": round(self.cut, 6), "seed": self.seed}


def cells_for_full_model(
    values: np.ndarray, first_pass: np.ndarray, shortcut: FirstPass
) -> np.ndarray:
    """(N, 2) (row, col) cells holding only a first-pass probability that the full model must
    check: at or above the cut, or touching (8-connected) a candidate region (see the module).

    ``values`` is the map's (rows, cols) probabilities (NaN: not analysed), ``first_pass`` its
    (rows, cols) mask of first-pass-only cells.
    """
    known = ~np.isnan(values)
    filled = np.nan_to_num(values, nan=0.0)
    regions = known & (filled >= shortcut.threshold)
    if shortcut.seed is not None:  # only the regions holding a seed: candidates
        labels, _ = ndimage.label(regions)  # 4-connected, as the regions of an answer
        seeded = np.unique(labels[regions & (filled >= shortcut.seed)])
        regions = np.isin(labels, seeded[seeded > 0])
    near_candidate = ndimage.binary_dilation(regions, structure=_EIGHT_NEIGHBOURS)
    uncertain = known & (filled >= shortcut.cut)
    return np.argwhere(first_pass & known & (uncertain | near_candidate)).astype(np.int64)


def first_pass_caution(prob_map: ProbabilityMap, threshold: float) -> str:
    """One sentence when regions are drawn at ``threshold`` below the one the map's shortcut
    ran at: there, patches it settled hold only the first pass's estimate ("" otherwise)."""
    run = prob_map.extra.get("first_pass") if isinstance(prob_map.extra, dict) else None
    settled = prob_map.n_first_pass
    if not settled or not isinstance(run, dict):
        return ""
    ran_at = run.get("threshold")
    if not isinstance(ran_at, (int, float)) or threshold >= float(ran_at) - 1e-9:
        return ""
    return (
        f"Below {float(ran_at):.2f}, {settled:,} patch{'es' * (settled != 1)} hold the first "
        "pass's estimate: tick Exhaustive and run again for exact regions."
    )
