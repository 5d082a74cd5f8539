"""Whole-slide prediction to files, for one slide, a list of slides, or a dask.distributed cluster.

The ``predict`` command runs :func:`predict_to_files`, which classifies one slide through the
engine's one pipeline (:func:`~napari_metastasis.pipeline.run_slide`: a progress bar, and a store on
disk that a killed run resumes from), answers it through the one finish step
(:func:`~napari_metastasis.pipeline.answer_slide`: regions, deposit decision, summary) and writes its
outputs as one set (:mod:`napari_metastasis.outputs.output_set`: all or none, with a manifest
``<stem>.outputs.json``): the patch CSV, the regions as GeoJSON, the heatmap, the probability map,
the Camelyon16 detection CSV and the clinical summary (verdict and deposit sizes, see
:mod:`napari_metastasis.clinical.summary`). :func:`predict_many` runs it over many slides, either in this
process with one model or scaled out on dask.distributed (one task per slide, each worker loading the
model once), so a folder of slides can be spread over every GPU or CPU node of a cluster. A slide
that fails is reported and the others go on.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from napari_metastasis.annotations.exchange import (
    camelyon16_name,
    write_camelyon16_csv,
    write_tiles_geojson,
)
from napari_metastasis.annotations.geojson import write_geojson
from napari_metastasis.annotations.model import TUMOUR_CLASS, TUMOUR_CLASSES
from napari_metastasis.clinical.region_annotations import regions_to_annotations
from napari_metastasis.clinical.summary import write_summary
from napari_metastasis.errors import MetastasisError
from napari_metastasis.errors.extras import require_extra
from napari_metastasis.errors.policy import os_error_reason, user_message
from napari_metastasis.maps.heatmap import render_heatmap, save_heatmap
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.maps.store import ZARR_SUFFIX, ZarrMapWriter, save_zarr
from napari_metastasis.models import DEFAULT_MODEL, LoadedModel, load_model, resolve_threshold
from napari_metastasis.outputs.atomic import atomic_path
from napari_metastasis.outputs.output_set import OutputSet, check_writable, recover
from napari_metastasis.pipeline import (
    BOX_COLUMNS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_TISSUE_MIN_FRACTION,
    FirstPass,
    answer_slide,
    check_analysable,
    make_grid,
    patch_table,
    predict_slide,
)
from napari_metastasis.slides.grid import PatchGrid
from napari_metastasis.slides.slide import Slide

Warn = Callable[[str], None]
#: Sub-folder of ``--out`` holding Camelyon16's detection files (``<stem>.csv``, no other file), so
#: it can be handed to Camelyon16's Evaluation_FROC.py as its results folder as it is.
CAMELYON16_DIR = "camelyon16"
#: Suffix of the hidden map a running prediction grows batch by batch (``.<stem>.resume.zarr``).
RESUME_SUFFIX = ".resume.zarr"
#: Stems of the per-run sets (``stages.csv``, the patient reports): never a slide's.
RUN_SET_STEMS = ("stages", "reports")


@dataclass(frozen=True)
class PredictOptions:
    """Everything a prediction run needs besides the slide: plain data, so it ships to workers."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    positive_class: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    threshold: float | None = None  # None: the model card's threshold, else 0.5
    region: tuple[float, float, float, float] | None = None
    mpp: float | None = None
    tissue_min_fraction: float = DEFAULT_TISSUE_MIN_FRACTION
    stride_um: float | None = None  # grid step; None: the patch size (no overlap)
    min_area_um2: float = 0.0
    reader_threads: int | None = None
    progress: bool = True
    tiles: bool = False  # also write <stem>.tiles.geojson (QuPath tiles, one per patch)
    resume: bool = False  # continue from the map an interrupted run left: classify what it lacks
    exhaustive: bool = False  # every patch through the full model (no first-pass shortcut)
    backend: str = "auto"  # ONNX Runtime where it runs the model (models.loading), else torch


@dataclass(frozen=True)
class SlideOutcome:
    """What happened to one slide: a summary line, or the error that stopped it."""

    path: Path
    ok: bool
    message: str


