"""Node-level validation: the clinical answer of ``predict`` on node slides of held-out patches.

Builds (or reuses, from ``--work``) a set of lymph-node slides made of PatchCamelyon patches of one
part of the fixed split (:mod:`napari_metastasis.datasets.pcam_splits`): ``test`` = the held-out
patches, never trained on nor used for a choice (the validation ``make validate`` runs); ``val`` =
the validation patches, where thresholds and the deposit decision may be chosen. Eight patients of
five nodes (negative, ITC, micro and macro deposits of several shapes, tissue on and off the
model's grid, one 40x scan per patient; see :mod:`napari_metastasis.evaluation.nodes`), then runs
``napari-metastasis predict`` on them as a user would (a subprocess of the CLI; the bundled model
unless ``--model``), and reads each ``<stem>.summary.json``, ``<stem>.geojson`` and ``stages.csv``:

* each node's verdict against its truth; each patient's pN stage and the quadratic-weighted kappa;
* false candidate regions per mm² of normal tissue, the largest false candidate, confirmed false
  deposits (regions with ``"confirmed": true``; all regions when the summaries carry no decision);
* each true deposit's greatest-dimension error and whether it is within one grid stride;
* wall time (the build, and ``predict`` as a whole process) and the issue's goals, pass or fail.

The predict output keeps ``nodes_truth.json`` beside it, so
``napari_metastasis.evaluation.node_scores.load_node_maps(<work>/.../predict)`` reloads each node's
probability map with its truth to try a decision rule offline (``--keep-maps``; without it the maps
and patch CSVs are removed after scoring).

    PYTHONPATH=. python benchmarks/bench_nodes.py --part test --out resources/bench_nodes.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from napari_metastasis.datasets.pcam_splits import SPLITS, pcam_part  # noqa: E402
from napari_metastasis.evaluation.node_scores import markdown_table, score_run  # noqa: E402
from napari_metastasis.evaluation.node_slides import TRUTH_FILE, build_node_set  # noqa: E402
from napari_metastasis.evaluation.nodes import plan_nodes  # noqa: E402

DEFAULT_WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "napari-metastasis-nodes"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
MAP_FILES = ("*.prob.zarr", "*.prob.tiff", "*.csv", "*.heatmap.png")


def predict_command(slides: list[Path], out: Path, model: str) -> list[str]:
    """``napari-metastasis predict`` as a user types it (the venv's console script when present)."""
    script = Path(sys.executable).with_name("napari-metastasis")
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "napari_metastasis.cli"]
    command = [*head, "predict", *map(str, slides), "--out", str(out), "--model", model]
    if model != "default":
        command.append("--trust-model")  # a model folder named on purpose
    return command


def read_back(truths, folder: Path, spacing_um: float) -> list[dict]:
    """The µm/px and pyramid level the project's reader finds on each written slide."""
    from napari_metastasis.slides.slide import Slide

    rows = []
    for t in truths:
        with Slide(folder / f"{t.name}.tif") as slide:
            mpp = slide.mpp
            level = slide.best_level_for_downsample(spacing_um / mpp) if mpp else None
            rows.append(
                {
                    "node": t.name,
                    "written_mpp": t.mpp,
                    "read_mpp": mpp,
                    "levels": slide.level_count,
                    "read_level": level,
                    "read_level_mpp": mpp * slide.level_downsamples[level] if mpp else None,
                }
            )
    return rows


def run_predict(
    command: list[str], out: Path, timeout: float | None
) -> tuple[int | None, str, float]:
    """Run ``predict`` into a fresh ``out``: (exit code, None when stopped at ``timeout``; stderr;
    wall seconds)."""
    shutil.rmtree(out, ignore_errors=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, env=env, check=False, timeout=timeout
        )
        code, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:  # score the nodes that finished
        code = None
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
    predict_s = time.perf_counter() - t0
    if code != 0:
        sys.stderr.write(stderr[-4000:])
    return code, stderr, predict_s


