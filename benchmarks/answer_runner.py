"""``napari-metastasis`` run in this process with a timeline kept beside it (for bench_answer).

The command runs unchanged (``napari_metastasis.cli.main`` with the arguments given); this shim
only notes when things happen, into the JSON file named by ``ANSWER_TIMELINE``:

* every call of the engine's ``run_inference`` (the classification of one slide): when it was
  called, when its first batch and its last came back, how many patches, and what the thread
  tuner found, if the code under test has one;
* every line the command writes to stdout or stderr, with its time (a slide's summary line
  when its files are written, ``pN stages ... -> stages.csv``, the model's line when it is
  loaded);
* the process's peak resident memory at the end (:func:`peak_rss_mb`).

Times are seconds from this shim's start (``time.perf_counter``); the caller measures the whole
process from outside and gives the interpreter's start-up as the difference.

    ANSWER_TIMELINE=t.json python benchmarks/answer_runner.py predict SLIDE --out OUT
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

T0 = time.perf_counter()


def now() -> float:
    return round(time.perf_counter() - T0, 4)


class Lines:
    """A text stream that passes everything through and notes each finished line's time."""

    def __init__(self, stream, name: str, lines: list):
        self._stream, self._name, self._lines, self._part = stream, name, lines, ""

    def write(self, text: str) -> int:
        self._part += text
        while "\n" in self._part:
            line, self._part = self._part.split("\n", 1)
            line = line.rsplit("\r", 1)[-1]  # a progress bar's last state
            if line.strip():
                self._lines.append([now(), self._name, line[:300]])
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def peak_rss_mb() -> float:
    """This process's peak resident memory: Linux's VmHWM (the peak of this program's own memory
    since its exec), else getrusage's ru_maxrss (which on Linux also keeps the peak of the
    process it was forked from, before the exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    per_kib = 1024 if sys.platform == "darwin" else 1  # macOS counts bytes, Linux KiB
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / per_kib / 1024, 1)


def main() -> int:
    timeline: dict = {"started": 0.0, "runs": [], "lines": []}
    sys.stdout = Lines(sys.stdout, "stdout", timeline["lines"])
    sys.stderr = Lines(sys.stderr, "stderr", timeline["lines"])

    import importlib

    import napari_metastasis

    # the code under test may be an older checkout (--before-tree), from before the pipeline/
    # layout: its inference module was napari_metastasis.engine.inference
    package = Path(napari_metastasis.__file__).parent
    layout = "pipeline" if (package / "pipeline").is_dir() else "engine"
    inference = importlib.import_module(f"napari_metastasis.{layout}.inference")

    original = inference.run_inference

    def timed(slide, model, cells, grid, *args, **kwargs):
        first_pass = bool(kwargs.get("first_pass", False))
        last = timeline["runs"][-1] if timeline["runs"] else None
        if last and last["slide"] == slide.path.name and last["first_pass"] and not first_pass:
            record = last  # the full model checking what the slide's first pass left
        else:
            record = {"slide": slide.path.name, "called": now(), "patches": len(cells)}
            record.update(first_pass=first_pass, passes=[])
            timeline["runs"].append(record)
        started = now()
        for batch in original(slide, model, cells, grid, *args, **kwargs):
            record.setdefault("first_batch", now())
            record["last_batch"] = now()
            yield batch
        record["ended"] = now()
        record["passes"].append(
            {
                "pass": "first" if first_pass else "full model",
                "patches": len(cells),
                "seconds": round(record["ended"] - started, 2),
            }
        )
        tuners = getattr(inference, "_FIRST_PASS_TUNERS" if first_pass else "_TUNERS", {})
        tuner = tuners.get(model)
        if tuner is not None:
            record["tuner" if not first_pass else "first_pass_tuner"] = tuner.summary()

    inference.run_inference = timed
    for name, module in list(sys.modules.items()):  # modules that imported it by name
        if (
            name.startswith("napari_metastasis")
            and getattr(module, "run_inference", None) is original
        ):
            module.run_inference = timed

    from napari_metastasis.cli import main as cli_main

    code = 1
    try:
        code = cli_main(sys.argv[1:])
    finally:
        timeline["exited"] = now()
        timeline["exit_code"] = code
        timeline["peak_rss_mb"] = peak_rss_mb()
        path = os.environ.get("ANSWER_TIMELINE")
        if path:
            with open(path, "w") as f:
                json.dump(timeline, f, indent=1)
    return code


if __name__ == "__main__":
    sys.exit(main())
