"""Model benchmark: what test-time augmentation (averaging 8 flips/90° rotations) costs and buys.

For the bundled model, with and without TTA (the same weights; TTA is a switch of the network):

* network throughput: patches per second through ``LoadedModel.predict`` on a batch of 256 real
  tissue patches of the sample slide (median of repeats);
* a whole-slide prediction of the sample slide (reading, tissue mask, network: what ``predict``
  does), seconds;
* stability across encodings: the sample slide as Aperio SVS vs DICOM, per-patch probability
  differences (mean, 99th percentile, max) and regions at the card's threshold.

The baseline of each ratio is the same model without TTA, measured in the same run.

    python benchmarks/bench_model.py --out resources/bench_model.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from napari_metastasis.evaluation.stability import compare_encodings  # noqa: E402
from napari_metastasis.models import load_model  # noqa: E402
from napari_metastasis.outputs.atomic import write_text_atomic  # noqa: E402
from napari_metastasis.slides.slide import Slide  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "slides"
SVS = DATA / "aperio_svs" / "CMU-1-Small-Region.svs"
DICOM = (
    DATA
    / "dicom_wsi"
    / "CMU-1-Small-Region"
    / "1.2.826.0.1.3680043.8.498.58740178995208579534253317996600852419.dcm"
)
#: TTA stays on by default while a whole-slide prediction costs at most this much more.
GOAL_SLIDE_RATIO = 3.0


def _patches(model, n: int = 256) -> np.ndarray:
    """n real patches of the sample slide at the model's input size (tiled over the tissue)."""
    size = model.input_size[0]
    with Slide(SVS) as slide:
        region = slide.read_region(0, 400, 600, 1400, 1400)
    from PIL import Image

    mpp = 0.499
    scaled = np.asarray(
        Image.fromarray(region).resize(
            (round(1400 * mpp / model.config.spacing_um_px),) * 2, Image.Resampling.BOX
        )
    )
    tiles = [
        scaled[y : y + size, x : x + size]
        for y in range(0, scaled.shape[0] - size + 1, size // 2)
        for x in range(0, scaled.shape[1] - size + 1, size // 2)
    ]
    return np.stack((tiles * (n // len(tiles) + 1))[:n])


def throughput(model, batch: np.ndarray, repeats: int) -> float:
    model.predict(batch[:8])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(batch)
        times.append(time.perf_counter() - start)
    return len(batch) / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "bench_model.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model("default", device="cpu")
    ensemble = model.module
    if not hasattr(ensemble, "tta"):
        raise SystemExit("the bundled model is not the package's network (no TTA switch)")
    batch = _patches(model)
    rows = {}
    for tta in (False, True):
        ensemble.tta = tta
        agreement = compare_encodings(model, SVS, DICOM)
        rows["tta" if tta else "no_tta"] = {
            "patches_per_second": throughput(model, batch, args.repeats),
            "sample_slide_seconds": agreement.seconds_a,
            "encoding_agreement_svs_vs_dicom": agreement.to_dict(),
        }
    ensemble.tta = True
    base, tta = rows["no_tta"], rows["tta"]
    slide_ratio = tta["sample_slide_seconds"] / base["sample_slide_seconds"]
    result = {
        "benchmark": "bundled model: cost and effect of test-time augmentation (8 views)",
        "model": model.config.architecture,
        **rows,
        "ratios": {
            "network_time_tta_over_no_tta": base["patches_per_second"] / tta["patches_per_second"],
            "sample_slide_time_tta_over_no_tta": slide_ratio,
        },
        "goal": {
            "tta_on_by_default_while_slide_time_ratio_at_most": GOAL_SLIDE_RATIO,
            "met": slide_ratio <= GOAL_SLIDE_RATIO,
        },
        "machine": {
            "platform": platform.platform(),
            "cpus_visible": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "note": "a shared machine: absolute times are pessimistic, ratios are same-run",
        },
    }
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
