"""CPU options for the bundled model's forward pass: speed and the answer, measured in one run.

The bundled model (three small CNNs, eight flip/rotation views a patch) is what a CPU run spends
its time on. This benchmark times its forward pass on held-out PatchCamelyon patches (half of
them tumour, rendered as the node validation renders a cell: the central 80 µm at 1 µm/px) under
each option below, and compares every option's tumour probabilities with the shipped forward
pass's (``LoadedModel.forward``: channels-last input, ``torch.inference_mode``, float32):

* single thread, batch 64: ``shipped``; ``nchw`` (plain contiguous input and weights);
  ``no_grad`` (instead of inference mode); ``conv_bn_folded`` (each BatchNorm folded into the
  convolution before it, :func:`fold_batchnorm`); ``views_batched`` (a
  member's views as one batch); ``jit_freeze`` (TorchScript, frozen and optimised for
  inference); ``torch_compile`` (Inductor; its compile time reported); ``bf16_autocast``;
  ``int8_fx`` (post-training static quantisation, calibrated on other held-out patches);
  ``onnxruntime`` (the model exported to ONNX, one intra-op thread) where it imports;
* batch sizes 16-256 of the shipped pass, one thread;
* all cores: one torch thread, one OpenMP team over all cores, each batch split over all cores
  (:class:`~napari_metastasis.models.loading.ForwardPool`, what a run does: parts of 16
  patches), the same in parts of 32, with the BatchNorms folded, and ONNX Runtime split the same
  way or on a team of its own.

Options run interleaved, round by round (``--rounds``), so the machine's load changes hit them
alike; each option's speed is reported as the median over rounds of its rate divided by the
shipped pass's rate in the same round. An option is ``kept`` only if it is at least
``KEEP_SPEEDUP`` times faster *and* no probability moves by more than ``KEEP_MAX_DP``; the JSON
also gives each option's max |Δp| and the patches whose verdict at 0.5 flips.

    PYTHONPATH=. python benchmarks/bench_cpu_options.py --out resources/bench_cpu_options.json \\
        [--site /tmp/ort-site]   # a folder holding onnxruntime (pip install --target ...)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from napari_metastasis.datasets.pcam_splits import pcam_part  # noqa: E402
from napari_metastasis.evaluation.node_slides import PatchCache, cell_image  # noqa: E402
from napari_metastasis.models import load_model  # noqa: E402
from napari_metastasis.models.loading import ForwardPool  # noqa: E402
from napari_metastasis.models.networks import Ensemble  # noqa: E402
from napari_metastasis.models.safe_weights import build_safe_module  # noqa: E402

KEEP_SPEEDUP = 1.05
KEEP_MAX_DP = 1e-5
#: What the engine does with each option, and why (``kept`` above only says measured faster and
#: within the tolerance, on one thread; a run splits each batch over every core).
DECISIONS = {
    "split_in_parts_of_16": "adopted: the engine's CPU runs (ForwardPool, ThreadTuner)",
    "channels_last_inference_mode": "adopted before: the shipped pass (NCHW is ~2x slower)",
    "onnxruntime": (
        "adopted as the default wherever it runs (predict --backend auto, the viewer, "
        "load_model; models/onnx_runtime.py): the fastest exact option (same answers to 2e-7); "
        "exported through torch's TorchScript-based ONNX exporter (rot90 written as flip + "
        "transpose), cached under the weights' digest and checked against torch at every load; "
        "torch where it cannot run (GPUs, models from elsewhere)"
    ),
    "torch_compile": (
        "not adopted: ~5 s of compiling in every new process, a C++ compiler needed at run time "
        "(rare on pathologists' laptops), each batch shape compiled again"
    ),
    "jit_freeze": "not adopted: TorchScript is deprecated in torch 2.13 (warnings at every load)",
    "conv_bn_folded": (
        "not adopted: faster on one thread, not in the split a run uses (median below 1x there)"
    ),
    "bf16_autocast": (
        "not adopted: probabilities move by up to 3e-3 (tolerance 1e-5), and CPUs without "
        "AVX512-BF16 or AMX run it slower"
    ),
    "int8_fx": "not adopted: probabilities move by up to 0.02-0.05 and verdicts at 0.5 flip",
    "views_batched": "not adopted: slower (the stacked views leave the cache)",
    "batch_size": (
        "kept at 64 for reading; the forward pass runs it in parts of 16 (small batches are "
        "faster here because a part's activations stay in cache)"
    ),
}
DEFAULT_DATA = ROOT.parent / "shared" / "data"

Forward = Callable[[torch.Tensor], torch.Tensor]  # prepared batch -> (N,) tumour probability


def held_out_patches(data: Path, n: int, seed: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` held-out PCam patches (half tumour) as the node slides draw a cell: (N, 80, 80, 3)
    uint8 at 1 µm/px, and their labels. ``skip`` leaves out the first patches drawn (a second,
    disjoint set for calibration)."""
    files = pcam_part(data, "test")
    rng = np.random.default_rng(seed)
    half = n // 2
    tumour = rng.permutation(np.flatnonzero(files.labels == 1))[skip // 2 : skip // 2 + half]
    normal = rng.permutation(np.flatnonzero(files.labels == 0))[skip // 2 : skip // 2 + n - half]
    chosen = np.concatenate([tumour, normal])
    cache = PatchCache(files)
    patches = np.stack([cell_image(cache[int(i)], 80, 0, False) for i in chosen])
    return patches, files.labels[chosen]


def positive(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=1)[:, 1]


# --- the options ------------------------------------------------------------------------------
def fold_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` (in evaluation mode) with each Conv2d directly followed by a BatchNorm2d in
    an ``nn.Sequential`` folded into one Conv2d (changed in place; a Sequential is rebuilt)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(sequence: torch.nn.Sequential) -> torch.nn.Sequential:
        layers, out = list(sequence), []
        while layers:
            layer = layers.pop(0)
            if (
                isinstance(layer, torch.nn.Conv2d)
                and layers
                and isinstance(layers[0], torch.nn.BatchNorm2d)
            ):
                out.append(fuse_conv_bn_eval(layer, layers.pop(0)))
            else:
                out.append(fold_batchnorm(layer))
        return torch.nn.Sequential(*out).eval()

    if isinstance(module, torch.nn.Sequential):
        return fold(module)
    for name, child in module.named_children():
        setattr(module, name, fold_batchnorm(child))
    return module


class ExportableEnsemble(torch.nn.Module):
    """The ensemble's forward with each quarter turn written as flip + transpose (the same
    permutation of pixels as ``torch.rot90``), which the ONNX and FX tracers accept."""

    def __init__(self, ensemble: Ensemble):
        super().__init__()
        self.members = ensemble.members
        self.tta = ensemble.tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.members)
        total = torch.zeros_like(x[:, 0, 0, 0])
        views = 0
        for j, member in enumerate(self.members):
            for i in range(j, 8, n) if self.tta else [0]:
                xv = torch.flip(x, dims=[3]) if i >= 4 else x
                for _ in range(i % 4):
                    xv = torch.flip(xv, dims=[3]).transpose(2, 3)
                total = total + torch.sigmoid(member.logit(xv))
                views += 1
        p = (total / views).clamp(1e-6, 1 - 1e-6)
        z = torch.log(p) - torch.log1p(-p)
        return torch.stack([torch.zeros_like(z), z], dim=1)


class ViewsBatched(ExportableEnsemble):
    """Each member's views stacked into one batch (three calls a batch, not eight)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.members)
        total = torch.zeros_like(x[:, 0, 0, 0])
        for j, member in enumerate(self.members):
            views = []
            for i in range(j, 8, n):
                xv = torch.flip(x, dims=[3]) if i >= 4 else x
                views.append(torch.rot90(xv, i % 4, dims=[2, 3]) if i % 4 else xv)
            stacked = torch.cat(views).contiguous(memory_format=torch.channels_last)
            total = total + torch.sigmoid(member.logit(stacked)).view(len(views), -1).sum(0)
        p = (total / 8).clamp(1e-6, 1 - 1e-6)
        z = torch.log(p) - torch.log1p(-p)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def module_forward(module, *, grad_mode=torch.inference_mode, autocast=None) -> Forward:
    def forward(x: torch.Tensor) -> torch.Tensor:
        with grad_mode(), autocast() if autocast else contextlib.nullcontext():
            return positive(module(x))

    return forward


def jit_freeze(ensemble: Ensemble) -> Forward:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(copy.deepcopy(ensemble).eval())
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(scripted))
    return module_forward(frozen)


def torch_compile(ensemble: Ensemble, x: torch.Tensor, batch: int) -> tuple[Forward, float]:
    compiled = torch.compile(fold_batchnorm(copy.deepcopy(ensemble)).eval(), dynamic=False)
    start = time.perf_counter()
    with torch.inference_mode():
        for k in range(0, len(x), batch):  # every batch shape the timing will see
            compiled(x[k : k + batch])
    return module_forward(compiled), time.perf_counter() - start


def int8_fx(ensemble: Ensemble, calibration: torch.Tensor) -> Forward:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ExportableEnsemble(copy.deepcopy(ensemble)).eval()
        mapping = get_default_qconfig_mapping("x86")
        prepared = prepare_fx(model, mapping, example_inputs=(calibration[:8],))
        with torch.inference_mode():
            for k in range(0, len(calibration), 64):
                prepared(calibration[k : k + 64])
        quantised = convert_fx(prepared)
    return module_forward(quantised)


def onnx_session(ensemble: Ensemble, x: torch.Tensor, threads: int):
    import onnxruntime as ort

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ExportableEnsemble(copy.deepcopy(ensemble)).eval(),
            (x[:8].contiguous(),),
            buffer,
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
            opset_version=17,
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    return session, ort.__version__


def onnx_forward(session) -> Forward:
    def forward(x: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run(None, {"x": x.contiguous().numpy()})
        return positive(torch.from_numpy(logits))

    return forward


def split_forward(forward_part: Forward, pool: ForwardPool) -> Forward:
    """Each batch split over the pool's threads, one torch thread each."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.cat(pool.map(forward_part, pool.parts(x)))

    return forward


# --- timing -----------------------------------------------------------------------------------
def rate(forward: Forward, x: torch.Tensor, batch: int, threads: int) -> float:
    torch.set_num_threads(threads)
    forward(x[:batch])  # warm-up
    start = time.perf_counter()
    for k in range(0, len(x), batch):
        forward(x[k : k + batch])
    return len(x) / (time.perf_counter() - start)


def run_options(options: dict, x: torch.Tensor, rounds: int, reference: str) -> dict:
    """Each option (forward, input, batch, torch threads) timed once per round, interleaved."""
    rates: dict[str, list[float]] = {name: [] for name in options}
    for _ in range(rounds):
        for name, (forward, xin, batch, threads) in options.items():
            rates[name].append(rate(forward, xin, batch, threads))
    ref = rates[reference]
    return {
        name: {
            "patches_per_s_median": round(statistics.median(r), 1),
            "patches_per_s_best": round(max(r), 1),
            "speedup_median": round(
                statistics.median(a / b for a, b in zip(r, ref, strict=True)), 3
            ),
        }
        for name, r in rates.items()
    }


def answer_change(p: torch.Tensor, ref: torch.Tensor) -> dict:
    return {
        "max_abs_dp": float((p - ref).abs().max()),
        "verdict_flips_at_0.5": int(((p >= 0.5) != (ref >= 0.5)).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--site", type=Path, help="a folder to import onnxruntime from")
    parser.add_argument("--note", default="", help="conditions of the run, kept in the JSON")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.site:
        sys.path.append(str(args.site))  # after the venv's own packages
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1

    model = load_model("default", device="cpu")
    # The network as the bundled folder describes it (the loader may have rewritten its copy).
    ensemble = build_safe_module(model.folder, model.config)
    ensemble = ensemble.to(memory_format=torch.channels_last)
    patches, labels = held_out_patches(args.data, args.patches, args.seed)
    calibration, _ = held_out_patches(args.data, 256, args.seed, skip=args.patches)
    x = model.prepare(patches)
    torch.set_num_threads(1)
    shipped = module_forward(ensemble)
    ref = shipped(x)
    errors: dict[str, str] = {}
    extra: dict[str, dict] = {}
    single: dict[str, tuple] = {"shipped": (shipped, x, 64, 1)}
    single["nchw"] = (
        module_forward(copy.deepcopy(ensemble).to(memory_format=torch.contiguous_format)),
        x.contiguous(),
        64,
        1,
    )
    single["no_grad"] = (module_forward(ensemble, grad_mode=torch.no_grad), x, 64, 1)
    single["conv_bn_folded"] = (module_forward(fold_batchnorm(copy.deepcopy(ensemble))), x, 64, 1)
    single["views_batched"] = (module_forward(ViewsBatched(ensemble).eval()), x, 64, 1)
    single["bf16_autocast"] = (
        module_forward(ensemble, autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
        x,
        64,
        1,
    )
    for name, make in (
        ("jit_freeze", lambda: jit_freeze(ensemble)),
        ("int8_fx", lambda: int8_fx(ensemble, model.prepare(calibration))),
    ):
        try:
            single[name] = (make(), x, 64, 1)
        except Exception as exc:  # noqa: BLE001 - an option that does not build is reported, not fatal
            errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
    try:
        compiled, compile_s = torch_compile(ensemble, x, 64)
        single["torch_compile"] = (compiled, x, 64, 1)
        extra["torch_compile"] = {"compile_seconds": round(compile_s, 1)}
    except Exception as exc:  # noqa: BLE001 - reported in the JSON, not fatal
        errors["torch_compile"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    session = None
    try:
        session, ort_version = onnx_session(ensemble, x, 1)
        single["onnxruntime"] = (onnx_forward(session), x, 64, 1)
        extra["onnxruntime"] = {"version": ort_version}
    except Exception as exc:  # noqa: BLE001 - reported in the JSON, not fatal
        errors["onnxruntime"] = f"{type(exc).__name__}: {str(exc)[:300]}"

    answers = {name: answer_change(fwd(xin), ref) for name, (fwd, xin, _, _) in single.items()}
    torch.set_num_threads(1)
    print("single thread ...", file=sys.stderr)
    single_rates = run_options(single, x, args.rounds, "shipped")

    batches = {f"batch_{b}": (shipped, x, b, 1) for b in (16, 32, 64, 128, 256)}
    print("batch sizes ...", file=sys.stderr)
    batch_rates = run_options(batches, x, args.rounds, "batch_64")

    folded = module_forward(fold_batchnorm(copy.deepcopy(ensemble)))
    with ForwardPool(cores) as pool, ForwardPool(cores, part_size=32) as pool32:
        all_cores: dict[str, tuple] = {
            "shipped_one_thread": (shipped, x, 64, 1),
            "shipped_one_team": (shipped, x, 64, cores),
            "shipped_split": (split_forward(shipped, pool), x, 64, 1),
            "shipped_split_parts_of_32": (split_forward(shipped, pool32), x, 64, 1),
            "conv_bn_folded_split": (split_forward(folded, pool), x, 64, 1),
        }
        if session is not None:
            all_cores["onnxruntime_split"] = (split_forward(onnx_forward(session), pool), x, 64, 1)
            team_session, _ = onnx_session(ensemble, x, cores)
            all_cores["onnxruntime_one_team"] = (onnx_forward(team_session), x, 64, 1)
        print("all cores ...", file=sys.stderr)
        core_rates = run_options(all_cores, x, args.rounds, "shipped_one_thread")
        for name, (fwd, xin, _, threads) in all_cores.items():
            torch.set_num_threads(threads)
            answers[name] = answer_change(fwd(xin), ref)

    for name, row in single_rates.items():
        row.update(answers[name], **extra.get(name, {}))
        row["kept"] = name != "shipped" and (
            row["speedup_median"] >= KEEP_SPEEDUP and row["max_abs_dp"] <= KEEP_MAX_DP
        )
    for name, row in core_rates.items():
        row.update(answers[name])
    report = {
        "benchmark": "bench_cpu_options",
        "conditions": args.note,
        "cpu": platform.processor() or platform.machine(),
        "cores": cores,
        "torch": torch.__version__,
        "mkldnn_bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "load_average_1min": {
            "before": round(load_before, 2),
            "after": round(os.getloadavg()[0], 2),
        },
        "seconds": round(time.perf_counter() - started, 1),
        "patches": {
            "count": len(x),
            "tumour": int(labels.sum()),
            "source": "held-out PCam test patches, the central 80 µm at 1 µm/px (as node slides)",
            "shipped_p_range": [round(float(ref.min()), 4), round(float(ref.max()), 4)],
        },
        "rounds": args.rounds,
        "keep_rule": {"speedup_median_at_least": KEEP_SPEEDUP, "max_abs_dp_at_most": KEEP_MAX_DP},
        "single_thread_batch_64": single_rates,
        "batch_sizes_single_thread": batch_rates,
        "all_cores_batch_64": core_rates,
        "decisions": DECISIONS,
        "errors": errors,
    }
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