def predict_to_files(
    path: str | Path,
    model: LoadedModel,
    options: PredictOptions,
    out: Path,
    stem: str | None = None,
    warn: Warn | None = None,
) -> str:
    """Classify one slide and write ``<stem>.csv/.geojson/.heatmap.png/.prob.tiff/.prob.zarr/
    .summary.json`` into ``out``, its Camelyon16 detection file into ``out/camelyon16/<stem>.csv``
    and, with ``options.tiles``, ``<stem>.tiles.geojson``: one output set (all or none).

    While the slide is classified, every finished batch is stored in a hidden OME-Zarr map
    (``.<stem>.resume.zarr``), so an interrupted run loses at most one batch and
    ``options.resume`` continues it; it is removed once the slide's set is complete."""
    warn = warn or _stderr_warning
    with Slide(path, mpp=options.mpp) as slide:
        slide.check_readable()
        resolution = slide.require_resolution()
        if resolution.source == "objective power":
            warn(
                f"{slide.path.name}: no usable µm/px in the file; assuming {resolution.mpp:g} µm/px "
                f"from its {slide.objective_power:g}x objective (pass --mpp to set it)"
            )
        stem = stem or slide.name
        grid = make_grid(slide, model, resolution=resolution, stride_um=options.stride_um)
        check_analysable(slide, grid, options.region)  # the grid the run classifies
        slide.overview_level(max(slide.dimensions) / 1024, "the heatmap")  # before, not after
        with tqdm(
            desc=slide.name,
            unit="patch",
            file=sys.stderr,
            mininterval=0.5,
            delay=0.5,
            disable=not options.progress,
        ) as bar:

            def progress(done: int, total: int) -> None:
                if done < bar.n:  # the full model starts on what the first pass left
                    bar.set_description(f"{slide.name} (full model)", refresh=False)
                    bar.reset(total=total)
                bar.total = total
                bar.update(done - bar.n)

            store = _open_store(out, stem, slide, grid, model, options)
            threshold = resolve_threshold(options.threshold, model).value
            result = predict_slide(  # the map grows on disk batch by batch: a killed run resumes
                slide,
                model,
                region=options.region,
                tissue_min_fraction=options.tissue_min_fraction,
                prob_map=store.prob_map,
                batch_size=options.batch_size,
                num_workers=options.reader_threads,
                store=lambda batch: store.write(
                    batch.cells, batch.probabilities, first_pass=batch.first_pass
                ),
                progress=progress,
                shortcut=None
                if options.exhaustive
                else FirstPass.for_model(model.config.extra, threshold),
            )
        if options.resume:  # the CSV lists every patch, those of the earlier run too
            result.table = table_from_store(store, model.class_names)
        # candidates at the threshold; only those the decision confirms make the verdict
        answer = answer_slide(result.prob_map, threshold, options.min_area_um2)
        regions, rule = answer.regions, answer.rule
        result.prob_map.extra.update(
            resolution_source=resolution.source,
            threshold=threshold,
            model_folder=str(model.folder),
        )
        positive = model.positive_class
        classification = TUMOUR_CLASS if positive.lower() in TUMOUR_CLASSES else positive
        summary = answer.summary(
            slide=slide.requested_path.name, stem=stem, model=model.name, slide_path=str(slide.path)
        )
        # All of the slide's files, or none: see output_set (a manifest marks the set complete).
        info = {"slide": str(slide.path), "model": model.name, "threshold": threshold}
        with OutputSet(out, stem, info=info) as outputs:
            write_patch_csv(result.table, outputs.path(f"{stem}.csv"))
            write_geojson(
                outputs.path(f"{stem}.geojson"),
                regions_to_annotations(regions, classification, threshold),
                mpp=resolution,
            )
            heatmap = render_heatmap(slide, result.prob_map, regions)
            save_heatmap(outputs.path(f"{stem}.heatmap.png"), heatmap)
            result.prob_map.save(outputs.path(f"{stem}.prob.tiff"))
            write_summary(outputs.folder, summary)  # type: ignore[arg-type]
            write_camelyon16_csv(  # every candidate, decided or not: a FROC submission
                outputs.path(f"{CAMELYON16_DIR}/{camelyon16_name(stem)}.csv"),
                answer.detections(),
            )
            if options.tiles:
                write_tiles_geojson(
                    outputs.path(f"{stem}.tiles.geojson"), result.table, model.class_names
                )
            store.finish(result.prob_map)
            save_zarr(
                result.prob_map,
                outputs.path(f"{stem}{ZARR_SUFFIX}"),
                model.class_names,
                store.class_probabilities(),
            )
        shutil.rmtree(store.path, ignore_errors=True)  # the set holds the map now
    top = result.prob_map.max_probability()
    top_text = f"{top:.3f}" if result.n_done else "n/a"
    why = ""
    if result.n_done == 0:
        why = (
            f" (no patch has {options.tissue_min_fraction:g} of its area in tissue; "
            "--tissue-min-fraction 0 classifies every patch)"
        )
    confirmed = sum(r.confirmed for r in regions)
    return (
        f"{slide.name}: {result.n_done} patches{why}, max {positive} probability {top_text}, "
        f"{len(regions)} regions >= {threshold:g} ({confirmed} confirmed as deposits: "
        f">= {rule.min_seed_patches} patches >= {rule.seed_threshold:g}, "
        f">= {rule.min_patches} in all): {summary.verdict.sentence()} -> {out / stem}.*"
    )


