"""Time to the answer: ``napari-metastasis predict`` from its start to ``stages.csv``, on node slides.

Two workloads, each run through the CLI as a user runs it (a new process:
``benchmarks/answer_runner.py``, which calls the CLI's ``main`` unchanged and notes when things
happen), with the bundled model on the CPU unless ``--device``:

* (a) ``nodes``: node slides of the node validation (:mod:`napari_metastasis.evaluation.nodes`,
  held-out PatchCamelyon patches; built as ``benchmarks/bench_nodes.py`` builds them and cached
  in the same place): by default the five nodes of one patient (``--patient 1``: pN2, a macro
  deposit on a 40x scan and three micro ones); ``--nodes 40`` for the whole set.
* (b) ``camelyon_size``: one node slide of Camelyon size built from held-out patches: a square of
  ``--big-cells`` x ``--big-cells`` cells of 80 µm (default 128: 104.9 mm² of tissue, 16,384
  cells, of which the tissue detection keeps about 97 % as patches: PCam patches of mostly white
  fat fall below its threshold) at 0.25 µm/px (42,880 px square), JPEG-tiled (256-px tiles,
  levels down to 335 px),
  with a macro deposit (a disc of 30 cells, 2.4 mm). It is written tile row by tile row, never
  whole in memory, each level rendered from the patches at its own resolution (a cell is 320,
  160, 80, 40 px on the first four; the smaller levels are halvings), and cached in ``--work``.
  ``--quick``: 40 x 40 cells (10.2 mm², 1,600 patches).

Each workload runs in each *mode*, alternating, ``--repeats`` times: ``current`` (this checkout as
it is), ``old_split`` (``NAPARI_METASTASIS_TORCH_THREADS=readers``: torch gets only the cores the
reader threads leave, as every run did before the thread tuner) and, with ``--before-tree DIR`` (a
checkout of the code before a change, e.g. ``git worktree add /tmp/before <rev>``), ``before``.
For each run: the wall time from starting the process to ``stages.csv`` being written and to the
process's exit; its stages (interpreter start-up, imports and model load, then per slide:
opening, tissue and planning; classification with patches/s; writing the slide's files; then
staging); the peak resident memory of the process (its VmHWM; goal < 2 GB); and
the answer: each slide's verdict, largest deposit and stage, and the greatest |Δp| between modes'
patch CSVs.

    PYTHONPATH=. python benchmarks/bench_answer.py --out resources/bench_answer.json \\
        [--quick] [--nodes 40] [--before-tree /tmp/before]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from napari_metastasis.datasets.pcam_splits import PatchFiles, pcam_part  # noqa: E402
from napari_metastasis.evaluation.node_slides import (  # noqa: E402
    GLASS,
    TILE,
    PatchCache,
    _half,
    build_node_set,
    cell_image,
    draw_node,
)
from napari_metastasis.evaluation.nodes import ON_GRID_UM, NodeSpec, plan_nodes  # noqa: E402

DEFAULT_WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "napari-metastasis-answer"
NODES_WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "napari-metastasis-nodes"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
RUNNER = Path(__file__).resolve().parent / "answer_runner.py"
THREADS_ENV_VAR = "NAPARI_METASTASIS_TORCH_THREADS"
BIG_CELLS, QUICK_CELLS = 128, 40
BIG_MPP = 0.25
GOALS = {
    "camelyon_size_seconds_to_stages": 60.0,
    "peak_rss_mb": 2048.0,
    "nodes_speedup_over_before": 4.0,
}


# --- the held-out patches ------------------------------------------------------------------------
def export_pool(data: Path, path: Path, quality: int = 85) -> dict:
    """The held-out part's patches in one file to carry to a machine without the shared data
    (the GPU's): stems, labels and each patch JPEG-encoded at ``quality`` (11 MB for the 2,118
    patches at 85, 17 MB at 95: with the 40 MB of wheels it must fit the 64 MB a run carries)."""
    import imagecodecs
    import tifffile

    files = pcam_part(data, "test")
    encoded = [
        imagecodecs.jpeg8_encode(np.asarray(tifffile.imread(p))[..., :3], level=quality)
        for p in files.paths
    ]
    offsets = np.cumsum([0, *map(len, encoded)])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        stems=np.array([p.stem for p in files.paths]),
        labels=files.labels,
        offsets=offsets,
        jpeg=np.frombuffer(b"".join(encoded), np.uint8),
    )
    return {"patches": len(files), "bytes": path.stat().st_size}


def heldout(args) -> PatchFiles:
    """The held-out part: the shared data's files, or the patches of ``--pool`` written out as
    TIFF files once (same stems, labels and order, so the same nodes are drawn)."""
    if not args.pool:
        return pcam_part(args.data, "test")
    import imagecodecs
    import tifffile

    pool = np.load(args.pool)
    folder = args.work / "pool" / args.pool.stem
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    offsets, jpeg = pool["offsets"], pool["jpeg"]
    for k, stem in enumerate(pool["stems"].tolist()):
        path = folder / f"{stem}.tif"
        if not path.is_file():
            tifffile.imwrite(
                path, imagecodecs.jpeg8_decode(jpeg[offsets[k] : offsets[k + 1]].tobytes())
            )
        paths.append(path)
    return PatchFiles(paths, pool["labels"])


# --- (b) the Camelyon-size node slide ------------------------------------------------------------
def big_node_spec(cells: int) -> NodeSpec:
    return NodeSpec(
        name="camelyon_size_node",
        patient="camelyon_size",
        category="macro",
        shape="disc30",
        mpp=BIG_MPP,
        offset_um=ON_GRID_UM,
        node_cells=cells,
        index=0,
    )


def _level_tiles(cell_rows, n_cells: int, cell_px: int, origin: int, side: int):
    """The tiles of one level, row by row: glass, and the cells' pixels where they lie.

    ``cell_rows(r)`` gives cell row ``r`` as a (cell_px, n_cells * cell_px, 3) strip; only the
    one or two cell rows under the current tile row are kept.
    """
    cache: dict[int, np.ndarray] = {}
    for y0 in range(0, side, TILE):
        band = np.full((TILE, side, 3), GLASS, np.uint8)
        first = max(0, (y0 - origin) // cell_px)
        last = min(n_cells - 1, (y0 + TILE - 1 - origin) // cell_px)
        for r in range(first, last + 1):
            if r not in cache:
                cache = {k: v for k, v in cache.items() if k >= r - 1}
                cache[r] = cell_rows(r)
            top = origin + r * cell_px
            a, b = max(y0, top), min(y0 + TILE, top + cell_px)
            if a < b:
                band[a - y0 : b - y0, origin : origin + n_cells * cell_px] = cache[r][
                    a - top : b - top
                ]
        for x0 in range(0, side, TILE):
            tile = band[:, x0 : x0 + TILE]
            if tile.shape[1] < TILE:
                tile = np.pad(
                    tile, ((0, 0), (0, TILE - tile.shape[1]), (0, 0)), constant_values=GLASS
                )
            yield np.ascontiguousarray(tile)


def build_big_node(
    folder: Path, cells: int, files: PatchFiles, seed: int = 0
) -> tuple[Path, dict, float]:
    """The Camelyon-size node slide (cached: reused when its truth file matches), its truth and
    the seconds the build took (0 when reused)."""
    import tifffile

    spec = big_node_spec(cells)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}-c{cells}-s{seed}.tif"
    truth_path = path.with_suffix(".truth.json")
    if path.is_file() and truth_path.is_file():
        return path, json.loads(truth_path.read_text()), 0.0
    start = time.perf_counter()
    truth, chosen, turns, flips = draw_node(spec, files, seed)
    cache = PatchCache(files)
    side = truth.size_px[0]
    origin_um = truth.tissue_origin_um
    tmp = path.with_name(f".{path.name}.partial")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        ds, level_image = 1, None
        while True:
            lside = side // ds
            if level_image is None:
                cell_px = round(80 / (BIG_MPP * ds))

                def cell_rows(r, cell_px=cell_px):
                    return np.concatenate(
                        [
                            cell_image(
                                cache[int(chosen[r, c])],
                                cell_px,
                                int(turns[r, c]),
                                bool(flips[r, c]),
                            )
                            for c in range(cells)
                        ],
                        axis=1,
                    )

                origin = round(origin_um / (BIG_MPP * ds))
                if lside <= 4096:  # small levels: whole in memory, then halved from here on
                    level_image = np.full((lside, lside, 3), GLASS, np.uint8)
                    for r in range(cells):
                        y = origin + r * cell_px
                        level_image[y : y + cell_px, origin : origin + cells * cell_px] = cell_rows(
                            r
                        )
                    data_arg = level_image
                    shape_arg = None
                else:
                    data_arg = _level_tiles(cell_rows, cells, cell_px, origin, lside)
                    shape_arg = (lside, lside, 3)
            else:
                level_image = _half(level_image)
                data_arg, shape_arg = level_image, None
            kwargs = {
                "tile": (TILE, TILE),
                "compression": "jpeg",
                "compressionargs": {"level": 90},
                "photometric": "rgb",
                "resolution": (1e4 / (BIG_MPP * ds),) * 2,
                "resolutionunit": "CENTIMETER",
                "subfiletype": 1 if ds > 1 else 0,
                "metadata": None,
            }
            if shape_arg is not None:
                tw.write(data_arg, shape=shape_arg, dtype=np.uint8, **kwargs)
            else:
                tw.write(data_arg, **kwargs)
            if lside <= 512:
                break
            ds *= 2
    tmp.replace(path)
    info = truth.to_dict()
    info.pop("patches")
    info["tissue_mm2"] = round(cells * cells * 0.08 * 0.08, 2)
    truth_path.write_text(json.dumps(info, indent=1) + "\n")
    return path, info, time.perf_counter() - start


# --- (a) node slides -----------------------------------------------------------------------------
def node_slides(args, files: PatchFiles) -> tuple[list[Path], float]:
    n = args.nodes if args.nodes else 5 * (args.patient + 1)
    specs = plan_nodes(n, seed=args.seed, node_cells=args.node_cells)
    root = NODES_WORK if not args.pool else args.work / "nodes"  # JPEG'd pool: other pixels
    base = root / f"test-n{len(specs)}-c{args.node_cells}-s{args.seed}"
    start = time.perf_counter()
    truths = build_node_set(
        specs, files, base / "slides", seed=args.seed, part="test", patches=len(files)
    )
    seconds = time.perf_counter() - start
    if not args.nodes:
        truths = [t for t in truths if t.patient == f"patient_{args.patient:03d}"]
    return [base / "slides" / f"{t.name}.tif" for t in truths], seconds


# --- one CLI run -----------------------------------------------------------------------------------
def run_cli(slides: list[Path], out: Path, mode: str, args) -> dict:
    """``predict`` on ``slides`` into a fresh ``out`` in a new process; its times and memory."""
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != THREADS_ENV_VAR}
    code_root = ROOT if mode != "before" else args.before_tree
    kept = [  # other folders (e.g. a GPU machine's wheels), never this checkout
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT
    ]
    env["PYTHONPATH"] = os.pathsep.join([str(code_root), *kept])
    if mode == "old_split":
        env[THREADS_ENV_VAR] = "readers"
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        timeline_path = Path(handle.name)
    env["ANSWER_TIMELINE"] = str(timeline_path)
    command = [sys.executable, str(RUNNER), "predict", *map(str, slides), "--out", str(out)]
    command += ["--device", args.device, "--model", args.model]
    if mode == "exhaustive":
        command.append("--exhaustive")
    if mode == "torch":
        command += ["--backend", "torch"]
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(code_root)
    )
    tails: dict[str, bytes] = {}

    def drain(name, stream):
        data = stream.read()
        tails[name] = data[-3000:]

    readers = [
        threading.Thread(target=drain, args=(n, s), daemon=True)
        for n, s in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    timeline = json.loads(timeline_path.read_text()) if timeline_path.stat().st_size else {}
    timeline_path.unlink()
    result = {
        "mode": mode,
        "exit_code": proc.returncode,
        "wall_seconds": round(wall, 2),
        # the CLI's own peak (VmHWM); wait4's ru_maxrss also keeps this benchmark's memory
        # from before the fork, so it is kept only as a cross-check
        "peak_rss_mb": timeline.get("peak_rss_mb"),
        "wait4_ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1),
    }
    if proc.returncode:
        result["stderr_tail"] = tails.get("stderr", b"").decode(errors="replace")[-1500:]
        return result
    result.update(stages(timeline, wall))
    return result


def stages(timeline: dict, wall: float) -> dict:
    """The run's stages from the runner's timeline (seconds; patches/s where patches pass)."""
    lines = timeline.get("lines", [])
    exited = timeline["exited"]
    startup = wall - exited  # interpreter start and the runner's own imports
    model_at = next(
        (t for t, s, text in lines if s == "stderr" and text.startswith("model ")), None
    )
    stages_at = next(
        (t for t, s, text in lines if s == "stdout" and text.startswith("pN stages")), None
    )
    slide_lines = [t for t, s, text in lines if s == "stdout" and not text.startswith("pN stages")]
    out: dict = {
        "seconds_to_stages_csv": round(startup + stages_at, 2) if stages_at is not None else None,
        "stages": {"startup_and_model_load": round(startup + (model_at or 0.0), 2)},
        "slides": [],
    }
    previous = model_at or 0.0
    planned = classified = writing = 0.0
    patches = 0
    for k, run in enumerate(timeline.get("runs", [])):
        done_at = slide_lines[k] if k < len(slide_lines) else run.get("ended", previous)
        row = {
            "slide": run["slide"],
            "patches": run["patches"],
            "open_tissue_plan_s": round(run["called"] - previous, 2),
            "classify_s": round(run.get("ended", run["called"]) - run["called"], 2),
            "write_files_s": round(done_at - run.get("ended", run["called"]), 2),
        }
        row["classify_patches_per_s"] = (
            round(run["patches"] / row["classify_s"], 1) if row["classify_s"] > 0 else None
        )
        for key in ("passes", "first_pass_tuner", "tuner"):
            if key in run:
                row[key] = run[key]
        out["slides"].append(row)
        planned += row["open_tissue_plan_s"]
        classified += row["classify_s"]
        writing += row["write_files_s"]
        patches += run["patches"]
        previous = done_at
    out["stages"].update(
        open_tissue_plan=round(planned, 2),
        classify=round(classified, 2),
        write_files=round(writing, 2),
        stage_patients=round(stages_at - previous, 2) if stages_at is not None else None,
        exit=round(exited - (stages_at or previous), 2),
    )
    out["patches"] = patches
    out["patches_per_s"] = {
        "classify": round(patches / classified, 1) if classified else None,
        "slide_to_stages_csv": round(patches / (startup + stages_at), 1) if stages_at else None,
        "open_tissue_plan": round(patches / planned, 1) if planned else None,
        "write_files": round(patches / writing, 1) if writing else None,
    }
    return out


# --- the answer ------------------------------------------------------------------------------------
def answer(out: Path) -> dict:
    """What a run decided: each slide's verdict and deposits, the stages, and the patch CSVs."""
    from napari_metastasis.clinical.summary import read_summaries

    slides = {}
    for summary in read_summaries(out):
        verdict = summary.verdict
        confirmed = [d for d in summary.deposits if d.confirmed and d.is_candidate]
        slides[summary.stem] = {
            "verdict": verdict.category,
            "greatest_dimension_mm": round(verdict.greatest_dimension_mm, 3),
            "confirmed_deposits": len(confirmed),
            "stride_mm": summary.stride_um / 1000,
            "patches": summary.patches,
            "patches_first_pass_only": summary.patches_first_pass_only,
        }
    stages_file = out / "stages.csv"
    return {
        "slides": slides,
        "stages_csv": stages_file.read_text() if stages_file.is_file() else None,
    }


