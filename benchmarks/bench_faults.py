"""Fault benchmark: kills at every step of a commit, Ctrl-C/SIGTERM/SIGKILL at random moments,
broken slides, a full disk, a huge slide.

What it measures (``resources/bench_faults.json``):

* **Kills at every step of the commit** (``commit_kills``). ``benchmarks/fault_harness.py`` runs a
  writer of output sets and signals it (SIGINT, SIGTERM, SIGKILL in turn) at a chosen step of a
  commit: a flush, the journal, the removal of the old manifest, each rename into place (before and
  after), the new manifest, the journal's removal, the clean-up, and the same steps of the next
  run's recovery. Two writers: *synthetic* sets whose every file (and every chunk of a folder
  store) holds its generation, so a mix shows in the contents whatever the manifests say, plus
  ``stages.csv`` made from their summaries; and ``predict`` itself on real slides. After each kill
  the folder is read as a reader finds it (a set whose manifest checks out but whose files are
  mixed: *trusted_mixed*, goal 0), then copied and recovered as the next run, ``report``,
  ``evaluate`` or the viewer's Load do first, and each set counted: *complete_old*,
  *complete_new*, *mixed* (anything else: incomplete, corrupt, lost; goal 0); ``stages.csv`` also
  *stale_refused* (whole, but made from summaries that changed since: readers refuse it); and
  *hidden_left* (hidden folders or files other than the map kept for ``--resume``; goal 0).

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

Runs in a few minutes on 2 cores (``--kills``, ``--commit-kills``, ``--synthetic-kills`` and
``--slides`` scale it); ``--quick`` is the CI check (``tests/test_bench_faults.py``): a few commit
kills of each writer, nothing else, in well under a minute.

    python benchmarks/bench_faults.py --out resources/bench_faults.json
    python benchmarks/bench_faults.py --quick --out /tmp/bench_faults_quick.json
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

from napari_metastasis.outputs.atomic import write_text_atomic  # noqa: E402
from napari_metastasis.outputs.output_set import recover, verify_set  # noqa: E402
from napari_metastasis.pipeline.slide_outputs import unique_stems  # noqa: E402

#: The tmpfs for the full-disk scenario.
DISK_MB = 48
SET_SUFFIXES = (".csv", ".geojson", ".heatmap.png", ".prob.tiff", ".summary.json")  # files
HARNESS = ROOT / "benchmarks" / "fault_harness.py"
SIGNALS = ("SIGINT", "SIGTERM", "SIGKILL")
#: The files of a synthetic set (fault_harness.write_synthetic), each holding its generation.
SYNTHETIC_FILES = (
    "{}.csv",
    "{}.summary.json",
    "{}.heatmap.png",
    "camelyon16/{}.csv",
    "{}.prob.zarr",
)


# --- inputs ---------------------------------------------------------------------------------------
def make_slides(
    folder: Path, n: int, broken_share: float, seed: int, size: int = 1536
) -> tuple[list, list]:
    """``n`` slides of ``size`` px at 1 µm/px with noisy dark blobs; a share of them broken."""
    rng = np.random.default_rng(seed)
    n_broken = round(n * broken_share)
    good, broken = [], []
    for i in range(n - n_broken):
        image = rng.integers(180, 256, (size, size, 3), dtype=np.uint8)  # noisy: real-sized PNGs
        for _ in range(6):
            y, x = rng.integers(0, size - 236, 2)
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
        *predict_args(slides, out, model),
    ]


def predict_args(slides, out: Path, model: Path) -> list[str]:
    return [
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
        "--case",
        "P",
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
        if name.endswith((".json", ".geojson")):
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
    except Exception:  # noqa: BLE001 - any failure to read it back is the finding
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


def hidden_entries(out: Path) -> list[str]:
    """Hidden things in ``out`` and its plain subfolders, except the maps kept for --resume."""
    if not out.is_dir():
        return []
    places = [out, *(p for p in out.iterdir() if p.is_dir() and p.suffix != ".zarr")]
    return sorted(
        str(entry.relative_to(out))
        for place in places
        if not place.name.startswith(".")
        for entry in place.iterdir()
        if entry.name.startswith(".") and not entry.name.endswith(".resume.zarr")
    )


def recovered_copy(out: Path, copy: Path) -> Path:
    """``out`` as the next run (or a reader) sees it after recovery, leaving ``out`` as it is."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(out, copy, symlinks=True)
    recover(copy)
    return copy


