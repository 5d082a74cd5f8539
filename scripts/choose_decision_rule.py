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

from napari_metastasis.evaluation.node_scores import load_node_maps  # noqa: E402

from napari_metastasis.evaluation.decision_choice import (  # noqa: E402
    choose_rule,
    region_evidence,
)

RESULTS_FILE = PROJECT_ROOT / "resources" / "bundled_model_recipe.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="bench_nodes --part val --keep-maps output")
    parser.add_argument("--results", type=Path, default=RESULTS_FILE)
    parser.add_argument("--dry-run", action="store_true", help="print the choice only")
    args = parser.parse_args(argv)

    results = json.loads(args.results.read_text())
    threshold = float(results["summary"]["threshold"])
    maps = load_node_maps(args.folder)
    if not maps:
        print(f"{args.folder}: no node maps found", file=sys.stderr)
        return 1
    evidence = region_evidence(maps, threshold)
    categories = {m.truth.name: m.truth.category for m in maps}
    best, table = choose_rule(evidence, categories)
    for row in table:
        print(
            f"seed >= {row.seed_threshold:<6g} false max {row.false_max:3d}  true min "
            f"{row.true_min:3d}  margin {row.margin:6.2f}  count {row.min_seed_patches:3d}  "
            f"ITC {row.itc_confirmed}/{row.itc_nodes}"
        )
    print(f"chosen: seed >= {best.seed_threshold:g}, {best.min_seed_patches} seed patches")
    if best.margin <= 0:
        print("no rule separates false regions from deposits on these nodes", file=sys.stderr)
        return 1
    if args.dry_run:
        return 0
    results["decision"] = {
        "rule": {
            "name": "hysteresis",
            "seed_threshold": best.seed_threshold,
            "min_seed_patches": best.min_seed_patches,
            "min_patches": best.min_seed_patches,
            "source": (
                f"chosen on {best.nodes} validation nodes (widest margin: false regions hold at "
                f"most {best.false_max} seed patches, deposits at least {best.true_min})"
            ),
        },
        "evidence": [row.to_dict() for row in table],
        "chosen": best.to_dict(),
    }
    args.results.write_text(json.dumps(results, indent=1, default=float) + "\n")
    import train_bundled_model  # the recipe rebuilds the folder and the card from the results

    return train_bundled_model.recard(
        args.results,
        train_bundled_model.DEFAULT_OUT,
        train_bundled_model.PROJECT_ROOT / "README.md",
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