def patch_probabilities(out: Path) -> dict[str, dict[tuple[int, int], float]]:
    result = {}
    for path in sorted(out.glob("*.csv")):
        if path.name == "stages.csv":
            continue
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "prob_tumor" not in rows[0]:  # (6 decimals: |dp| below 1e-6 reads 0)
            continue
        result[path.stem] = {(int(r["minx"]), int(r["miny"])): float(r["prob_tumor"]) for r in rows}
    return result


def deposit_patches(out: Path, stems: Iterable[str]) -> dict[str, set[tuple[int, int]]]:
    """Each slide's patches (by minx, miny) whose centre lies in a confirmed deposit of its
    GeoJSON (QuPath class Tumor)."""
    from shapely.geometry import Point, shape

    inside: dict[str, set[tuple[int, int]]] = {}
    for stem in stems:
        data = json.loads((out / f"{stem}.geojson").read_text())
        features = data["features"] if isinstance(data, dict) else data
        polygons = [
            shape(f["geometry"])
            for f in features
            if (f.get("properties", {}).get("classification") or {}).get("name") == "Tumor"
        ]
        with (out / f"{stem}.csv").open(newline="") as f:
            boxes = {
                (int(r["minx"]), int(r["miny"])): (int(r["width"]), int(r["height"]))
                for r in csv.DictReader(f)
            }
        inside[stem] = {
            (x, y)
            for (x, y), (w, h) in boxes.items()
            if any(poly.contains(Point(x + w / 2, y + h / 2)) for poly in polygons)
        }
    return inside