def live_store_path(out: Path, stem: str) -> Path:
    """Where a running (or interrupted) prediction keeps its map, batch by batch."""
    return Path(out) / f".{stem}{RESUME_SUFFIX}"


def _open_store(
    out: Path, stem: str, slide: Slide, grid: PatchGrid, model: LoadedModel, options: PredictOptions
) -> ZarrMapWriter:
    """The map the run writes batch by batch: a new one, or (``resume``) the interrupted one,
    else the last complete run's ``<stem>.prob.zarr``."""
    live = live_store_path(out, stem)
    if options.resume:
        previous = live if live.exists() else Path(out) / f"{stem}{ZARR_SUFFIX}"
        if previous.exists():
            if previous != live:
                shutil.rmtree(live, ignore_errors=True)
                shutil.copytree(previous, live)
            store = ZarrMapWriter.resume(live)
            if store.prob_map.grid.anchor != grid.anchor:
                raise MetastasisError(
                    f"{previous.name}: made by an earlier build whose patches started at the "
                    "slide's corner, not centred on the grid; cannot resume it (run without "
                    "--resume to start again)"
                )
            if store.prob_map.grid != grid or store.class_names != list(model.class_names):
                raise MetastasisError(
                    f"{previous.name}: made with another model, grid or slide resolution than "
                    "this run's; cannot resume it (run without --resume to start again)"
                )
            return store
    prob_map = ProbabilityMap.empty(
        grid,
        class_name=model.positive_class,
        model_name=model.name,
        slide_path=str(slide.path),
    )
    return ZarrMapWriter.create(live, prob_map, model.class_names)


def table_from_store(store: ZarrMapWriter, class_names: Sequence[str]) -> pd.DataFrame:
    """The patch table of every cell the stored map has analysed, row by row."""
    probabilities = store.class_probabilities()
    cells = np.argwhere(~np.isnan(probabilities[..., 0]))
    return patch_table(
        cells,
        store.prob_map.grid.cell_boxes(cells),
        probabilities[cells[:, 0], cells[:, 1]],
        class_names,
    )


def write_patch_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """WSInfer's CSV of a patch table (its box and ``prob_<class>`` columns), written atomically."""
    columns = [c for c in table.columns if c in BOX_COLUMNS or c.startswith("prob_")]
    path = Path(path)
    with atomic_path(path) as tmp:
        table[columns].to_csv(tmp, index=False, float_format="%.6f")
    return path


def unique_stems(paths: Iterable[Path]) -> list[str]:
    """Output names per slide; two slides with the same name get ``name_2`` and so on, and so does
    a slide named like a per-run set (``stages``, ``reports``)."""
    used: set[str] = set(RUN_SET_STEMS)
    stems = []
    for path in paths:
        name = Path(path).name if Path(path).is_dir() else Path(path).stem
        stem, n = name, 2
        while stem in used:
            stem, n = f"{name}_{n}", n + 1
        used.add(stem)
        stems.append(stem)
    return stems


def predict_many(
    paths: list[Path],
    options: PredictOptions,
    out: Path,
    *,
    scheduler: str | None = None,
    model: LoadedModel | None = None,
    warn: Warn | None = None,
) -> Iterator[SlideOutcome]:
    """Predict every slide, yielding outcomes as slides finish.

    ``scheduler`` None runs here, one slide after another, with one model (``model``, else loaded
    from ``options``). ``"local"`` or ``"local:N"`` starts a dask.distributed LocalCluster of N
    single-threaded worker processes; anything else is a scheduler address (``tcp://host:8786``)
    of a running cluster.
    """
    stems = unique_stems(paths)
    if scheduler is not None and scheduler != "local" and not scheduler.startswith("local:"):
        check_dask_scheduler(scheduler)  # before --out is made
    check_writable(out)  # before any slide is classified, not after
    for line in recover(out):  # sets a killed run left half-moved, stale temporaries
        (warn or _stderr_warning)(f"{out}: {line}")
    if scheduler is None:
        model = model or load_model(
            options.model,
            device=options.device,
            positive_class=options.positive_class,
            backend=options.backend,
        )
        loaded: LoadedModel = model
        for path, stem in zip(paths, stems, strict=True):
            yield _guarded(path, partial(predict_to_files, path, loaded, options, out, stem, warn))
        return
    yield from _predict_distributed(paths, stems, options, out, scheduler)


