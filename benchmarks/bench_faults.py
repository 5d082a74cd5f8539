"""Fault benchmark: broken slides, Ctrl-C and SIGKILL at random moments, a full disk, a huge slide.

What it measures (``resources/bench_faults.json``):

* **Interrupted runs.** ``predict`` over N small slides (a share of them broken: truncated, garbage,
  empty) into one output folder, interrupted K times by SIGINT (Ctrl-C) or SIGKILL at a random
  moment. After each interruption every good slide's outputs are counted: *complete* (a manifest
  that matches every file), *missing* (nothing yet), *incomplete* (files without a manifest: an
  interrupted set the next run finishes or replaces) and *half-written* (a final-named file that is
  not whole, or a manifest that does not match its files). Goal: 0 half-written, ever.
* **Rerun.** One uninterrupted run afterwards: every good slide complete, broken slides reported in
  one line each, no hidden set folder or ``.part`` file left.
* **Full disk.** A small tmpfs (when run as root; otherwise skipped with the reason): a disk with too
  little space is refused before any slide is classified; a disk that fills up during the run fails
  the slides that do not fit with "no space is left on the disk", keeps the finished sets complete,
  and a rerun after freeing space completes the rest.
* **Memory ceiling** of ``predict`` on a 100 000 x 80 000 px synthetic pyramidal slide, and of the
  refusal of a slide that claims 10⁶ x 10⁶ px (peak resident memory of the process).

Runs in a few minutes on 2 cores (``--kills`` and ``--slides`` scale it).

    python benchmarks/bench_faults.py --out resources/bench_faults.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' synthetic slide and model writers

from engine_helpers import write_darkness_model, write_pyramid_tiff  # noqa: E402
from synthetic_slides import halving_sizes, write_claimed_tiff, write_tiled_tiff  # noqa: E402

from napari_metastasis.atomic import write_text_atomic  # noqa: E402
from napari_metastasis.output_set import verify_set  # noqa: E402
from napari_metastasis.predict_files import unique_stems  # noqa: E402

#: The tmpfs for the full-disk scenario.
DISK_MB = 48
SET_SUFFIXES = (".csv", ".geojson", ".heatmap.png", ".prob.tiff", ".summary.json")  # files


# --- inputs ---------------------------------------------------------------------------------------
def make_slides(folder: Path, n: int, broken_share: float, seed: int) -> tuple[list, list]:
    """``n`` slides of 1536 px at 1 µm/px with noisy dark blobs; a share of them broken."""
    rng = np.random.default_rng(seed)
    n_broken = round(n * broken_share)
    good, broken = [], []
    for i in range(n - n_broken):
        image = rng.integers(180, 256, (1536, 1536, 3), dtype=np.uint8)  # noisy: real-sized PNGs
        for _ in range(6):
            y, x = rng.integers(0, 1300, 2)
            image[y : y + 200, x : x + 200] //= 4
        good.append(write_pyramid_tiff(folder / f"good_{i:02d}.tiff", image, 1.0, levels=3))
    kinds = ("truncated", "garbage", "empty")
    for i in range(n_broken):
        kind = kinds[i % len(kinds)]
        path = folder / f"broken_{i:02d}_{kind}.tiff"
        if kind == "truncated":
            path.write_bytes(good[i % len(good)].read_bytes()[:3000])
        elif kind == "garbage":
            path.write_bytes(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes())
        else:
            path.write_bytes(b"")
        broken.append(path)
    return good, broken


def predict_command(slides, out: Path, model: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "napari_metastasis.cli",
        "predict",
        *map(str, slides),
        "--out",
        str(out),
        "--model",
        str(model),
        "--device",
        "cpu",
        "--tissue-min-fraction",
        "0",
    ]


# --- counting outputs -----------------------------------------------------------------------------
def file_is_whole(path: Path) -> bool:
    """Whether a final-named output parses as a whole file of its kind."""
    try:
        name = path.name
        if name.endswith(".csv"):
            lines = path.read_text(encoding="utf-8").splitlines()
            return (
                bool(lines)
                and lines[0].startswith("minx,")
                and all(line.count(",") == lines[0].count(",") for line in lines)
            )
        if name.endswith(".json") or name.endswith(".geojson"):
            json.loads(path.read_text(encoding="utf-8"))
            return True
        if name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as image:
                image.load()
            return True
        if name.endswith(".tiff"):
            import tifffile

            tifffile.imread(path)
            return True
    except Exception:
        return False
    return True


def census(out: Path, stems: list[str]) -> dict:
    counts = {"complete": 0, "missing": 0, "incomplete": 0, "half_written": 0}
    half = []
    for stem in stems:
        state = verify_set(out, stem).state if out.is_dir() else "missing"
        files = [out / f"{stem}{suffix}" for suffix in SET_SUFFIXES]
        broken_files = [f.name for f in files if f.exists() and not file_is_whole(f)]
        if state == "corrupt" or broken_files:
            counts["half_written"] += 1
            half.append({"stem": stem, "state": state, "not_whole": broken_files})
        else:
            counts[state] += 1
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")] if out.is_dir() else []
    # A failed or interrupted slide keeps its running map to resume from (.<stem>.resume.zarr):
    # kept on purpose, counted apart; anything else hidden is a leftover.
    counts["resume_maps"] = sum(name.endswith(".resume.zarr") for name in hidden)
    counts["hidden_leftovers"] = sum(not name.endswith(".resume.zarr") for name in hidden)
    if half:
        counts["half_written_detail"] = half
    return counts


# --- scenarios ------------------------------------------------------------------------------------
class Run:
    """A ``predict`` subprocess whose stderr is read by a thread (to see when the model is loaded)."""

    def __init__(self, command, env):
        self.lines: list[str] = []
        self.loaded = threading.Event()
        self.proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("model "):
                self.loaded.set()
        self.loaded.set()

    def finish(self, timeout: float = 300) -> str:
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return "".join(self.lines)


def time_one_run(slides, model, out: Path, env) -> float:
    """Seconds from 'model loaded' to the end of an uninterrupted run (for the kill moments)."""
    run = Run(predict_command(slides, out, model), env)
    run.loaded.wait(timeout=300)
    started = time.perf_counter()
    run.finish()
    shutil.rmtree(out, ignore_errors=True)
    return time.perf_counter() - started


def interrupted_runs(good, broken, model, out, env, kills: int, rng: random.Random) -> list[dict]:
    stems = unique_stems(good)
    span = time_one_run(good + broken, model, out, env)
    results = []
    for k in range(kills):
        sig = signal.SIGINT if k % 2 == 0 else signal.SIGKILL
        run = Run(predict_command(good + broken, out, model), env)
        run.loaded.wait(timeout=300)  # the model is loaded: slides are being classified/written
        delay = rng.uniform(0.0, span)
        try:
            run.proc.wait(timeout=delay)
            finished = True
        except subprocess.TimeoutExpired:
            finished = False
            sent = time.perf_counter()
            run.proc.send_signal(sig)
        err = run.finish()
        result = {
            "signal": sig.name,
            "after_model_loaded_s": round(delay, 2),
            "of_a_run_of_s": round(span, 2),
            "finished_before_signal": finished,
            "exit_code": run.proc.returncode,
            **census(out, stems),
        }
        if not finished:
            result["exit_after_signal_s"] = round(time.perf_counter() - sent, 2)
        result["traceback"] = "Traceback" in err
        results.append(result)
        print(f"interruption {k + 1}/{kills}: {result}", file=sys.stderr)
    return results


def rerun(good, broken, model, out, env) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        predict_command(good + broken, out, model), env=env, capture_output=True, text=True
    )
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "exit_code": proc.returncode,
        **census(out, unique_stems(good)),
        "broken_reported": sum(any(p.name in line for line in errors) for p in broken),
        "broken_with_outputs": sum(bool(list(out.glob(f"{p.stem}.*"))) for p in broken),
        "traceback": "Traceback" in proc.stderr,
        "error_lines": errors[:6],
    }


def full_disk(good, model, work: Path, env) -> dict:
    if os.geteuid() != 0:
        return {"skipped": "needs root to mount a small tmpfs (run as root, or in a container)"}
    mount = work / "disk"
    mount.mkdir()
    result: dict = {}
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        return {"skipped": f"cannot mount a tmpfs here ({exc})"}
    try:
        # 1. Too little space: refused before any slide is classified.
        ballast = mount / "ballast"
        ballast.write_bytes(b"\0" * ((DISK_MB - 8) * 2**20))  # 8 MB left
        started = time.perf_counter()
        little = mount / "little"
        proc = subprocess.run(
            predict_command(good, little, model), env=env, capture_output=True, text=True
        )
        result["little_space"] = {
            "exit_code": proc.returncode,
            "seconds_to_refusal": round(time.perf_counter() - started, 1),
            "message": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "",
            "outputs": len(list(little.glob("*"))) if little.exists() else 0,
        }
        shutil.rmtree(little, ignore_errors=True)
        # 2. The disk fills up during the run: each good slide three times (stems a, a_2, a_3),
        # about 2 MB of outputs each, with about 17 MB left (so the first check passes).
        ballast.write_bytes(b"\0" * ((DISK_MB - 17) * 2**20))
        slides = good * 3
        proc = subprocess.run(
            predict_command(slides, mount / "out", model), env=env, capture_output=True, text=True
        )
        stems = unique_stems(slides)
        errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
        result["fills_up"] = {
            "exit_code": proc.returncode,
            **census(mount / "out", stems),
            "no_space_messages": sum("no space is left on the disk" in line for line in errors),
            "message_example": errors[0] if errors else "",
            "traceback": "Traceback" in proc.stderr,
        }
        # 3. Space freed: a rerun completes every slide.
        ballast.unlink()
        result["after_freeing_space"] = rerun(slides, [], model, mount / "out", env)
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
    return result


def peak_memory(command: list[str], env) -> dict:
    """Run ``command`` (a napari-metastasis CLI call) and report its peak resident memory."""
    code = (
        "import sys\n"
        "from napari_metastasis.cli import main\n"
        f"c = main({command!r})\n"
        # VmHWM belongs to this address space; ru_maxrss would inherit the parent's peak.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print('maxrss_kb', hwm, file=sys.stderr)\n"
        "sys.exit(c)\n"
    )
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    rss = next(
        (int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("maxrss_kb")),
        0,
    )
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("maxrss_kb")]
    return {
        "exit_code": proc.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(rss / 1024),
        "last_line": lines[-1] if lines else "",
        "stdout": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "",
    }


def memory_ceilings(work: Path, env) -> dict:
    big = work / "big_100k.tiff"
    started = time.perf_counter()
    write_tiled_tiff(big, halving_sizes(100_000, 80_000, smallest=1024), mpp=0.5)
    written = time.perf_counter() - started
    # A 32 px model at 16 µm/px: 512 µm patches, about 7,600 of them on this slide.
    model = write_darkness_model(work / "coarse_model", patch_size=32, spacing=16.0)
    result = {
        "slide": "100000 x 80000 px, 0.5 µm/px, pyramidal (constant tissue colour)",
        "slide_written_s": round(written, 1),
        "slide_file_mb": round(big.stat().st_size / 2**20, 1),
        "predict": peak_memory(
            [
                "predict",
                str(big),
                "--out",
                str(work / "big_out"),
                "--model",
                str(model),
                "--device",
                "cpu",
            ],
            env,
        ),
    }
    claimed = write_claimed_tiff(work / "claims_1e6.tiff", 10**6, 10**6)
    result["claimed_1e6"] = {
        "slide": "claims 1000000 x 1000000 px in one level (a 0.5 MB file)",
        "predict": peak_memory(
            [
                "predict",
                str(claimed),
                "--out",
                str(work / "claimed_out"),
                "--model",
                str(model),
                "--device",
                "cpu",
            ],
            env,
        ),
        "info_thumbnail": peak_memory(
            ["info", str(claimed), "--thumbnail", str(work / "claimed.png")], env
        ),
    }
    return result


# --- main -----------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "bench_faults.json")
    parser.add_argument("--slides", type=int, default=10)
    parser.add_argument("--broken-share", type=float, default=0.3)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the 100k px slide")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        work = Path(tmp)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "NAPARI_METASTASIS_CONFIG_DIR": str(work / "config"),
            "OMP_NUM_THREADS": "1",
        }
        os.environ["NAPARI_METASTASIS_CONFIG_DIR"] = env["NAPARI_METASTASIS_CONFIG_DIR"]
        (work / "slides").mkdir()
        good, broken = make_slides(work / "slides", args.slides, args.broken_share, args.seed)
        model = write_darkness_model(work / "model", patch_size=32, spacing=4.0)  # trusted
        out = work / "out"
        interruptions = interrupted_runs(good, broken, model, out, env, args.kills, rng)
        final = rerun(good, broken, model, out, env)
        disk = full_disk(good, model, work, env)
        memory = {} if args.no_memory else memory_ceilings(work, env)
    half_written = sum(r["half_written"] for r in interruptions) + final["half_written"]
    if "fills_up" in disk:
        half_written += disk["fills_up"]["half_written"]
    report = {
        "benchmark": "bench_faults",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "root": os.geteuid() == 0,
        },
        "parameters": {
            "slides": args.slides,
            "good": len(good),
            "broken": [p.name for p in broken],
            "kills": args.kills,
            "seed": args.seed,
        },
        "goals": {
            "half_written_total": half_written,
            "half_written_goal": 0,
            "good_complete_after_rerun": final["complete"],
            "good_slides": len(good),
            "leftovers_after_rerun": final["hidden_leftovers"],
            "met": half_written == 0
            and final["complete"] == len(good)
            and final["hidden_leftovers"] == 0,
        },
        "interruptions": interruptions,
        "rerun": final,
        "full_disk": disk,
        "memory": memory,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["goals"], indent=2))
    return 0 if report["goals"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
