"""The viewer's speed against the command line's, and how long the viewer freezes during a run.

One process, one real napari viewer (run under Xvfb: ``xvfb-run -a python benchmarks/bench_gui.py``),
one slide (a 3 × 3 mosaic of the sample, ~7000 × 9000 px, so a run lasts seconds, not a blink),
one model loaded once (the bundled default, CPU unless --device says otherwise). Alternating:

* **predict**: :func:`napari_metastasis.engine.predict_slide`, what ``napari-metastasis predict``
  runs per slide (planning, classification; the tissue mask is computed once beforehand and
  given to both, as the widget keeps it between runs);
* **GUI**: the dock widget's Whole slide run, from the Run button to the finished overlay and
  contours, while a 5 ms timer on the GUI thread records the longest gap between its ticks (the
  longest time the viewer could not repaint or answer the mouse).

Both classify the same patches from scratch (the widget's map is forgotten between rounds); one
round of each is run first and not counted (file cache, threads, napari's first layers), then the
order alternates. The JSON states the baseline (predict's patches/s), the ratio GUI / predict
(goal ≥ 0.9) and the longest event-loop stall (goal < 0.2 s), each the median over the rounds,
the longest single call of the plugin's own GUI-thread code (the rest of a stall is napari
drawing the frame), the machine's load, and every round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_RATIO = 0.9
GOAL_STALL_S = 0.2
TICK_MS = 5


def mosaic_slide(folder: Path, tiles: int) -> Path:
    """A pyramidal tiled TIFF of the sample slide repeated tiles × tiles, at the sample's µm/px."""
    import tifffile

    from napari_metastasis._sample_data import SAMPLE_SLIDE
    from napari_metastasis.slide import Slide

    with Slide(SAMPLE_SLIDE) as slide:
        width, height = slide.dimensions
        base = slide.read_region(0, 0, 0, width, height)
        mpp = slide.mpp
    image = np.tile(base, (tiles, tiles, 1))
    path = folder / f"mosaic{tiles}x{tiles}.tiff"
    ppcm = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        level = image
        for index in range(4):
            tw.write(
                level,
                tile=(256, 256),
                photometric="rgb",
                compression="zlib",
                subfiletype=0 if index == 0 else 1,
                resolution=(ppcm * (0.5**index), ppcm * (0.5**index)),
                resolutionunit=3,
                metadata=None,
            )
            level = level[::2, ::2]
    return path


class SlotTimer:
    """The longest single call of the widget's own GUI-thread work during a run (its slots and
    redraws), to tell the plugin's share of a stall from napari's drawing of the frame."""

    SLOTS = (
        "_on_planned",
        "_on_progress",
        "_refresh_current_run",
        "_show_run_regions",
        "_on_run_finished",
        "update_contours",
        "_after_regions_shown",
    )

    def __init__(self, widget_class):
        """Wraps the methods of the class, before any widget connects them to signals."""
        import functools

        self.longest = 0.0
        self.where = ""
        for name in self.SLOTS:
            original = getattr(widget_class, name)

            def timed(*args, _original=original, _name=name, **kwargs):
                started = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    spent = time.perf_counter() - started
                    if spent > self.longest:
                        self.longest, self.where = spent, _name

            setattr(widget_class, name, functools.wraps(original)(timed))

    def reset(self):
        self.longest, self.where = 0.0, ""


