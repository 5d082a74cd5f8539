"""The dock widget's wiring: which control, panel and viewer event calls what.

One function, :func:`connect_parts`, so the whole map of signals of the dock reads in one place:
the controls to the dock's handlers, the region list and comparison to
:class:`.regions_control.RegionsControl`, the case list's questions to the dock, the viewer's
mouse and keyboard shortcuts (napari's key bindings) to the dock, undone when the dock is deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari_metastasis.widgets.dock import SHORTCUTS

if TYPE_CHECKING:
    from napari_metastasis.widgets.detection import MetastasisWidget


def connect_parts(dock: MetastasisWidget) -> None:
    """Connect the parts of ``dock`` to each other and to its viewer."""
    source, run_controls, display = dock.source, dock.run_controls, dock.display
    controls = dock.controls
    source.slide.changed.connect(controls.slide_changed)
    source.model.changed.connect(controls.model_changed)
    source.mpp.changed.connect(controls.mpp_changed)
    source.browse.changed.connect(controls.browse_model)
    run_controls.mode.changed.connect(controls.mode_changed)
    run_controls.new_shapes.changed.connect(controls.new_shapes_layer)
    run_controls.run_button.changed.connect(dock.run)
    run_controls.cancel_button.changed.connect(dock.cancel)
    display.on_style_changed(controls.style_changed)
    display.on_regions_changed(controls.threshold_moved)
    display.on_regions_changed(dock.regions.debounce.start)
    display.on_regions_changed(dock.cases_timer.start)
    display.on_regions_changed(controls.update_legend)

    regions = dock.regions
    dock.comparison.changed.connect(regions.update_comparison)
    dock.comparison.lesion_activated.connect(regions.go_to_lesion)
    dock.regions_panel.activated.connect(regions.go_to_region)
    navigator = dock.navigator
    navigator.delete_requested.connect(regions.delete)
    navigator.relabel_requested.connect(regions.relabel)
    navigator.restore_requested.connect(regions.restore)
    dock.views.on_user_delete = regions.on_user_deleted

    dock.annotation_io.slide_layer_provider = lambda: dock.slide_layer
    dock.files.current_view = lambda: dock.current_analysis
    dock.files.current_slide = lambda: dock.slide_layer
    dock.verdict_panel.report_requested.connect(dock.reporting.ask_and_write)

    cases = dock.cases
    cases.request_for = lambda path: dock.requests.make(None, "whole slide", path)
    cases.model_name = lambda: dock.model_name
    cases.threshold = lambda: dock.threshold
    cases.min_area_um2 = lambda: display.min_area_um2
    cases.on_analysed = lambda prob_map: _remember_map(dock, prob_map)
    cases.open_requested.connect(dock.open_case_slide)
    cases.runner.finished.connect(lambda summary: _case_finished(dock, summary))

    viewer = dock.viewer
    viewer.mouse_drag_callbacks.append(dock.clicks)
    for key, (method, _what) in SHORTCUTS.items():

        def callback(_viewer: Any, method: str = method) -> None:
            getattr(dock, method)()

        viewer.bind_key(key, callback, overwrite=True)

    def disconnect(*_: Any) -> None:
        if dock.clicks in viewer.mouse_drag_callbacks:
            viewer.mouse_drag_callbacks.remove(dock.clicks)
        for key in SHORTCUTS:
            viewer.bind_key(key, None, overwrite=True)

    dock.destroyed.connect(disconnect)


def _remember_map(dock: MetastasisWidget, prob_map: Any) -> None:
    """A slide of the case list was analysed: remember its map, if analyses are remembered."""
    from napari_metastasis._napari.helpers import warn
    from napari_metastasis.errors import MetastasisError

    if dock.files.remember_enabled:
        try:
            dock.store.remember(prob_map)
        except (OSError, MetastasisError) as exc:
            warn(f"Could not remember this analysis for next time: {exc}")


def _case_finished(dock: MetastasisWidget, summary: Any) -> None:
    """A slide of the case list finished: redraw it if the viewer shows it."""
    view = dock.views.get(summary.request.slide_path, summary.request.model_name)
    if view is not None:
        view.refresh_overlay()
        if view is dock.current_analysis:
            dock.update_contours()
