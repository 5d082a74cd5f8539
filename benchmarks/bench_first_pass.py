"""The first pass of the bundled model: which views, and which cut (``pipeline/first_pass.py``).

The bundled model averages eight forward passes a patch (three networks, eight flips and turns;
view ``i`` by network ``i % 3``). A first pass of the first ``k`` views costs ``k``/8 of that; a
run then settles a patch whose first-pass probability is under the *cut* (and that touches no
candidate region) and runs the full model on the rest. That pays only if the first pass settles
many normal patches without settling one the full model would call positive.

Measured on PatchCamelyon patches rendered as node cells (the central 80 µm at 1 µm/px), each
view's probability once, for first passes of 1-4 views and cuts 0.2-0.4:

* on the **validation** patches (``pcam_part(..., "val")``, never the held-out test patches), the
  choice: among the first passes and cuts under which no settled patch reaches ``threshold -
  --margin`` (0.5 - 0.1) with the full model, the cheapest for a normal node: the least
  ``views / 8 + (1 - share of normal patches settled)``, the full model's share of the work;
* on the held-out **test** patches, the same numbers for the chosen pass, as a check that the
  choice carries over (reported, never used to choose).

    PYTHONPATH=. python benchmarks/bench_first_pass.py --out resources/bench_first_pass.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from napari_metastasis.datasets.pcam_splits import pcam_part  # noqa: E402
from napari_metastasis.evaluation.node_slides import PatchCache, cell_image  # noqa: E402
from napari_metastasis.models import load_model  # noqa: E402
from napari_metastasis.models.networks import FIRST_PASS_VIEWS, _view  # noqa: E402
from napari_metastasis.pipeline.first_pass import CUT_RATIO  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"
CUTS = (0.2, 0.25, 0.3, 0.35, 0.4)
VIEW_COUNTS = (1, 2, 3, 4)
THRESHOLD = 0.5


def view_probabilities(model, patches: np.ndarray, batch: int = 64) -> np.ndarray:
    """(N, 8) tumour probability of each view, by the network the ensemble gives it."""
    members = model.module.members
    out = np.zeros((len(patches), 8), np.float32)
    with torch.inference_mode():
        for k in range(0, len(patches), batch):
            x = model.prepare(patches[k : k + batch])
            for i in range(8):
                member = members[i % len(members)]
                out[k : k + batch, i] = torch.sigmoid(member.logit(_view(x, i))).numpy()
    return out


def table(views: np.ndarray, labels: np.ndarray) -> list[dict]:
    full = views.mean(1)
    normal, tumour = labels == 0, labels == 1
    rows = []
    for count in VIEW_COUNTS:
        first = views[:, :count].mean(1)
        for cut in CUTS:
            settled = first < cut
            rows.append(
                {
                    "views": count,
                    "cut": cut,
                    "normal_settled": round(float(settled[normal].mean()), 4),
                    "tumour_settled": round(float(settled[tumour].mean()), 4),
                    "settled_full_p_at_least_0.5": int((settled & (full >= THRESHOLD)).sum()),
                    "settled_max_full_p": round(float(full[settled].max()), 4)
                    if settled.any()
                    else None,
                    "correlation_with_full": round(float(np.corrcoef(first, full)[0, 1]), 4),
                }
            )
            rows[-1]["work_on_a_normal_node"] = round(work(rows[-1]), 4)
    return rows


def work(row: dict) -> float:
    """A normal node's cost with this first pass, in full-model passes a patch."""
    return row["views"] / 8 + 1 - row["normal_settled"]


def choose(rows: list[dict], margin: float) -> dict:
    """The cheapest first pass and cut (:func:`work`) whose settled patches all stay under
    ``THRESHOLD - margin`` with the full model."""
    safe = [
        r
        for r in rows
        if r["settled_max_full_p"] is not None and r["settled_max_full_p"] < THRESHOLD - margin
    ]
    return min(safe, key=lambda r: (work(r), r["views"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    model = load_model("default", device="cpu")
    parts = {}
    for part in ("val", "test"):
        files = pcam_part(args.data, part)
        cache = PatchCache(files)
        patches = np.stack([cell_image(cache[i], 80, 0, False) for i in range(len(files))])
        labels = np.asarray(files.labels)
        views = view_probabilities(model, patches)
        parts[part] = {
            "patches": {"normal": int((labels == 0).sum()), "tumour": int((labels == 1).sum())},
            "full_model_normal_p": {
                q: round(float(np.quantile(views.mean(1)[labels == 0], v)), 4)
                for q, v in (("p10", 0.1), ("median", 0.5), ("p90", 0.9), ("p99", 0.99))
            },
            "rows": table(views, labels),
        }
    chosen = choose(parts["val"]["rows"], args.margin)
    check = next(
        r
        for r in parts["test"]["rows"]
        if r["views"] == chosen["views"] and r["cut"] == chosen["cut"]
    )
    report = {
        "benchmark": "bench_first_pass",
        "first_pass": "the first k views of the eight, view i by network i % 3 (as the full model)",
        "rule": f"on val: settled max full p < {THRESHOLD} - {args.margin}; then the least "
        "views/8 + (1 - normal settled)",
        "chosen_on_val": chosen,
        "held_out_test_check": check,
        "package": {
            "FIRST_PASS_VIEWS": list(FIRST_PASS_VIEWS),
            "cut_at_threshold_0.5": CUT_RATIO * THRESHOLD,
            "matches_choice": len(FIRST_PASS_VIEWS) == chosen["views"]
            and abs(CUT_RATIO * THRESHOLD - chosen["cut"]) < 1e-9,
        },
        "parts": parts,
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_count": os.cpu_count(),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
