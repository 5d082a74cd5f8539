"""Choosing the deposit decision's numbers on validation nodes, with the widest margin.

The decision (:mod:`napari_metastasis.clinical.decision`) confirms a candidate region when it holds
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
    from napari_metastasis.maps.contours import probability_contours, region_cells

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


def _middle(low: int, high: int) -> int:
    """The whole number at the geometric middle of ``[low, high]`` (``low`` when they cross)."""
    if high < low:
        return low
    return max(low, min(high, math.ceil(math.sqrt(low * high))))


@dataclass(frozen=True)
class RuleChoice:
    """The chosen numbers and the evidence behind them."""

    seed_threshold: float
    min_seed_patches: int
    false_max: int  # most seed patches in any false region (the rule needs more)
    true_min: int  # fewest seed patches in the best true region of a micro/macro node
    margin: float  # log(true_min / (false_max + 1)): how far apart the two are (>= 0: separable)
    min_patches: (
        int  # patches in all: the geometric middle between seeded false regions and deposits
    )
    false_max_patches: int  # most patches of a false region holding any seed
    true_min_patches: int  # fewest patches of the best true region of a micro/macro node
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
    count = _middle(low, true_min)
    # the size a deposit needs: seeded false regions are small, deposits are not
    false_cells = max((e.patches for e in evidence if not e.true and e.seeds[i] > 0), default=0)
    true_cells: dict[str, int] = dict.fromkeys(best_true, 0)
    for e in evidence:
        if e.true and e.node in true_cells and e.seeds[i] >= count:
            true_cells[e.node] = max(true_cells[e.node], e.patches)
    true_min_cells = min(true_cells.values(), default=0)
    min_patches = max(count, _middle(false_cells + 1, true_min_cells))
    return RuleChoice(
        seed_threshold=t,
        min_seed_patches=count,
        false_max=false_max,
        true_min=true_min,
        margin=margin,
        min_patches=min_patches,
        false_max_patches=false_cells,
        true_min_patches=true_min_cells,
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


#: The region thresholds tried for measuring deposits.
REGION_GRID = (0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


@dataclass(frozen=True)
class MeasureChoice:
    """How well deposits are measured at one region threshold, on the validation nodes."""

    threshold: float
    deposits: int  # micro/macro nodes
    within_stride: int  # greatest dimension within one grid stride of the truth
    mean_error_mm: float
    worst_error_mm: float

    def to_dict(self) -> dict:
        return asdict(self)


def measure_at(node_maps: Sequence, threshold: float) -> MeasureChoice:
    """The greatest-dimension errors of the micro/macro deposits at ``threshold``: each node's
    largest region touching its deposit, measured as ``predict`` measures it."""
    from napari_metastasis.clinical.staging import measure_regions
    from napari_metastasis.maps.contours import probability_contours, region_cells

    errors: list[float] = []
    within = 0
    for node in node_maps:
        if node.truth.category not in MUST_CONFIRM:
            continue
        regions = probability_contours(node.prob_map, threshold)
        deposits = measure_regions(regions, node.prob_map.grid)
        sizes = [
            d.greatest_dimension_mm
            for r, d in zip(regions, deposits, strict=True)
            if node.deposit_cells[tuple(region_cells(r, node.prob_map).T)].any()
        ]
        error = max(sizes, default=0.0) - node.truth.greatest_dimension_mm
        errors.append(error)
        within += abs(error) <= node.prob_map.grid.step_um / 1000.0 + 1e-9
    return MeasureChoice(
        threshold=threshold,
        deposits=len(errors),
        within_stride=within,
        mean_error_mm=float(np.mean(errors)) if errors else 0.0,
        worst_error_mm=float(max(errors, key=abs)) if errors else 0.0,
    )


def choose_region_threshold(
    node_maps: Sequence, grid: Sequence[float] = REGION_GRID
) -> tuple[MeasureChoice, list[MeasureChoice]]:
    """The region threshold at which the validation deposits are measured best: most within one
    stride, then the smallest mean error. A low patch threshold (Youden's J) grows a deposit by
    the partly covered cells at its edge; a high one breaks it up."""
    table = [measure_at(node_maps, t) for t in grid]
    best = max(table, key=lambda m: (m.within_stride, -abs(m.mean_error_mm)))
    return best, table