class StallMeter:
    """A timer on the GUI thread: the longest gap between its ticks is the longest stall."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.last = 0.0
        self.longest = 0.0

    def start(self):
        self.last = time.perf_counter()
        self.longest = 0.0
        self.timer.start()

    def _tick(self):
        now = time.perf_counter()
        self.longest = max(self.longest, now - self.last)
        self.last = now

    def stop(self) -> float:
        self._tick()
        self.timer.stop()
        return self.longest


class StallSampler:
    """Where the GUI thread is while it stalls: a watchdog thread samples its stack every 20 ms
    once the stall meter has not ticked for 100 ms. The JSON gets the most sampled stacks, so a
    stall can be traced to the call that makes it (the plugin's or napari's)."""

    def __init__(self, meter: StallMeter, threshold_s: float = 0.1, every_s: float = 0.02):
        import collections
        import threading

        self.meter, self.threshold_s, self.every_s = meter, threshold_s, every_s
        self.samples: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-sampler", daemon=True)
        self._main = threading.main_thread().ident

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import traceback

        while not self._stop.wait(self.every_s):
            if not self.meter.timer.isActive():
                continue
            if time.perf_counter() - self.meter.last < self.threshold_s:
                continue
            frame = sys._current_frames().get(self._main)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            inner = [f for f in stack if "qtpy" not in f.filename][-8:]
            key = " <- ".join(
                f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} {f.name}"
                for f in reversed(inner)
            )
            self.samples[key] += 1

    def top(self, n: int = 5) -> list[dict]:
        ms = self.every_s * 1000
        return [{"sampled_ms": round(c * ms), "stack": k} for k, c in self.samples.most_common(n)]


def wait_until(app, condition, timeout_s=600.0):
    """Run the Qt event loop (as napari's own does: idle between events, no polling that would
    take the GIL from the worker threads) until ``condition()`` holds."""
    from qtpy.QtCore import QEventLoop, QTimer

    end = time.perf_counter() + timeout_s
    loop = QEventLoop()
    check = QTimer()
    check.setInterval(20)

    def poll():
        if condition() or time.perf_counter() > end:
            loop.quit()

    check.timeout.connect(poll)
    check.start()
    if not condition():
        loop.exec_()
    check.stop()
    if not condition():
        raise TimeoutError("the run did not finish")


def predict_round(slide_path: Path, model, batch_size: int, tissue) -> tuple[int, float]:
    from napari_metastasis.engine import predict_slide
    from napari_metastasis.slide import Slide

    with Slide(slide_path) as slide:
        started = time.perf_counter()
        result = predict_slide(slide, model, batch_size=batch_size, tissue=tissue)
        seconds = time.perf_counter() - started
    return result.n_done, seconds


def gui_round(app, viewer, widget, meter, slots=None) -> tuple[int, float, float]:
    from napari_metastasis.widgets.detection import WHOLE

    widget.store._maps.clear()  # classify everything again
    for view in list(widget.views):
        view.overlay.remove()
        view.regions_layer.remove()
    widget.views._views.clear()
    widget.set_mode(WHOLE)
    app.processEvents()
    done = {}
    widget.runner.finished.connect(lambda summary: done.setdefault("summary", summary))
    if slots is not None:
        slots.reset()
    meter.start()
    started = time.perf_counter()
    widget.run()
    wait_until(app, lambda: "summary" in done)
    seconds = time.perf_counter() - started
    settle = time.perf_counter() + 1.0  # the result layers are drawn after the run
    wait_until(app, lambda: time.perf_counter() > settle)
    stall = meter.stop()
    widget.runner.finished.disconnect()
    widget.runner.finished.connect(widget._on_run_finished)
    return done["summary"].done, seconds, stall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "bench_gui.json")
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiles", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    import napari
    import torch

    from napari_metastasis.widgets.detection import MetastasisWidget

    os.environ.setdefault("NAPARI_METASTASIS_ANALYSES", tempfile.mkdtemp())
    folder = Path(tempfile.mkdtemp())
    slide_path = mosaic_slide(folder, args.tiles)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 1000)
    app = napari.qt.get_qapp()
    slots = SlotTimer(MetastasisWidget)
    widget = MetastasisWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Metastasis detection")
    widget.remember = False
    viewer.open(str(slide_path), plugin="napari-metastasis")
    widget.source.select_model(args.model)
    widget.source.device.value = args.device
    widget.source.batch_size.value = args.batch_size
    model = widget.resources.model(widget.model_ref, args.device)  # loaded once, shared
    # the tissue mask once, for both (the widget keeps it between runs; predict gets it given)
    from napari_metastasis.engine import make_grid
    from napari_metastasis.slide import Slide

    with Slide(slide_path) as slide:
        tissue = widget.resources.tissue(slide, make_grid(slide, model))
    meter = StallMeter()
    sampler = StallSampler(meter)
    sampler.start()
    app.processEvents()
    # warm-up, not counted: the file cache, the reader threads, napari's first layers and shaders
    predict_round(slide_path, model, args.batch_size, tissue)
    gui_round(app, viewer, widget, meter, slots)

    rounds = []
    sampler.samples.clear()  # the warm-up's stalls (first layers, shaders) are not counted
    for index in range(args.rounds):
        if index % 2 == 0:  # alternate which goes first: a shared machine's load drifts
            n_predict, s_predict = predict_round(slide_path, model, args.batch_size, tissue)
            n_gui, s_gui, stall = gui_round(app, viewer, widget, meter, slots)
        else:
            n_gui, s_gui, stall = gui_round(app, viewer, widget, meter, slots)
            n_predict, s_predict = predict_round(slide_path, model, args.batch_size, tissue)
        rounds.append(
            {
                "predict_patches": n_predict,
                "predict_s": s_predict,
                "predict_patches_per_s": n_predict / s_predict,
                "gui_patches": n_gui,
                "gui_s": s_gui,
                "gui_patches_per_s": n_gui / s_gui,
                "ratio": (n_gui / s_gui) / (n_predict / s_predict),
                "longest_stall_s": stall,
                "longest_plugin_call_s": slots.longest,
                "longest_plugin_call": slots.where,
            }
        )
        print(json.dumps(rounds[-1]), flush=True)
    ratio = statistics.median(r["ratio"] for r in rounds)
    stall = statistics.median(r["longest_stall_s"] for r in rounds)
    report = {
        "benchmark": "bench_gui",
        "what": "Whole-slide run in the dock widget vs engine.predict_slide (what `predict` runs), "
        "same process, same loaded model, same slide; longest GUI event-loop stall during the "
        "widget's run (5 ms timer), until 1 s after it ended",
        "slide": f"sample slide tiled {args.tiles}x{args.tiles} ({slide_path.stat().st_size} B TIFF)",
        "model": model.name,
        "device": str(model.device),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "baseline_predict_patches_per_s": statistics.median(
            r["predict_patches_per_s"] for r in rounds
        ),
        "gui_patches_per_s": statistics.median(r["gui_patches_per_s"] for r in rounds),
        "ratio_gui_over_predict": ratio,
        "goal_ratio": GOAL_RATIO,
        "ratio_met": ratio >= GOAL_RATIO,
        "longest_stall_s": stall,
        "goal_stall_s": GOAL_STALL_S,
        "stall_met": stall < GOAL_STALL_S,
        "longest_plugin_call_s": statistics.median(r["longest_plugin_call_s"] for r in rounds),
        "load_average_1min_at_end": os.getloadavg()[0],
        "stalls_sampled": sampler.top(),
        "rounds": rounds,
    }
    sampler.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "rounds"}, indent=2))
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
