"""Saving, loading, remembering and restoring analyses: the "Analysis files" panel and its logic.

:class:`AnalysisFiles` writes a view's probability map (Save analysis…), shows a saved one over a
slide layer (Load analysis…), keeps every finished run in the user data folder (Remember analyses,
:mod:`.session`) and, when a slide is opened again, shows its analyses without re-running: those
still in memory first, then those remembered on disk, once per opening of the slide. An analysis
of an uncalibrated slide carries the µm/px it was made with (in its grid), and restoring it gives
the slide layer that µm/px again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QCheckBox, QFileDialog, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from napari_metastasis._napari.helpers import (
    apply_slide_mpp,
    error,
    info,
    is_calibrated,
    slide_key,
    slide_path_of,
    warn,
)
from napari_metastasis.errors import MetastasisError
from napari_metastasis.maps.probability import ProbabilityMap
from napari_metastasis.outputs.output_set import check_saved_map
from napari_metastasis.slides.slide import is_plausible_mpp
from napari_metastasis.widgets.analysis_view import AnalysisView, AnalysisViews
from napari_metastasis.widgets.frame import SlideFrame
from napari_metastasis.widgets.session import (
    AnalysisStore,
    check_matches_slide,
    is_remembered_model,
    remembered_for,
)

NOTHING_TO_SAVE = "Nothing to save: run an analysis of this slide first."


class AnalysisFiles(QWidget):
    """Save / Load buttons, the Remember checkbox, and restoring analyses of reopened slides."""

    def __init__(
        self,
        viewer: Any,
        store: AnalysisStore,
        views: AnalysisViews,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.store = store
        self.views = views
        #: the view the Save button saves (the dock widget's current analysis)
        self.current_view: Callable[[], AnalysisView | None] = lambda: None
        #: the slide layer Load puts a map on (the dock widget's selected slide)
        self.current_slide: Callable[[], Any | None] = lambda: None
        #: called with the views shown by a load or restore (the dock widget selects them)
        self.on_shown: Callable[[Any, list[AnalysisView]], None] = lambda layer, views: None
        self._restored: set[str] = set()

        self.save_button = QPushButton("Save analysis…")
        self.save_button.setToolTip("Save the probability map (with its grid) as a TIFF")
        self.save_button.clicked.connect(self._save_dialog)
        self.load_button = QPushButton("Load analysis…")
        self.load_button.clicked.connect(self._load_dialog)
        self.remember_check = QCheckBox("Remember analyses")
        self.remember_check.setToolTip(
            "Keep each analysis on disk and show it again when the slide is reopened"
        )
        self.remember_check.setChecked(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.load_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.remember_check)

    @property
    def remember_enabled(self) -> bool:
        return self.remember_check.isChecked()

    # --- remembering -----------------------------------------------------------------------
    def remember(self, view: AnalysisView) -> None:
        if not self.remember_enabled:
            return
        try:
            self.store.remember(view.prob_map)
        except (OSError, MetastasisError) as exc:
            warn(f"Could not remember this analysis for next time: {exc}")

    def slide_closed(self, layer: Any) -> None:
        """Reopening the slide later shows its analyses again."""
        path = slide_path_of(layer)
        if path:
            self._restored.discard(slide_key(path))

    def restore(self, layer: Any) -> list[AnalysisView]:
        """Show the analyses of a slide layer: those still in memory, then those remembered on
        disk (once per opening of the slide); returns the views shown."""
        path = slide_path_of(layer)
        if not path or layer not in self.viewer.layers or slide_key(path) in self._restored:
            return []
        self._restored.add(slide_key(path))
        shown = []
        in_memory = self.views.for_slide(path)
        frame = SlideFrame.from_layer(layer)
        for view in in_memory:
            view.place(frame)  # the reopened layer, with the µm/px and place its state gave it
            view.refresh_overlay()  # adds the layer again if it was closed
            shown.append(view)
        files = remembered_for(path) if self.remember_enabled else []
        for file in files:
            if any(is_remembered_model(file, view.model_name) for view in in_memory):
                continue
            try:
                shown.append(self._show(file, layer))
            except MetastasisError as exc:
                warn(f"Could not restore {file.name}: {exc}")
        for view in shown:
            view.keep_slide_below(self.viewer, layer)
        if shown:
            self.on_shown(layer, shown)
            info(f"{layer.name}: restored {len(shown)} earlier analysis(es) without re-running.")
        return shown

    # --- files -----------------------------------------------------------------------------
    def load(self, file: str | Path, layer: Any = None, quiet: bool = False) -> AnalysisView:
        """Show a saved probability map over a slide layer (default: the selected one)."""
        layer = layer or self.current_slide()
        if layer is None:
            raise MetastasisError("Open the slide this analysis belongs to first.")
        # A map of a predict --out folder: finishes a move an interrupted run left half done,
        # and refuses a set that is not complete (nothing is shown from a broken set).
        check_saved_map(file)
        view = self._show(Path(file), layer)
        self._restored.add(slide_key(slide_path_of(layer)))  # type: ignore[arg-type]  # shown already: no restore notice
        self.on_shown(layer, [view])
        if not quiet:
            info(f"Loaded {Path(file).name}: {view.prob_map.n_analysed} patches.")
        return view

    def _show(self, file: Path, layer: Any) -> AnalysisView:
        prob_map = ProbabilityMap.load(file)
        grid = prob_map.grid
        # every check before anything changes: a refused file leaves the slide as it was (D2)
        before = SlideFrame.from_layer(layer)
        check_matches_slide(prob_map, before.width, before.height, file.name)
        if (
            not is_calibrated(layer)
            and is_plausible_mpp(grid.mpp_x)
            and (grid.mpp_x, grid.mpp_y) != (1.0, 1.0)
        ):
            apply_slide_mpp(layer, grid.mpp_x)  # the µm/px the analysis was made with
        path = slide_path_of(layer)
        prob_map = self.store.put(path, prob_map)  # type: ignore[arg-type]
        view = self.views.show(path, prob_map, layer)  # type: ignore[arg-type]
        view.refresh_overlay()
        return view

    def save(self, file: str | Path) -> Path:
        view = self.current_view()
        if view is None or not view.prob_map.n_analysed:
            raise MetastasisError(NOTHING_TO_SAVE)
        return view.prob_map.save(file)

    def _save_dialog(self) -> None:
        view = self.current_view()
        if view is None:
            warn(NOTHING_TO_SAVE)
            return
        slide = Path(view.slide_path)
        suggested = slide.with_name(f"{slide.stem}.{view.model_name}.probability.tif")
        file, _ = QFileDialog.getSaveFileName(
            self, "Save analysis", str(suggested), "Probability map (*.tif *.tiff)"
        )
        if file:
            try:
                self.save(file)
                info(f"Saved {Path(file).name}.")
            except (MetastasisError, OSError) as exc:
                error(f"Could not save {Path(file).name}: {exc}")

    def _load_dialog(self) -> None:
        file, _ = QFileDialog.getOpenFileName(
            self,
            "Load analysis",
            "",
            "Probability map (*.tif *.tiff .zattrs .zgroup zarr.json);;"
            "OME-Zarr map: any file inside its .zarr folder (*)",
        )
        if file:
            try:
                self.load(map_path_for(file))
            except MetastasisError as exc:
                error(str(exc))


def map_path_for(picked: str | Path) -> Path:
    """The probability map a file dialog's choice stands for.

    A Qt file dialog picks files, not folders, and an OME-Zarr map is a ``.zarr`` folder: a file
    picked inside one (its ``.zattrs``, say) stands for the whole folder.
    """
    picked = Path(picked)
    for folder in (picked, *picked.parents):
        if folder.suffix.lower() == ".zarr" and folder.is_dir():
            return folder
    return picked


def map_file_of(layer: Any) -> Path | None:
    """The probability-map file an Image layer was read from (File > Open, by our reader or
    another one such as napari-ome-zarr's), or None: not from a file, or the widget's own
    overlay."""
    from napari_metastasis._napari.map_reader import is_probability_map

    if type(layer).__name__ != "Image":
        return None
    meta = getattr(layer, "metadata", None) or {}
    if meta.get("probability_map") is True or "slide" in meta:
        return None  # an overlay of the widget's, or a slide
    source = getattr(getattr(layer, "source", None), "path", None)
    for candidate in (meta.get("map_path"), source):
        if candidate and is_probability_map(map_path_for(candidate)):
            return map_path_for(candidate)
    return None