def compare(a: Path, b: Path) -> dict:
    """Two runs' answers: same verdicts, stages and confirmed deposits; the greatest dimension's
    difference; max |Δp| over all patches, where both runs classified the same patches (a run on
    another patch grid, e.g. code from before the centred grid of issue 23 F5, is compared by its
    answers only)."""
    ans_a, ans_b = answer(a), answer(b)
    dims = [
        abs(sa["greatest_dimension_mm"] - ans_b["slides"][stem]["greatest_dimension_mm"])
        for stem, sa in ans_a["slides"].items()
    ]
    answers = {
        "same_verdicts": all(
            sa["verdict"] == ans_b["slides"][stem]["verdict"]
            for stem, sa in ans_a["slides"].items()
        ),
        "same_confirmed_deposits": all(
            sa["confirmed_deposits"] == ans_b["slides"][stem]["confirmed_deposits"]
            for stem, sa in ans_a["slides"].items()
        ),
        "same_stages_csv": ans_a["stages_csv"] == ans_b["stages_csv"],
        "max_greatest_dimension_difference_mm": round(max(dims, default=0.0), 4),
    }
    pa, pb = patch_probabilities(a), patch_probabilities(b)
    dp = 0.0
    for stem, probs in pa.items():
        other = pb.get(stem, {})
        common = probs.keys() & other.keys()
        if len(common) != len(probs) or len(common) != len(other):
            return {"same_patches": False, **answers}
        if common:
            dp = max(dp, max(abs(probs[k] - other[k]) for k in common))
    in_deposits = deposit_patches(a, pa)
    dp_deposits = max(
        (abs(pa[stem][k] - pb[stem][k]) for stem, keys in in_deposits.items() for k in keys),
        default=0.0,
    )
    return {
        "same_patches": True,
        **answers,
        "max_abs_dp": dp,
        "max_abs_dp_in_confirmed_deposits": dp_deposits,
        "patches_in_confirmed_deposits": sum(map(len, in_deposits.values())),
    }


