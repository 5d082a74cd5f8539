"""The deposit decision: which candidate regions of a heatmap count as tumour deposits.

A region above the live threshold (:func:`napari_metastasis.maps.contours.probability_contours`) is only a
*candidate*: on real node tissue a patch classifier puts isolated high patches on stroma and other
normal tissue, and counting each as a deposit turned every negative node into a micrometastasis
(issue 20). A candidate is *confirmed* by evidence a pathologist would accept, here hysteresis:
it must hold at least ``min_seed_patches`` patches with a probability of at least
``seed_threshold`` (seeded high, grown at the candidate threshold), and at least ``min_patches``
patches in all. Only confirmed deposits make the verdict, the pN stage, ``stages.csv``, the report
and the viewer's verdict; the others stay visible as candidates, with the reason.

The rule is plain numbers in the model folder's ``config.json`` (block :data:`CONFIG_KEY`, chosen
on validation nodes; never a pickle), validated when the model is loaded. A model folder without the
block gets :data:`DEFAULT_RULE`. A probability map carries its model's block in ``extra`` (the engine
and ``predict`` stamp it), so a map read back later is decided by the same rule. Probabilities are
the map's per-patch values; counts are grid patches (cells).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_metastasis.clinical.staging import ITC_MAX_MM
from napari_metastasis.errors import ModelError
from napari_metastasis.maps.contours import region_cells

if TYPE_CHECKING:
    from napari_metastasis.maps.contours import Region
    from napari_metastasis.maps.probability import ProbabilityMap

#: The block of a model folder's ``config.json`` that holds its rule (and a map's ``extra`` key).
CONFIG_KEY = "napari_metastasis_decision"
HYSTERESIS = "hysteresis"
_FIELDS = ("name", "seed_threshold", "min_seed_patches", "min_patches", "source")
#: The seed threshold of the default rule is never below this (nor below the candidate threshold).
DEFAULT_SEED_FLOOR = 0.9
#: What a negative answer says when its rule cannot confirm isolated tumour cells (the start of
#: :meth:`DecisionRule.itc_note`; the viewer shows it under the verdict).
ITC_NOT_ASSESSED = "Isolated tumour cells are not assessed"


@dataclass(frozen=True)
class DecisionRule:
    """Hysteresis: a candidate is confirmed when it holds at least ``min_seed_patches`` patches
    with p >= ``seed_threshold``, and at least ``min_patches`` patches in all (at the candidate
    threshold). Plain numbers, stored in a model folder's config.json."""

    seed_threshold: float
    min_seed_patches: int
    min_patches: int = 1
    name: str = HYSTERESIS
    source: str = ""  # e.g. "model folder (chosen on validation nodes)" or "default"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "seed_threshold": self.seed_threshold,
            "min_seed_patches": self.min_seed_patches,
            "min_patches": self.min_patches,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = CONFIG_KEY) -> DecisionRule:
        """The rule ``d`` describes; anything else is one :class:`ModelError` sentence naming
        ``where`` and the field at fault."""
        if not isinstance(d, Mapping):
            raise ModelError(f"{where}: must be an object of numbers, got {type(d).__name__}")
        name = d.get("name", HYSTERESIS)
        if name != HYSTERESIS:
            raise ModelError(f"{where}: unknown rule {name!r} (this version knows '{HYSTERESIS}')")
        unknown = sorted(set(d) - set(_FIELDS))
        if unknown:
            raise ModelError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
        seed = d.get("seed_threshold")
        if isinstance(seed, bool) or not isinstance(seed, int | float):
            raise ModelError(f"{where}: field 'seed_threshold' must be a number, got {seed!r}")
        if not (math.isfinite(seed) and 0 < seed <= 1):
            raise ModelError(
                f"{where}: field 'seed_threshold' must be above 0 and at most 1, got {seed}"
            )
        counts = {}
        for field_name, required in (("min_seed_patches", True), ("min_patches", False)):
            value = d.get(field_name) if required else d.get(field_name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(
                    f"{where}: field '{field_name}' must be a whole number of at least 1, "
                    f"got {value!r}"
                )
            counts[field_name] = value
        source = d.get("source", "")
        if not isinstance(source, str):
            raise ModelError(f"{where}: field 'source' must be text, got {source!r}")
        return cls(float(seed), counts["min_seed_patches"], counts["min_patches"], name, source)

    @property
    def min_cells(self) -> int:
        """The fewest patches a confirmed deposit covers (its seeds are patches too)."""
        return max(self.min_patches, self.min_seed_patches)

    def smallest_confirmable_mm(self, step_um: float) -> float:
        """How small a deposit this rule can confirm on a grid of ``step_um`` (mm), at least.

        A confirmed region covers at least :attr:`min_cells` step squares, and no shape of that
        area is narrower than the disc of the same area (the isodiametric inequality), so its
        greatest dimension is at least that disc's diameter. (Cells cut by the slide's edge are
        smaller: a region on the very edge may measure less.)
        """
        return 2.0 * step_um * math.sqrt(self.min_cells / math.pi) / 1000.0

    def itc_note(self, step_um: float) -> str:
        """What a pathologist must know when the rule cannot confirm isolated tumour cells: a
        sentence starting with :data:`ITC_NOT_ASSESSED`, or "" when it can. A negative verdict
        then does not exclude them."""
        smallest = self.smallest_confirmable_mm(step_um)
        if smallest <= ITC_MAX_MM:
            return ""
        return (
            f"{ITC_NOT_ASSESSED}: the deposit rule confirms only regions of at "
            f"least {self.min_cells} patches of {step_um:g} µm, which measure at least {smallest:.2f} mm, "
            f"so no deposit of {ITC_MAX_MM:g} mm or less is ever reported and a negative slide "
            "may still hold isolated tumour cells (pN0 does not exclude pN0(i+))."
        )

    def describe(self) -> str:
        """One line for a person: what a deposit needs, and where the numbers come from."""
        text = (
            f"{self.name}: a deposit needs >= {self.min_seed_patches} "
            f"patch{'es' * (self.min_seed_patches != 1)} with p >= {self.seed_threshold:g} "
            f"and >= {self.min_patches} patch{'es' * (self.min_patches != 1)} in all"
        )
        return f"{text} ({self.source})" if self.source else text


#: The rule of a model folder without a decision block; :func:`rule_for_model` raises its seed
#: threshold to the candidate threshold when that is higher.
DEFAULT_RULE = DecisionRule(
    seed_threshold=DEFAULT_SEED_FLOOR,
    min_seed_patches=2,
    min_patches=2,
    source="default (the model folder has no decision rule)",
)


def rule_for_model(config: Mapping, threshold: float) -> DecisionRule:
    """The rule of a model whose ``config.json`` is ``config`` (its block if present, validated),
    else :data:`DEFAULT_RULE` with its seed threshold at max(0.9, ``threshold``)."""
    block = config.get(CONFIG_KEY) if isinstance(config, Mapping) else None
    if block is not None:
        rule = DecisionRule.from_dict(block, f"config.json: {CONFIG_KEY}")
        return rule if rule.source else replace(rule, source="model folder")
    return replace(DEFAULT_RULE, seed_threshold=max(DEFAULT_SEED_FLOOR, float(threshold)))


def rule_for_map(prob_map: ProbabilityMap, threshold: float) -> DecisionRule:
    """The rule of the model that made ``prob_map`` (the block it was stamped with), else the
    default (a map from elsewhere, or from before maps carried it)."""
    return rule_for_model(prob_map.extra, threshold)


def stamp_rule(prob_map: ProbabilityMap, config: Mapping) -> None:
    """Record the decision block of the model filling ``prob_map`` (a ``ModelConfig.extra``) in the
    map, so the map is decided by that rule wherever it goes (saved, reloaded, in the viewer)."""
    block = config.get(CONFIG_KEY) if isinstance(config, Mapping) else None
    if block is None:
        prob_map.extra.pop(CONFIG_KEY, None)
    else:
        prob_map.extra[CONFIG_KEY] = dict(block)


@dataclass(frozen=True)
class Decision:
    """Whether one candidate region is a confirmed deposit, and why, in one sentence."""

    region_id: int
    confirmed: bool
    reason: str  # e.g. "3 patches >= 0.95 (rule needs 2)" / "only 1 patch >= 0.95 (rule needs 2)"
    seed_patches: int
    patches: int = 0  # the region's analysed patches in all
    rule: DecisionRule | None = None


def _patches(n: int) -> str:
    return f"{n} patch{'es' * (n != 1)}"


def decide_one(region_id: int, values: np.ndarray, rule: DecisionRule) -> Decision:
    """The decision on a candidate whose patches have probabilities ``values`` (NaN: not analysed)."""
    values = np.asarray(values)  # compared in the map's own precision, as the contours are
    values = values[~np.isnan(values)]
    seeds = int(np.count_nonzero(values >= rule.seed_threshold))
    total = len(values)
    seed_ok = seeds >= rule.min_seed_patches
    size_ok = total >= rule.min_patches
    seed_text = f"{_patches(seeds)} >= {rule.seed_threshold:g}"
    needs = f"rule needs {rule.min_seed_patches}"
    if seed_ok and size_ok:
        reason = f"{seed_text} ({needs})"
        if rule.min_patches > 1:
            reason += f", {total} in all (rule needs {rule.min_patches})"
    else:
        parts = []
        if not seed_ok:
            found = f"only {seed_text}" if seeds else f"no patch >= {rule.seed_threshold:g}"
            parts.append(f"{found} ({needs})")
        if not size_ok:
            parts.append(f"only {_patches(total)} in all (rule needs {rule.min_patches})")
        reason = "; ".join(parts)
    return Decision(region_id, seed_ok and size_ok, reason, seeds, total, rule)


def decide(
    regions: Sequence[Region], prob_map: ProbabilityMap, rule: DecisionRule
) -> list[Decision]:
    """One :class:`Decision` per region, in the same order, from the map's values in its cells."""
    decisions = []
    for region in regions:
        cells = region_cells(region, prob_map)
        values = prob_map.values[cells[:, 0], cells[:, 1]] if len(cells) else np.empty(0)
        decisions.append(decide_one(region.id, values, rule))
    return decisions


def confirm_regions(
    regions: Sequence[Region], prob_map: ProbabilityMap, rule: DecisionRule
) -> list[Region]:
    """``regions`` with their :class:`Decision` attached (``region.decision``), in place."""
    for region, decision in zip(regions, decide(regions, prob_map, rule), strict=True):
        region.decision = decision
    return list(regions)
