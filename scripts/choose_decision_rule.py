"""Choose the bundled model's deposit decision on validation nodes and write it into the model.

Run the node validation on the *validation* patches with the maps kept, then this script on its
output folder::

    python benchmarks/bench_nodes.py --part val --keep-maps --work /tmp/nodes-val
    python scripts/choose_decision_rule.py /tmp/nodes-val/predict-default

It reads every node's probability map and truth, picks the widest-margin rule
(``napari_metastasis/evaluation/decision_choice.py``), stores it with its evidence in
``resources/bundled_model_recipe.json`` and rebuilds the model folder's files and the card from
that file (``train_bundled_model.py --recard``), so the rule is plain numbers in ``config.json``.
The held-out nodes (``--part test``) are never read here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from napari_metastasis.evaluation.decision_choice import (  # noqa: E402
    choose_region_threshold,
    choose_rule,
    region_evidence,
)
from napari_metastasis.evaluation.node_scores import load_node_maps  # noqa: E402

RESULTS_FILE = PROJECT_ROOT / "resources" / "bundled_model_recipe.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="bench_nodes --part val --keep-maps output")
    parser.add_argument("--results", type=Path, default=RESULTS_FILE)
    parser.add_argument("--dry-run", action="store_true", help="print the choice only")
    args = parser.parse_args(argv)

    results = json.loads(args.results.read_text())
    maps = load_node_maps(args.folder)
    if not maps:
        print(f"{args.folder}: no node maps found", file=sys.stderr)
        return 1
    measured, measures = choose_region_threshold(maps)
    for m in measures:
        print(
            f"regions at p >= {m.threshold:<5g} deposits within one stride {m.within_stride}/"
            f"{m.deposits}  mean error {m.mean_error_mm:+.3f} mm  worst {m.worst_error_mm:+.3f} mm"
        )
    # Of the region thresholds that measure the most deposits within one stride, the one whose
    # decision has the widest margin (a higher one breaks small deposits into pieces).
    top = max(m.within_stride for m in measures)
    categories = {m.truth.name: m.truth.category for m in maps}
    options = []
    for m in measures:
        if m.within_stride == top:
            best, table = choose_rule(region_evidence(maps, m.threshold), categories)
            options.append((best.margin, -m.threshold, m, best, table))
    _margin, _low, measured, best, table = max(options, key=lambda o: (o[0], o[1]))
    threshold = measured.threshold
    print(f"region threshold: {threshold:g}")
    for row in table:
        print(
            f"seed >= {row.seed_threshold:<6g} false max {row.false_max:3d}  true min "
            f"{row.true_min:3d}  margin {row.margin:6.2f}  count {row.min_seed_patches:3d}  "
            f"patches: false max {row.false_max_patches} true min {row.true_min_patches} -> "
            f"{row.min_patches}  ITC {row.itc_confirmed}/{row.itc_nodes}"
        )
    print(
        f"chosen: seed >= {best.seed_threshold:g}, {best.min_seed_patches} seed patches, "
        f"{best.min_patches} patches in all"
    )
    if best.margin < 0:
        print("no rule separates false regions from deposits on these nodes", file=sys.stderr)
        return 1
    if args.dry_run:
        return 0
    results["decision"] = {
        "rule": {
            "name": "hysteresis",
            "seed_threshold": best.seed_threshold,
            "min_seed_patches": best.min_seed_patches,
            "min_patches": best.min_patches,
            "source": (
                f"chosen on {best.nodes} validation nodes: false regions held at most "
                f"{best.false_max} seed patches and {best.false_max_patches} patches, deposits at "
                f"least {best.true_min} and {best.true_min_patches}"
            ),
        },
        "evidence": [row.to_dict() for row in table],
        "chosen": best.to_dict(),
        "region_threshold": threshold,
        "measures": [m.to_dict() for m in measures],
        "measured": measured.to_dict(),
    }
    args.results.write_text(json.dumps(results, indent=1, default=float) + "\n")
    import train_bundled_model as recipe  # rebuilds the folder and the card from the results

    # the rule goes into config.json first; the second pass runs the metastasis-free slides at
    # the region threshold with that rule, and rebuilds the card from both
    recipe.recard(args.results, recipe.DEFAULT_OUT, recipe.CARD_PAGE)
    return recipe.recard(args.results, recipe.DEFAULT_OUT, recipe.CARD_PAGE)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
