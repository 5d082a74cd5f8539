"""The GPU run issue #13 asks for, prepared on the CPU so that a short GPU lease is enough.

On a CUDA device (``--device cuda``), in one process:

1. ``bench_predict``'s five rates (decode limit, reader, forward pass, pipeline, per-patch way) on
   a 50,000 x 40,000 px synthetic slide for the bundled model and for a ResNet-50-sized network
   (224 px at 0.5 µm/px, ImageNet normalisation, random weights: the same convolutions and
   4 GFLOPs a patch as a real one), AMP on; while the pipeline (d) runs, GPU utilisation is sampled
   with ``nvidia-smi`` every 100 ms;
2. ``napari-metastasis predict`` end to end, as a whole process, with the bundled model on a
   100,000 x 80,000 px synthetic slide (goal: under 60 s), its wall time and patches per second.

The JSON (``--out``) names each run's bottleneck: read where the reader is slower than the
forward pass, forward otherwise. On the CPU it runs the same way at smaller sizes
(``--synthetic-size``, ``--big-size``) to check the script itself:

    PYTHONPATH=. python benchmarks/bench_gpu.py --device cuda --out "$OUT/bench_gpu.json"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_predict

from napari_metastasis.models import load_model
from napari_metastasis.pipeline import default_num_workers, make_grid, plan_cells
from napari_metastasis.slides.slide import Slide

GPU_GOAL_SECONDS = 60.0


# --- a ResNet-50-sized network ------------------------------------------------------------------
class _Bottleneck(nn.Module):
    def __init__(self, inputs: int, width: int, stride: int):
        super().__init__()
        outputs = 4 * width
        self.body = nn.Sequential(
            nn.Conv2d(inputs, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, outputs, 1, bias=False),
            nn.BatchNorm2d(outputs),
        )
        self.shortcut = (
            nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs)
            )
            if stride != 1 or inputs != outputs
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet50Sized(nn.Module):
    """ResNet-50's layout (3, 4, 6, 3 bottleneck blocks; 25.6 M parameters with a 1000-way head,
    23.5 M with this 2-way one): the compute of the networks pathology models are built on."""

    def __init__(self, classes: int = 2):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        inputs = 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(_Bottleneck(inputs, width, stride if i == 0 else 1))
                inputs = 4 * width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(inputs, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def write_resnet50_model(folder: Path) -> Path:
    """A WSInfer-style folder: TorchScript ResNet-50-sized network, 224 px at 0.5 µm/px."""
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    return bench_predict.write_model_folder(
        folder,
        ResNet50Sized,
        "ResNet-50-sized (random weights; GPU benchmark model)",
        224,
        0.5,
        [{"name": "ToTensor", "arguments": {}}, {"name": "Normalize", "arguments": imagenet}],
    )


# --- GPU utilisation ----------------------------------------------------------------------------
class UtilisationSampler:
    """``nvidia-smi``'s GPU utilisation every 100 ms while the block runs (empty without it)."""

    def __init__(self):
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> UtilisationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(command, capture_output=True, text=True, timeout=5).stdout
                self.samples.append(int(out.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return  # no nvidia-smi (a CPU run): no samples
            self._stop.wait(0.1)

    def summary(self) -> dict:
        if not self.samples:
            return {"samples": 0}
        return {
            "samples": len(self.samples),
            "mean_percent": round(sum(self.samples) / len(self.samples), 1),
            "max_percent": max(self.samples),
        }


def measure_with_utilisation(slide: Path, model, args) -> dict:
    """bench_predict's five rates, then the pipeline once more with GPU utilisation sampled."""
    run = bench_predict.measure(slide, model, args)
    with Slide(slide) as opened:
        grid = make_grid(opened, model)
        cells = plan_cells(opened, grid)[: run["patches_timed"]]
        with UtilisationSampler() as sampler:
            seconds = bench_predict.time_pipeline(
                opened, grid, model, cells, args.batch_size, args.workers
            )
    run["gpu_utilisation_during_pipeline"] = sampler.summary()
    run["pipeline_again_patches_per_s"] = round(len(cells) / seconds, 1)
    return run


def end_to_end(slide: Path, device: str, work: Path, workers: int, batch_size: int) -> dict:
    """``napari-metastasis predict`` on ``slide`` with the bundled model, as a whole process."""
    out = work / "predict-out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "from napari_metastasis.cli import run; run()", "predict",
         str(slide), "--out", str(out), "--device", device, "--workers", str(workers),
         "--batch-size", str(batch_size)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    result: dict = {
        "slide": slide.name,
        "device": device,
        "batch_size": batch_size,
        "seconds": round(seconds, 1),
    }
    if done.returncode:
        result["failed"] = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return result
    csv = out / f"{slide.stem}.csv"
    patches = bench_predict._csv_rows(csv)
    result.update(
        patches=patches,
        patches_per_s=round(patches / seconds, 1),
        goal_seconds=GPU_GOAL_SECONDS,
        goal_met=seconds < GPU_GOAL_SECONDS,
        summary=done.stdout.strip().splitlines()[:1],  # the slide's line
    )
    return result


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=default_num_workers())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeat-below", type=float, default=10)
    parser.add_argument("--budget", type=float, default=15, help="seconds of forward passes")
    parser.add_argument("--min-patches", type=int, default=2048)
    parser.add_argument("--seeds-patches", type=int, default=1024)
    parser.add_argument("--synthetic-size", type=_size, default=bench_predict.SYNTHETIC_SIZE)
    parser.add_argument("--big-size", type=_size, default=(100_000, 80_000))
    parser.add_argument("--out", type=Path, help="write the JSON here (also printed)")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        synthetic = bench_predict.write_synthetic_slide(
            work / "synthetic.tiff", size=args.synthetic_size
        )
        models = {
            "bundled": load_model("default", device=args.device),
            "resnet50-sized": load_model(
                write_resnet50_model(work / "resnet50"), device=args.device
            ),
        }
        runs = {}
        for name, model in models.items():
            runs[name] = measure_with_utilisation(synthetic, model, args)
            print(json.dumps({name: runs[name]}), file=sys.stderr)
        big = bench_predict.write_synthetic_slide(work / "big.tiff", size=args.big_size)
        whole = end_to_end(big, args.device, work, args.workers, args.batch_size)
    device = models["bundled"].device
    report = {
        "benchmark": "bench_gpu",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "reader_threads": args.workers,
        "batch_size": args.batch_size,
        "amp": models["bundled"].amp,
        "synthetic_slide": list(args.synthetic_size),
        "runs": runs,
        "end_to_end": whole,
        "seconds": round(time.perf_counter() - started, 1),
    }
    bench_predict.emit_report(report, args.out)


if __name__ == "__main__":
    main()
