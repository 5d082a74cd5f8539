"""Run one writer of output sets and signal it at a chosen step of a commit (for bench_faults.py).

Random kill moments rarely land in a commit, which takes milliseconds; this harness counts the
commit's steps as they happen (each flush, the journal, each rename into place, the manifest, the
journal's removal, the clean-up) and sends itself ``--signal`` at step ``--kill-at``, so every step
of the commit is hit. SIGINT arrives as Ctrl-C does (a KeyboardInterrupt where the code is);
SIGTERM and SIGKILL end the process there. ``--kill-at 0`` counts only (printed as ``steps N`` on
stderr). What it writes:

* ``synthetic OUT GEN STEM...``: one set per stem, every file (and each chunk of a folder store)
  holding the generation ``GEN``, then ``stages.csv`` made from their summaries, as ``predict``
  writes it: mixing two generations shows in the files' contents, whatever the manifests say.
* ``predict ARG...``: ``napari-metastasis predict ARG...`` itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from napari_metastasis.outputs import output_set  # noqa: E402


class Steps:
    """Counts commit steps; at step ``kill_at`` the process signals itself."""

    def __init__(self, kill_at: int, sig: int):
        self.kill_at, self.sig, self.count = kill_at, sig, 0

    def __call__(self) -> None:
        self.count += 1
        if self.count == self.kill_at:
            os.kill(os.getpid(), self.sig)
            time.sleep(2)  # SIGINT's KeyboardInterrupt is raised here; the others never return


class _Module:
    """A module with some functions replaced (output_set's ``os`` and ``shutil``)."""

    def __init__(self, module, **replaced):
        self._module = module
        self.__dict__.update(replaced)

    def __getattr__(self, name):
        return getattr(self._module, name)


def install(steps: Steps) -> None:
    """Count each step of a commit (and of recovery) in output_set: before each call, and after
    each rename, so the moments between two renames are hit too."""

    def counted(function, after: bool = False):
        def wrapper(*args, **kwargs):
            steps()
            result = function(*args, **kwargs)
            if after:
                steps()
            return result

        return wrapper

    output_set.os = _Module(os, replace=counted(os.replace, after=True))  # type: ignore[assignment]
    output_set.shutil = _Module(shutil, rmtree=counted(shutil.rmtree))  # type: ignore[assignment]
    output_set.fsync_path = counted(output_set.fsync_path)  # type: ignore[assignment]
    output_set.write_text_atomic = counted(output_set.write_text_atomic)  # type: ignore[assignment]
    output_set._drop_journal = counted(output_set._drop_journal)  # type: ignore[assignment]


def write_synthetic(out: Path, gen: int, stems: list[str]) -> None:
    from napari_metastasis.clinical.staging import PatientStage
    from napari_metastasis.clinical.summary import write_stages

    for stem in stems:
        with output_set.OutputSet(out, stem, info={"generation": gen}) as outputs:
            outputs.path(f"{stem}.csv").write_text(f"generation\n{gen}\n")
            outputs.path(f"{stem}.summary.json").write_text(json.dumps({"generation": gen}))
            outputs.path(f"{stem}.heatmap.png").write_text(f"{gen}")
            outputs.path(f"camelyon16/{stem}.csv").write_text(f"{gen}\n")
            store = outputs.path(f"{stem}.prob.zarr")
            store.mkdir()
            (store / ".zgroup").write_text("{}")
            # a chunk whose name changes with the generation: an old one left in a new store shows
            (store / f"chunk.{gen % 3}").write_text(f"{gen}")
    slides = [(f"{stem}.tif", "negative") for stem in stems]
    write_stages(
        out,
        [PatientStage.from_slides(f"patient{gen}", slides)],
        [f"{stem}.summary.json" for stem in stems],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--signal", default="SIGKILL", choices=["SIGINT", "SIGTERM", "SIGKILL"])
    parser.add_argument("mode", choices=["synthetic", "predict"])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    # Ctrl-C as in a terminal, even when started as a background job (which ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    steps = Steps(args.kill_at, getattr(signal, args.signal))
    install(steps)
    code = 0
    try:
        if args.mode == "synthetic":
            write_synthetic(Path(args.args[0]), int(args.args[1]), args.args[2:])
        else:
            from napari_metastasis.cli import main as cli

            code = cli(["predict", *args.args])
    except KeyboardInterrupt:
        code = 130
    finally:
        print(f"steps {steps.count}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