def _predict_distributed(
    paths: list[Path], stems: list[str], options: PredictOptions, out: Path, scheduler: str
) -> Iterator[SlideOutcome]:
    require_extra("distributed", "--dask (many slides on a dask cluster)")
    from distributed import Client, LocalCluster, as_completed

    # a bad model (or --positive-class) fails here, once, not on every worker
    load_model(
        options.model, device="cpu", positive_class=options.positive_class, backend=options.backend
    )
    worker_options = replace(options, progress=False)
    cluster = None
    if scheduler == "local" or scheduler.startswith("local:"):
        n_workers = int(scheduler.partition(":")[2] or 0) or min(len(paths), 2)
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise MetastasisError(
                f"cannot reach the dask scheduler at {scheduler} ({exc})"
            ) from exc
        except MemoryError as exc:  # dask read a huge "frame length" from something else
            raise MetastasisError(_not_a_scheduler(scheduler)) from exc
    try:
        futures = {
            client.submit(
                _predict_on_worker, str(path), worker_options, str(out), stem, pure=False
            ): Path(path)
            for path, stem in zip(paths, stems, strict=True)
        }
        for future in as_completed(futures):
            path = futures[future]
            try:
                ok, message = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker died, or the task could not be shipped
                ok, message = False, f"{path}: {user_message(exc)}"
            yield SlideOutcome(path, ok, message)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


#: How long a scheduler may take to greet a new connection (it does so at once).
GREETING_SECONDS = 5.0


def check_dask_scheduler(address: str, wait_s: float = GREETING_SECONDS) -> None:
    """Refuse a ``tcp://`` address where nothing listens, or something that is not a dask
    scheduler (a web server, say), in one sentence and a few seconds.

    dask's own client waits forever on a server that never answers its handshake, and takes the
    first bytes of one that does (an HTTP error page) for the length of a message, which once came
    out as "out of memory". A dask scheduler greets every new connection at once with a framed
    message: 8 bytes of total length, 8 of frame count, the frame lengths; that is what is checked.
    """
    import socket
    import struct

    scheme, _, rest = address.rpartition("://")
    if scheme not in ("", "tcp"):
        return  # tls://, ucx://, ws://: left to dask
    host, _, port = rest.rpartition(":")
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=wait_s)
    except OSError as exc:
        raise MetastasisError(
            f"cannot reach the dask scheduler at {address} ({os_error_reason(exc)})"
        ) from exc
    greeting = b""
    with sock, contextlib.suppress(OSError):
        sock.settimeout(wait_s)
        while len(greeting) < 16:
            chunk = sock.recv(16 - len(greeting))
            if not chunk:
                break
            greeting += chunk
    if len(greeting) == 16:
        total, frames = struct.unpack("<QQ", greeting)
        if 0 < frames <= 64 and 8 * frames < total <= 2**20:
            return
    raise MetastasisError(_not_a_scheduler(address, wait_s))


def _not_a_scheduler(address: str, wait_s: float = GREETING_SECONDS) -> str:
    return (
        f"{address} answers, but it is not a dask scheduler (it did not greet as one within "
        f"{wait_s:g} s): give the address `dask scheduler` prints, such as tcp://host:8786"
    )


def _predict_on_worker(path: str, options: PredictOptions, out: str, stem: str) -> tuple[bool, str]:
    """Runs inside a dask worker: one model per worker process, reused for all its slides."""
    model = _worker_model(options.model, options.device, options.positive_class, options.backend)
    outcome = _guarded(Path(path), lambda: predict_to_files(path, model, options, Path(out), stem))
    return outcome.ok, outcome.message


@lru_cache(maxsize=2)
def _worker_model(
    model: str, device: str, positive_class: str | None, backend: str = "auto"
) -> LoadedModel:
    return load_model(model, device=device, positive_class=positive_class, backend=backend)


def _guarded(path: Path, work: Callable[[], str]) -> SlideOutcome:
    """Run one slide's work; any failure becomes a one-line outcome instead of stopping the batch."""
    try:
        return SlideOutcome(Path(path), True, work())
    except MetastasisError as exc:
        return SlideOutcome(Path(path), False, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bad file must not stop the other slides
        return SlideOutcome(Path(path), False, f"{path}: {user_message(exc)}")


def _stderr_warning(message: str) -> None:
    print(f"napari-metastasis predict: warning: {message}", file=sys.stderr)
