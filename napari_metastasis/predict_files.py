"""Whole-slide prediction to files, for one slide, a list of slides, or a dask.distributed cluster.

The ``predict`` command runs :func:`predict_to_files`, which classifies one slide and writes its
four outputs atomically (the patch CSV, the regions as GeoJSON, the heatmap, the probability grid).
:func:`predict_many` runs it over many slides, either in this process with one model or scaled out
on dask.distributed (one task per slide, each worker loading the model once), so a folder of slides
can be spread over every GPU or CPU node of a cluster. A slide that fails is reported and the
others go on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from .annotations.geojson import write_geojson
from .annotations.model import TUMOUR_CLASS, TUMOUR_CLASSES
from .atomic import atomic_path
from .contours import probability_contours, regions_to_annotations
from .engine import BOX_COLUMNS, DEFAULT_BATCH_SIZE, DEFAULT_TISSUE_MIN_FRACTION, predict_slide
from .errors import MetastasisError
from .heatmap import render_heatmap, save_heatmap
from .models import DEFAULT_MODEL, LoadedModel, load_model
from .slide import Slide

Warn = Callable[[str], None]


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
    min_area_um2: float = 0.0
    reader_threads: int | None = None
    progress: bool = True


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
    """Classify one slide and write ``<stem>.csv/.geojson/.heatmap.png/.prob.tiff`` into ``out``."""
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
        with tqdm(
            desc=slide.name,
            unit="patch",
            file=sys.stderr,
            mininterval=0.5,
            delay=0.5,
            disable=not options.progress,
        ) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = predict_slide(
                slide,
                model,
                region=options.region,
                tissue_min_fraction=options.tissue_min_fraction,
                resolution=resolution,
                batch_size=options.batch_size,
                num_workers=options.reader_threads,
                progress=progress,
            )
        threshold = options.threshold or model.recommended_threshold or 0.5
        regions = probability_contours(result.prob_map, threshold, options.min_area_um2)
        result.prob_map.extra.update(
            resolution_source=resolution.source,
            threshold=threshold,
            model_folder=str(model.folder),
        )
        write_patch_csv(result.table, out / f"{stem}.csv")
        positive = model.positive_class
        classification = TUMOUR_CLASS if positive.lower() in TUMOUR_CLASSES else positive
        write_geojson(
            out / f"{stem}.geojson",
            regions_to_annotations(regions, classification, threshold),
            mpp=resolution,
        )
        save_heatmap(out / f"{stem}.heatmap.png", render_heatmap(slide, result.prob_map, regions))
        result.prob_map.save(out / f"{stem}.prob.tiff")
    top = result.prob_map.max_probability()
    return (
        f"{slide.name}: {result.n_done} patches, max {positive} probability {top:.3f}, "
        f"{len(regions)} regions >= {threshold:g} -> {out / stem}.*"
    )


def write_patch_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """WSInfer's CSV of a patch table (its box and ``prob_<class>`` columns), written atomically."""
    columns = [c for c in table.columns if c in BOX_COLUMNS or c.startswith("prob_")]
    path = Path(path)
    with atomic_path(path) as tmp:
        table[columns].to_csv(tmp, index=False, float_format="%.6f")
    return path


def unique_stems(paths: Iterable[Path]) -> list[str]:
    """Output names per slide; two slides with the same name get ``name_2`` and so on."""
    used: set[str] = set()
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
    if scheduler is None:
        model = model or load_model(
            options.model, device=options.device, positive_class=options.positive_class
        )
        for path, stem in zip(paths, stems, strict=True):
            yield _guarded(
                path, lambda p=path, s=stem: predict_to_files(p, model, options, out, s, warn)
            )
        return
    yield from _predict_distributed(paths, stems, options, out, scheduler)


def _predict_distributed(
    paths: list[Path], stems: list[str], options: PredictOptions, out: Path, scheduler: str
) -> Iterator[SlideOutcome]:
    from distributed import Client, LocalCluster, as_completed

    load_model(options.model, device="cpu")  # a bad model fails here, once, not on every worker
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
        except OSError as exc:
            raise MetastasisError(
                f"cannot reach the dask scheduler at {scheduler} ({exc})"
            ) from exc
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
            except Exception as exc:  # a worker died, or the task could not be shipped
                ok, message = False, f"{path}: {type(exc).__name__}: {_first_line(exc)}"
            yield SlideOutcome(path, ok, message)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _predict_on_worker(path: str, options: PredictOptions, out: str, stem: str) -> tuple[bool, str]:
    """Runs inside a dask worker: one model per worker process, reused for all its slides."""
    model = _worker_model(options.model, options.device, options.positive_class)
    outcome = _guarded(Path(path), lambda: predict_to_files(path, model, options, Path(out), stem))
    return outcome.ok, outcome.message


@lru_cache(maxsize=2)
def _worker_model(model: str, device: str, positive_class: str | None) -> LoadedModel:
    return load_model(model, device=device, positive_class=positive_class)


def _guarded(path: Path, work: Callable[[], str]) -> SlideOutcome:
    """Run one slide's work; any failure becomes a one-line outcome instead of stopping the batch."""
    try:
        return SlideOutcome(Path(path), True, work())
    except MetastasisError as exc:
        return SlideOutcome(Path(path), False, str(exc))
    except Exception as exc:  # a bad file must not stop the other slides
        return SlideOutcome(Path(path), False, f"{path}: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _stderr_warning(message: str) -> None:
    print(f"napari-metastasis predict: warning: {message}", file=sys.stderr)