def run_bench(args: argparse.Namespace) -> dict:
    files = pcam_part(args.data, args.part)
    if len(files) == 0:
        raise SystemExit(f"bench_nodes: no PCam patches under {args.data}/patches")
    specs = plan_nodes(args.nodes, seed=args.seed, node_cells=args.node_cells)
    base = Path(args.work) / f"{args.part}-n{len(specs)}-c{args.node_cells}-s{args.seed}"
    slides_dir = base / "slides"
    t0 = time.perf_counter()
    truths = build_node_set(
        specs, files, slides_dir, seed=args.seed, part=args.part, patches=len(files)
    )
    build_s = time.perf_counter() - t0
    readback = read_back(truths, slides_dir, spacing_um=1.0)
    model_tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(args.model).name or "model")
    out = base / f"predict-{model_tag}"
    slides = [slides_dir / f"{t.name}.tif" for t in truths]
    command = predict_command(slides, out, args.model)
    load_before = os.getloadavg()[0]
    if args.score_only:  # an earlier run's output folder, scored again (e.g. after a fix)
        code, stderr, predict_s = 0, "", float("nan")
    else:
        code, stderr, predict_s = run_predict(command, out, args.timeout)
    shutil.copy2(slides_dir / TRUTH_FILE, out / TRUTH_FILE)
    result = score_run(truths, out)
    patches = sum(max(0, n["patches"]) for n in result["nodes"])
    if not args.keep_maps:
        for pattern in MAP_FILES:
            for path in out.glob(pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    return {
        "benchmark": "bench_nodes",
        "part": args.part,
        "held_out": args.part == "test",
        "split": {name: {"seed": s, "test": t, "val": v} for name, (s, t, v) in SPLITS.items()},
        "patches_in_part": len(files),
        "tumour_patches_in_part": int(files.labels.sum()),
        "model": args.model,
        "seed": args.seed,
        "node_cells": args.node_cells,
        "n_nodes": len(truths),
        "n_patients": len({t.patient for t in truths}),
        "command": f"napari-metastasis predict <{len(slides)} node slides> --out {out} "
        f"--model {args.model}",
        "predict_exit_code": code,  # None: stopped at --timeout
        "predict_timed_out": code is None,
        "predict_stderr_tail": stderr[-1500:] if code else "",
        "work": str(base),
        "maps_kept": bool(args.keep_maps),
        "build_s": round(build_s, 1),
        "predict_wall_s": round(predict_s, 1) if predict_s == predict_s else None,
        "patches_analysed": patches,
        "patches_per_s": round(patches / predict_s, 1) if predict_s > 0 else None,
        "conditions": {
            "cpu_count": os.cpu_count(),
            "load_average_1min_before": round(load_before, 2),
            "load_average_1min_after": round(os.getloadavg()[0], 2),
            "machine": platform.machine(),
        },
        "readback": readback,
        **result,
    }


def print_report(r: dict) -> None:
    print(
        f"node validation on the {r['part']} part ({r['n_nodes']} nodes, {r['n_patients']} patients)"
    )
    print(
        f"{'node':22} {'truth':8} {'verdict':8} {'true mm':>8} {'meas mm':>8} {'cand':>5} "
        f"{'false':>5} {'conf.false':>10} {'mpp':>5} grid"
    )
    for n in r["nodes"]:
        meas = "-" if n["measured_dimension_mm"] is None else f"{n['measured_dimension_mm']:.2f}"
        print(
            f"{n['name']:22} {n['truth']:8} {n['verdict']:8} {n['true_dimension_mm']:8.2f} "
            f"{meas:>8} {n['candidates']:5d} {n['false_candidates']:5d} {n['false_confirmed']:10d} "
            f"{n['mpp']:5.2f} {'on' if n['on_grid'] else 'off'}{'' if n['correct'] else '  WRONG'}"
        )
    for p in r["patients"]:
        print(f"{p['patient']}: truth {p['truth']:8} predicted {p['predicted']}")
    kappa = "n/a" if r["kappa"] is None else f"{r['kappa']:.3f}"
    print(
        f"nodes right {r['nodes_right']}/{r['nodes_scored']}; kappa {kappa}; false candidates "
        f"{r['false_candidates']} on {r['normal_tissue_mm2']:.1f} mm² of normal tissue; largest "
        f"false {r['largest_false_candidate_mm']:.2f} mm; predict {r['predict_wall_s']} s "
        f"({r['patches_per_s']} patches/s)"
    )
    for g in r["goals"]:
        print(f"[{'PASS' if g['pass'] else 'FAIL'}] {g['goal']}: {g['measured']}")
    print(markdown_table(r))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("test", "val"), default="test")
    parser.add_argument("--nodes", type=int, default=40, help="rounded up to patients of five")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="slides and outputs")
    parser.add_argument("--model", default="default", help="model folder or name")
    parser.add_argument("--keep-maps", action="store_true", help="keep probability maps and CSVs")
    parser.add_argument("--out", type=Path, help="write the JSON here")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--node-cells", type=int, default=32, help="cells per node side")
    parser.add_argument(
        "--score-only", action="store_true", help="score the existing predict output again"
    )
    parser.add_argument(
        "--timeout", type=float, help="stop predict after this many seconds; score what finished"
    )
    args = parser.parse_args(argv)
    result = run_bench(args)
    print_report(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["predict_exit_code"] == 0 else 1  # None (timed out) is a failure too


if __name__ == "__main__":
    sys.exit(main())