def wsinfer_side_by_side(slide: Path, args) -> dict:
    """``napari-metastasis predict`` and ``wsinfer run`` as whole processes on ``slide`` with the
    bundled model's folder (WSInfer reads its TorchScript file), batch 64, one reader per core,
    each tool's own thread defaults (:func:`bench_predict.run_peer`)."""
    from bench_predict import run_peer

    from napari_metastasis.models.registry import resolve_model

    folder = resolve_model(args.model)
    work = args.work / "out" / "wsinfer"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return run_peer(args.wsinfer_venv, [slide], folder, work, os.cpu_count() or 1, 3600.0)


# --- main ------------------------------------------------------------------------------------------
def workload(name: str, slides: list[Path], modes: list[str], args) -> dict:
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    outs = {m: args.work / "out" / f"{name}-{m}" for m in modes}
    for rep in range(args.repeats):
        for mode in modes if rep % 2 == 0 else modes[::-1]:  # alternate, ABBA
            print(f"{name}: {mode} (repeat {rep + 1}/{args.repeats}) ...", file=sys.stderr)
            runs[mode].append(run_cli(slides, outs[mode], mode, args))
            r = runs[mode][-1]
            print(
                f"  {r.get('seconds_to_stages_csv')} s to stages.csv, {r['peak_rss_mb']} MB, "
                f"exit {r['exit_code']}",
                file=sys.stderr,
            )
    summary: dict = {"slides": [s.name for s in slides], "runs": runs}
    times = {
        m: [r["seconds_to_stages_csv"] for r in rs if r.get("seconds_to_stages_csv")]
        for m, rs in runs.items()
    }
    summary["median_seconds_to_stages_csv"] = {
        m: round(statistics.median(t), 2) if t else None for m, t in times.items()
    }
    summary["peak_rss_mb_max"] = max(
        (r["peak_rss_mb"] for rs in runs.values() for r in rs if r.get("peak_rss_mb")), default=None
    )
    if times.get("current"):
        summary["speedup_over"] = {
            m: round(statistics.median(t) / statistics.median(times["current"]), 2)
            for m, t in times.items()
            if m != "current" and t
        }
        summary["answer"] = answer(outs["current"])
        summary["same_answer_as"] = {
            m: compare(outs["current"], outs[m]) for m in modes if m != "current" and times[m]
        }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="slides and outputs")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pool", type=Path, help="held-out patches from --export-pool")
    parser.add_argument(
        "--export-pool", type=Path, help="write the held-out patches to this .npz and stop"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="default")
    parser.add_argument("--patient", type=int, default=1, help="(a): this patient's five nodes")
    parser.add_argument("--nodes", type=int, default=0, help="(a): the first N nodes (40: all)")
    parser.add_argument("--node-cells", type=int, default=32, help="(a): cells per node side")
    parser.add_argument("--big-cells", type=int, default=BIG_CELLS, help="(b): cells per side")
    parser.add_argument(
        "--quick", action="store_true", help=f"(b) of {QUICK_CELLS} x {QUICK_CELLS} cells"
    )
    parser.add_argument("--only", choices=("nodes", "camelyon_size"), help="run one workload")
    parser.add_argument("--modes", default="current,exhaustive", help="comma-separated")
    parser.add_argument(
        "--before-tree", type=Path, help="a checkout of the code before: mode 'before'"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each mode, alternating")
    parser.add_argument(
        "--wsinfer-venv",
        type=Path,
        help="(b) also side by side with WSInfer 0.6.1 from this venv "
        "(benchmarks/setup_wsinfer_venv.sh), on the same slide and model folder",
    )
    parser.add_argument("--note", default="", help="conditions of the run, kept in the JSON")
    parser.add_argument("--out", type=Path, help="write the JSON here (also printed)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.before_tree and "before" not in modes:
        modes.append("before")
    if "before" in modes and not args.before_tree:
        parser.error("mode 'before' needs --before-tree")
    cells = QUICK_CELLS if args.quick else args.big_cells
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    report: dict = {
        "benchmark": "bench_answer",
        "conditions": args.note,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "device": args.device,
        "model": args.model,
        "modes": {
            "current": "this checkout",
            "old_split": f"{THREADS_ENV_VAR}=readers: torch gets the cores the reader threads leave",
            "exhaustive": "--exhaustive: every patch through the full model (no first pass)",
            "torch": "--backend torch: torch runs the network (the default, auto, runs the "
            "package's own models through ONNX Runtime on the CPU)",
            "before": str(args.before_tree) if args.before_tree else None,
        },
        "goals": GOALS,
        "workloads": {},
    }
    if args.export_pool:
        print(json.dumps(export_pool(args.data, args.export_pool)))
        return 0
    files = heldout(args)
    if args.only in (None, "nodes"):
        slides, build_s = node_slides(args, files)
        result = workload("nodes", slides, modes, args)
        result["size"] = f"{len(slides)} nodes of {args.node_cells} x {args.node_cells} cells" + (
            f" (patient {args.patient})" if not args.nodes else ""
        )
        result["build_seconds"] = round(build_s, 1)
        report["workloads"]["nodes"] = result
    if args.only in (None, "camelyon_size"):
        slides_dir = args.work / "slides" / (f"pool-{args.pool.stem}" if args.pool else "shared")
        path, truth, build_s = build_big_node(slides_dir, cells, files, args.seed)
        result = workload("camelyon_size", [path], modes, args)
        result["size"] = (
            f"{cells} x {cells} cells of 80 µm ({truth['tissue_mm2']} mm² of tissue) at "
            f"{BIG_MPP} µm/px, {truth['size_px'][0]} px square, JPEG 256-px tiles"
            + (" (--quick)" if args.quick else "")
        )
        result["truth"] = {k: truth[k] for k in ("category", "greatest_dimension_mm", "shape")}
        result["build_seconds"] = round(build_s, 1)
        if args.wsinfer_venv:
            result["wsinfer_side_by_side"] = wsinfer_side_by_side(path, args)
        report["workloads"]["camelyon_size"] = result
    report["goals_met"] = goals_met(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_1min"] = {
        "before": round(load_before, 2),
        "after": round(os.getloadavg()[0], 2),
    }
    text = json.dumps(report, indent=1, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


def goals_met(report: dict) -> dict:
    met = {}
    work = report["workloads"]
    big = work.get("camelyon_size")
    if big and "(--quick)" not in big["size"]:
        seconds = big["median_seconds_to_stages_csv"].get("current")
        met["camelyon_size <= 60 s to stages.csv"] = (
            seconds is not None and seconds <= GOALS["camelyon_size_seconds_to_stages"]
        )
    rss = max((w["peak_rss_mb_max"] or 0 for w in work.values()), default=None)
    if rss is not None:
        met["peak RSS < 2 GB"] = rss < GOALS["peak_rss_mb"]
    peer = (big or {}).get("wsinfer_side_by_side", {})
    if peer.get("ran") and peer["runs"] and "speedup" in peer["runs"][0]:
        met[">= 3x WSInfer (patches/s, whole processes)"] = peer["runs"][0]["speedup"] >= 3.0
    nodes = work.get("nodes", {})
    if "before" in nodes.get("speedup_over", {}):
        met["nodes >= 4x faster than before"] = (
            nodes["speedup_over"]["before"] >= GOALS["nodes_speedup_over_before"]
        )
    return met


if __name__ == "__main__":
    sys.exit(main())