def _generations(path: Path) -> set[int]:
    """The generations written into a synthetic output (a file, or every file of a store)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    found = set()
    for file in files:
        if file.name == ".zgroup":
            continue
        text = file.read_text()
        found.add(
            int(json.loads(text)["generation"]) if text.startswith("{") else int(text.split()[-1])
        )
    return found


def synthetic_census(out: Path, stems: list[str], old: dict[str, int], new: int) -> dict:
    """Each synthetic set: complete_old / complete_new / mixed, from the files' contents *and* the
    manifest (complete by its manifest, and one generation in every file); ``stages.csv``: the
    same, or stale_refused; plus what a reader trusting the manifests would get wrong."""
    counts = {"complete_old": 0, "complete_new": 0, "mixed": 0}
    generation = {}
    for stem in stems:
        paths = [out / name.format(stem) for name in SYNTHETIC_FILES]
        gens = set().union(*(_generations(p) for p in paths if p.exists()))
        whole = all(p.exists() for p in paths) and len(gens) == 1
        complete = verify_set(out, stem).state == "complete"
        gen = next(iter(gens)) if whole else None
        if complete and whole and gen in (old[stem], new):
            counts["complete_old" if gen == old[stem] else "complete_new"] += 1
            generation[stem] = gen
        else:
            counts["mixed"] += 1
    stages = {"complete_old": 0, "complete_new": 0, "stale_refused": 0, "mixed": 0}
    state = verify_set(out, "stages").state
    if state == "complete":
        text = (out / "stages.csv").read_text()
        gen = int(text.splitlines()[1].split(".zip")[0].removeprefix("patient"))
        if all(generation.get(stem) == gen for stem in stems):  # made from the slides there
            stages["complete_new" if gen == new else "complete_old"] += 1
        else:
            stages["mixed"] += 1
    elif state == "stale":
        stages["stale_refused"] += 1
    else:
        stages["mixed"] += 1
    return {"sets": counts, "stages": stages, "generation": generation}


def trusted_mixed(out: Path, stems: list[str]) -> int:
    """Synthetic sets whose manifest checks out as it is, yet whose files are not one generation:
    what a reader that trusts the manifest would get wrong (goal 0)."""
    count = 0
    for stem in stems:
        if verify_set(out, stem).state != "complete":
            continue
        paths = [out / name.format(stem) for name in SYNTHETIC_FILES]
        gens = set().union(*(_generations(p) for p in paths if p.exists()))
        count += len(gens) != 1 or not all(p.exists() for p in paths)
    return count


def harness(mode: str, args: list[str], env, kill_at: int = 0, sig: str = "SIGKILL") -> tuple:
    """Run fault_harness.py; returns (exit code, steps counted, stderr)."""
    proc = subprocess.run(
        [sys.executable, str(HARNESS), "--kill-at", str(kill_at), "--signal", sig, mode, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    steps = next(
        (int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("steps ")),
        None,
    )
    return proc.returncode, steps, proc.stderr


def kill_plan(kills: int, steps: int, rng: random.Random, every_step: bool) -> list[tuple]:
    """(step, signal) pairs: every step in turn (signals rotating), or ``kills`` random steps."""
    if every_step:
        return [(1 + k % steps, SIGNALS[k % len(SIGNALS)]) for k in range(kills)]
    return [(rng.randint(1, steps), SIGNALS[k % len(SIGNALS)]) for k in range(kills)]


def synthetic_commit_kills(work: Path, env, kills: int, stems: int, rng, every_step: bool) -> dict:
    """Kill a writer of synthetic sets at steps of its commits; count the sets after each kill."""
    out, copy = work / "synthetic", work / "synthetic_copy"
    names = [f"s{i}" for i in range(stems)]
    code, steps, err = harness("synthetic", [str(out), "1", *names], env)
    assert code == 0 and steps, err
    kills = kills or steps  # default: every step once, the signals taking turns
    old = dict.fromkeys(names, 1)
    rounds, totals = [], _zero_totals()
    for k, (step, sig) in enumerate(kill_plan(kills, steps, rng, every_step)):
        gen = k + 2
        code, counted, _ = harness("synthetic", [str(out), str(gen), *names], env, step, sig)
        killed = code != 0 and (counted is None or counted >= step)
        raw = trusted_mixed(out, names)
        census = synthetic_census(recovered_copy(out, copy), names, old, gen)
        hidden = hidden_entries(copy)
        old.update(census["generation"])  # what the next run starts from
        rounds.append(
            {
                "step": step,
                "signal": sig,
                "killed": killed,
                "exit_code": code,
                "trusted_mixed": raw,
                **census["sets"],
                "stages": census["stages"],
                "hidden_left": len(hidden),
                **({"hidden": hidden} if hidden else {}),
            }
        )
        _add(totals, killed, raw, census["sets"], census["stages"], len(hidden))
    code, _, err = harness("synthetic", [str(out), str(kills + 2), *names], env)  # one more run
    final = synthetic_census(out, names, old, kills + 2)
    return {
        "writer": "synthetic sets (fault_harness.py)",
        "stems": stems,
        "steps_per_run": steps,
        "every_step": every_step,
        **totals,
        "after_a_clean_run": {
            "exit_code": code,
            **final["sets"],
            "stages": final["stages"],
            "hidden_left": len(hidden_entries(out)),
        },
        "rounds": rounds,
    }


def _zero_totals() -> dict:
    return {
        "runs": 0,
        "runs_killed": 0,
        "trusted_mixed": 0,
        "sets": {"complete_old": 0, "complete_new": 0, "mixed": 0},
        "stages": {"complete_old": 0, "complete_new": 0, "stale_refused": 0, "mixed": 0},
        "hidden_left": 0,
    }


def _add(totals: dict, killed: bool, raw: int, sets: dict, stages: dict, hidden: int) -> None:
    totals["runs"] += 1
    totals["runs_killed"] += killed
    totals["trusted_mixed"] += raw
    for key, value in sets.items():
        totals["sets"][key] += value
    for key, value in stages.items():
        totals["stages"][key] += value
    totals["hidden_left"] += hidden


def _manifest_files(out: Path, stem: str) -> dict | None:
    try:
        data = json.loads((out / f"{stem}.outputs.json").read_text())
    except (OSError, ValueError):
        return None
    return {f["name"]: f["sha256"] for f in data["files"]}


def predict_census(out: Path, stems: list[str], old: dict) -> dict:
    """Each slide's set (and stages.csv) after recovery: complete_old (its manifest is the one
    before the run), complete_new (another manifest, every file matching it), or mixed."""
    counts = {"complete_old": 0, "complete_new": 0, "mixed": 0}
    for stem in stems:
        if verify_set(out, stem).state != "complete":
            counts["mixed"] += 1
        else:
            counts[
                "complete_old" if _manifest_files(out, stem) == old.get(stem) else "complete_new"
            ] += 1
    stages = {"complete_old": 0, "complete_new": 0, "stale_refused": 0, "mixed": 0}
    state = verify_set(out, "stages").state
    if state == "complete":
        stages[
            "complete_old"
            if _manifest_files(out, "stages") == old.get("stages")
            else "complete_new"
        ] += 1
    elif state == "stale":
        stages["stale_refused"] += 1
    else:
        stages["mixed"] += 1
    return {"sets": counts, "stages": stages}


def predict_commit_kills(slides, model, work: Path, env, kills: int, rng, every_step: bool) -> dict:
    """Kill ``predict`` itself at steps of its commits (slides' sets, then stages.csv)."""
    out, copy = work / "predict_commit", work / "predict_copy"
    stems = unique_stems(slides)
    code, steps, err = harness("predict", predict_args(slides, out, model)[1:], env)
    assert code == 0 and steps, err[-2000:]
    rounds, totals = [], _zero_totals()
    for step, sig in kill_plan(kills, steps, rng, every_step):
        old = {stem: _manifest_files(out, stem) for stem in [*stems, "stages"]}
        code, counted, err = harness(
            "predict", predict_args(slides, out, model)[1:], env, step, sig
        )
        killed = code != 0 and (counted is None or counted >= step)
        census = predict_census(recovered_copy(out, copy), stems, old)
        hidden = hidden_entries(copy)
        rounds.append(
            {
                "step": step,
                "signal": sig,
                "killed": killed,
                "exit_code": code,
                **census["sets"],
                "stages": census["stages"],
                "hidden_left": len(hidden),
                **({"hidden": hidden} if hidden else {}),
                "traceback": "Traceback" in err,
            }
        )
        _add(totals, killed, 0, census["sets"], census["stages"], len(hidden))
    proc = subprocess.run(
        predict_command(slides, out, model), env=env, capture_output=True, text=True
    )
    final = predict_census(out, stems, {})
    return {
        "writer": "napari-metastasis predict (fault_harness.py)",
        "slides": len(slides),
        "steps_per_run": steps,
        "every_step": every_step,
        **totals,
        "after_a_clean_run": {
            "exit_code": proc.returncode,
            **final["sets"],
            "stages": final["stages"],
            "hidden_left": len(hidden_entries(out)),
        },
        "rounds": rounds,
    }


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
        sig = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)[k % 3]
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
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "bench_faults.json")
    parser.add_argument("--slides", type=int, default=10)
    parser.add_argument("--broken-share", type=float, default=0.3)
    parser.add_argument("--kills", type=int, default=6, help="random-moment kills of predict")
    parser.add_argument(
        "--commit-kills", type=int, default=18, help="kills of predict at steps of its commits"
    )
    parser.add_argument(
        "--synthetic-kills",
        type=int,
        default=0,
        help="kills of the synthetic writer (default: one per step of its run, every step)",
    )
    parser.add_argument("--synthetic-stems", type=int, default=2)
    parser.add_argument("--slide-px", type=int, default=1536, help="side of each good slide")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the 100k px slide")
    parser.add_argument("--no-disk", action="store_true", help="skip the full-disk scenario")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the CI check: commit kills only (9 synthetic, 2 of predict on 2 small slides)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.slides, args.broken_share, args.kills, args.slide_px = 2, 0.0, 0, 512
        args.commit_kills = min(args.commit_kills, 2)
        args.synthetic_kills = args.synthetic_kills or 9
        args.no_memory = args.no_disk = True
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
        good, broken = make_slides(
            work / "slides", args.slides, args.broken_share, args.seed, args.slide_px
        )
        model = write_darkness_model(work / "model", patch_size=32, spacing=4.0)  # trusted
        # 1. Kills at every step of the commit: the synthetic writer, then predict itself.
        synthetic = synthetic_commit_kills(
            work, env, args.synthetic_kills, args.synthetic_stems, rng, every_step=not args.quick
        )
        commit = predict_commit_kills(  # good slides only, so that the run writes stages.csv
            good, model, work, env, args.commit_kills, rng, every_step=False
        )
        # 2. Kills at random moments after the model loaded, and a rerun.
        out = work / "out"
        interruptions = (
            interrupted_runs(good, broken, model, out, env, args.kills, rng) if args.kills else []
        )
        final = rerun(good, broken, model, out, env) if args.kills else {}
        disk = {} if args.no_disk else full_disk(good, model, work, env)
        memory = {} if args.no_memory else memory_ceilings(work, env)
    half_written = sum(r["half_written"] for r in interruptions) + final.get("half_written", 0)
    if "fills_up" in disk:  # measured in this run
        half_written += disk["fills_up"]["half_written"]
    mixed = (
        synthetic["sets"]["mixed"]
        + synthetic["stages"]["mixed"]
        + synthetic["trusted_mixed"]
        + commit["sets"]["mixed"]
        + commit["stages"]["mixed"]
    )
    hidden_left = (
        synthetic["hidden_left"]
        + synthetic["after_a_clean_run"]["hidden_left"]
        + commit["hidden_left"]
        + commit["after_a_clean_run"]["hidden_left"]
        + final.get("hidden_leftovers", 0)
    )
    good_after = commit["after_a_clean_run"]["complete_new"]
    report = {
        "benchmark": "bench_faults",
        "quick": args.quick,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "root": os.geteuid() == 0,
        },
        "parameters": {
            "slides": args.slides,
            "slide_px": args.slide_px,
            "good": len(good),
            "broken": [p.name for p in broken],
            "kills": args.kills,
            "commit_kills": args.commit_kills,
            "synthetic_kills": synthetic["runs"],
            "synthetic_stems": args.synthetic_stems,
            "seed": args.seed,
        },
        "goals": {
            "runs_killed": synthetic["runs_killed"]
            + commit["runs_killed"]
            + sum(not r["finished_before_signal"] for r in interruptions),
            "sets_complete_old": synthetic["sets"]["complete_old"] + commit["sets"]["complete_old"],
            "sets_complete_new": synthetic["sets"]["complete_new"] + commit["sets"]["complete_new"],
            "sets_mixed": mixed,
            "sets_mixed_goal": 0,
            "stages_stale_refused": synthetic["stages"]["stale_refused"]
            + commit["stages"]["stale_refused"],
            "hidden_left": hidden_left,
            "hidden_left_goal": 0,
            "half_written_total": half_written,
            "half_written_goal": 0,
            "good_complete_after_rerun": good_after,
            "good_slides": len(good),
            "met": mixed == 0
            and hidden_left == 0
            and half_written == 0
            and good_after == len(good)
            and (not final or final["complete"] == len(good)),
        },
        "commit_kills": {"synthetic": synthetic, "predict": commit},
        "interruptions": interruptions,
        "rerun": final,
        "full_disk": disk or _earlier(args.out, "full_disk", "--no-disk"),
        "memory": memory or _earlier(args.out, "memory", "--no-memory"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["goals"], indent=2))
    return 0 if report["goals"]["met"] else 1


def _earlier(path: Path, key: str, option: str) -> dict:
    """With --no-memory / --no-disk: that part of the last run's report, said to be such."""
    try:
        earlier = json.loads(path.read_text())[key]
    except (OSError, ValueError, KeyError):
        return {"skipped": option}
    if not earlier or "skipped" in earlier:
        return {"skipped": option}
    earlier.pop("not_rerun", None)
    return {"not_rerun": f"{option}: the figures of an earlier run of this benchmark", **earlier}


if __name__ == "__main__":
    sys.exit(main())
