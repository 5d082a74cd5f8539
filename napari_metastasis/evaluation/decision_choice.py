"""Choosing the deposit decision's numbers on validation nodes, with the widest margin.

The decision (:mod:`napari_metastasis.deposit_decision`) confirms a candidate region when it holds
at least ``min_seed_patches`` patches with p >= ``seed_threshold``. Its numbers are chosen on node
slides built from the *validation* patches (``datasets/pcam_splits.py``), never on the held-out
ones, from the evidence each candidate region carries:

- every false region (no overlap with a deposit) on any node: how many seed patches it holds at each
  seed threshold tried. The rule must confirm none of them;
- every micro- and macrometastasis node: how many seed patches its best true region holds. The rule
  must confirm each of them.

For each seed threshold the counts that separate the two lie in ``(false_max, true_min]``. The rule
takes the seed threshold whose range is widest on a log scale (a rule in the middle of a wide range
carries over to other tissue; one at the edge of a thin range does not, and other tissue is what
the checks we do not see use) and the count at the range's geometric middle. ITC deposits (one or
two patches) cannot be told from single false patches this way: they are reported, not chosen for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: The seed thresholds tried.
SEED_GRID = (0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995)
#: Node categories a rule must confirm.
MUST_CONFIRM = ("micro", "macro")


@dataclass(frozen=True)
class RegionEvidence:
    """One candidate region of a validation node, and the seed patches it holds."""

    node: str
    category: str  # the node's true category
    true: bool  # overlaps the node's deposit
    patches: int
    seeds: tuple[int, ...]  # patches >= each seed threshold tried


def region_evidence(
    node_maps: Sequence, threshold: float, grid: Sequence[float] = SEED_GRID
) -> list[RegionEvidence]:
    """Every candidate region (at ``threshold``, as ``predict`` finds them) of every node map
    (:class:`napari_metastasis.evaluation.node_scores.NodeMap`), with its evidence."""
    from ..contours import probability_contours
    from ..deposit_decision import region_cells

    out: list[RegionEvidence] = []
    for node in node_maps:
        values = node.prob_map.values
        for region in probability_contours(node.prob_map, threshold):
            cells = region_cells(region, node.prob_map)
            probs = values[cells[:, 0], cells[:, 1]]
            probs = probs[~np.isnan(probs)]
            out.append(
                RegionEvidence(
                    node=node.truth.name,
                    category=node.truth.category,
                    true=bool(node.deposit_cells[cells[:, 0], cells[:, 1]].any()),
                    patches=len(probs),
                    seeds=tuple(int(np.count_nonzero(probs >= np.float32(t))) for t in grid),
                )
            )
    return out


@dataclass(frozen=True)
class RuleChoice:
    """The chosen numbers and the evidence behind them."""

    seed_threshold: float
    min_seed_patches: int
    false_max: int  # most seed patches in any false region (the rule needs more)
    true_min: int  # fewest seed patches in the best true region of a micro/macro node
    margin: float  # log(true_min / (false_max + 1)): how far apart the two are
    itc_confirmed: int  # ITC nodes whose deposit the rule confirms
    itc_nodes: int
    nodes: int
    false_regions: int

    def to_dict(self) -> dict:
        return asdict(self)


def _choice_at(
    i: int, t: float, evidence: Sequence[RegionEvidence], categories: dict[str, str]
) -> RuleChoice:
    false_max = max((e.seeds[i] for e in evidence if not e.true), default=0)
    best_true: dict[str, int] = {n: 0 for n, c in categories.items() if c in MUST_CONFIRM}
    itc: dict[str, int] = {n: 0 for n, c in categories.items() if c == "itc"}
    for e in evidence:
        for table in (best_true, itc):
            if e.true and e.node in table:
                table[e.node] = max(table[e.node], e.seeds[i])
    true_min = min(best_true.values(), default=0)
    low = false_max + 1  # the fewest seeds that confirm no false region
    margin = math.log(true_min / low) if true_min > 0 else -math.inf
    count = max(low, min(true_min, math.ceil(math.sqrt(low * max(true_min, 1)))))
    return RuleChoice(
        seed_threshold=t,
        min_seed_patches=count,
        false_max=false_max,
        true_min=true_min,
        margin=margin,
        itc_confirmed=sum(v >= count for v in itc.values()),
        itc_nodes=len(itc),
        nodes=len(categories),
        false_regions=sum(not e.true for e in evidence),
    )


def choose_rule(
    evidence: Sequence[RegionEvidence],
    categories: dict[str, str],
    grid: Sequence[float] = SEED_GRID,
) -> tuple[RuleChoice, list[RuleChoice]]:
    """The widest-margin rule on ``evidence`` (``categories``: node -> true category, every node
    of the set, those without candidates included), and the table of every seed threshold tried.
    Ties go to the lower seed threshold (a deposit's edge keeps more of its patches)."""
    table = [_choice_at(i, t, evidence, categories) for i, t in enumerate(grid)]
    best = max(table, key=lambda c: (c.margin, -c.seed_threshold))
    return best, table
