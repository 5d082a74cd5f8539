"""A cheap first pass for the bundled model: how many patches could it settle on its own?

The bundled model averages eight forward passes a patch (three networks, eight flips and
rotations). A first pass of one network on one view costs an eighth of that; the full model would
then run only where the first pass is not plainly normal (and on the neighbours of positive
patches). That pays only if the first pass can call many patches normal without ever calling
normal a patch the full model calls positive. This benchmark measures it on every held-out
PatchCamelyon patch (rendered as a node slide's cell: the central 80 µm at 1 µm/px), with the
first pass as the first network on the unturned patch:

* for cuts ``t``: the share of normal and of tumour patches with a first-pass probability under
  ``t`` (the patches the shortcut would settle), how many of those the full model calls >= 0.5
  (answers the shortcut would change) and the highest full-model probability among them;
* the *safe cut*: the highest ``t`` under which no settled patch reaches ``--margin`` (0.3, well
  below the region threshold 0.5) in the full model, the share it settles, and the speed-up it
  could give a node whose patches are ``--normal-share`` normal, were nothing else re-run:
  1 / (1/8 + 1 - settled).

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

DEFAULT_DATA = ROOT.parent / "shared" / "data"
CUTS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)


def probabilities(model, patches: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(full model, first network on the unturned patch) tumour probabilities."""
    ensemble = model.module
    full, first = [], []
    with torch.inference_mode():
        for k in range(0, len(patches), batch):
            x = model.prepare(patches[k : k + batch])
            full.append(torch.softmax(ensemble(x), 1)[:, 1])
            first.append(torch.sigmoid(ensemble.members[0].logit(x)))
    return torch.cat(full).numpy(), torch.cat(first).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--margin", type=float, default=0.3)
    parser.add_argument("--normal-share", type=float, default=0.97)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    files = pcam_part(args.data, "test")
    cache = PatchCache(files)
    patches = np.stack([cell_image(cache[i], 80, 0, False) for i in range(len(files))])
    labels = np.asarray(files.labels)
    model = load_model("default", device="cpu")
    full, first = probabilities(model, patches)
    normal, tumour = labels == 0, labels == 1
    rows = []
    for t in CUTS:
        settled = first < t
        rows.append(
            {
                "cut": t,
                "normal_settled": round(float(settled[normal].mean()), 4),
                "tumour_settled": round(float(settled[tumour].mean()), 4),
                "settled_full_p_at_least_0.5": int((settled & (full >= 0.5)).sum()),
                "settled_max_full_p": round(float(full[settled].max()), 4)
                if settled.any()
                else None,
            }
        )
    # the safe cut: under the lowest first-pass probability of any patch the full model puts at
    # or above the margin
    risky = full >= args.margin
    safe = float(first[risky].min()) if risky.any() else 1.0
    settled = first < safe
    share = float(settled[normal].mean()) * args.normal_share + float(settled[tumour].mean()) * (
        1 - args.normal_share
    )
    report = {
        "benchmark": "bench_first_pass",
        "patches": {"normal": int(normal.sum()), "tumour": int(tumour.sum())},
        "first_pass": "the first of the three networks, on the unturned patch (1/8 of the cost)",
        "full_model_p_normal_patches": {
            "median": round(float(np.median(full[normal])), 4),
            "p10": round(float(np.percentile(full[normal], 10)), 4),
            "min": round(float(full[normal].min()), 4),
        },
        "first_pass_p_normal_patches": {
            "median": round(float(np.median(first[normal])), 4),
            "p10": round(float(np.percentile(first[normal], 10)), 4),
            "min": round(float(first[normal].min()), 4),
        },
        "cuts": rows,
        "safe_cut": {
            "margin": args.margin,
            "cut": round(safe, 4),
            "normal_settled": round(float(settled[normal].mean()), 4),
            "node_share_settled": round(share, 4),
            "normal_share_of_node": args.normal_share,
            "speedup_bound": round(1 / (1 / 8 + 1 - share), 3),
        },
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_count": os.cpu_count(),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
