"""Every failure becomes a notification a pathologist can read, and the viewer stays usable.

Also the modes' guard rails (a view beside the slide, no shapes drawn) and the Drawn-shapes mode.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from napari.utils.notifications import NotificationSeverity, notification_manager
from shapely.geometry import Polygon, box
from widget_helpers import (
    add_sample_slide,
    analysed_cells,
    docked_widget,
    fail_inference,
    write_test_model,
)

from napari_metastasis import pipeline as engine
from napari_metastasis._napari.sample_data import SAMPLE_SLIDE
from napari_metastasis.slides.slide import Slide
from napari_metastasis.widgets.detection import SHAPES, VISIBLE, WHOLE

pytestmark = pytest.mark.gui
RUN_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_test_model(tmp_path_factory.mktemp("models"))


@pytest.fixture
def env(make_napari_viewer, tmp_path, monkeypatch, model_dir):
    viewer, widget, _ = docked_widget(make_napari_viewer, tmp_path, monkeypatch, sample=False)
    widget.add_model_folder(model_dir)
    widget.source.device.value = "cpu"
    widget.source.tissue_min.value = 0.0
    return viewer, widget


class Notes:
    """Notifications shown since it was made."""

    def __init__(self):
        self.start = len(notification_manager.records)

    def since(self, severity=None) -> list[str]:
        records = notification_manager.records[self.start :]
        return [
            str(n.message)
            for n in records
            if severity is None or n.severity == severity or n.severity >= severity
        ]


def run_and_wait(qtbot, widget):
    widget.run()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)


def assert_usable(qtbot, viewer, widget):
    """Idle, buttons in a sane state, and a new whole-slide run on the sample works."""
    assert not widget.is_running
    assert widget.run_controls.run_button.enabled and not widget.run_controls.cancel_button.enabled
    viewer.scene.camera.zoom = viewer.scene.camera.zoom * 1.5  # the viewer still responds
    for layer in list(viewer.layers):  # slides that failed (never their overlays: see README)
        if layer.metadata.get("slide_path") not in (None, str(SAMPLE_SLIDE)):
            viewer.layers.remove(layer)
    if widget.slide_layer is None:
        add_sample_slide(viewer)
    widget.set_mode(WHOLE)
    run_and_wait(qtbot, widget)
    assert widget.current_analysis is not None
    assert (
        widget.current_analysis.prob_map.n_analysed == widget.current_analysis.prob_map.values.size
    )


def test_a_model_that_will_not_load_is_reported(env, qtbot, tmp_path):
    viewer, widget = env
    add_sample_slide(viewer)
    broken = write_test_model(tmp_path / "bad", name="broken")
    (broken / "torchscript_model.pt").write_bytes(b"not a torchscript archive")
    widget.add_model_folder(broken)
    widget.confirm_trust = lambda state: True  # the user trusts the (changed) file when asked
    notes = Notes()
    widget.set_mode(WHOLE)
    run_and_wait(qtbot, widget)
    errors = notes.since(NotificationSeverity.ERROR)
    assert len(errors) == 1 and "broken" in errors[0] and "TorchScript" in errors[0]
    assert widget.status.text() == errors[0]
    assert widget.current_analysis is None
    widget.source.select_model("darkness")
    assert_usable(qtbot, viewer, widget)


def test_an_unreadable_slide_is_reported(env, qtbot, tmp_path):
    viewer, widget = env
    copy = tmp_path / "copy.svs"
    shutil.copy(SAMPLE_SLIDE, copy)
    add_sample_slide(viewer, copy)
    copy.write_bytes(copy.read_bytes()[:4096])  # the file is damaged after it was opened
    notes = Notes()
    widget.set_mode(WHOLE)
    run_and_wait(qtbot, widget)
    errors = notes.since(NotificationSeverity.ERROR)
    assert len(errors) == 1 and "copy.svs" in errors[0]
    assert "Traceback" not in errors[0]
    assert_usable(qtbot, viewer, widget)


def test_a_slide_that_disappeared_is_reported(env, qtbot, tmp_path):
    viewer, widget = env
    copy = tmp_path / "moved.svs"
    shutil.copy(SAMPLE_SLIDE, copy)
    add_sample_slide(viewer, copy)
    copy.unlink()
    notes = Notes()
    run_and_wait(qtbot, widget)
    errors = notes.since(NotificationSeverity.ERROR)
    assert len(errors) == 1 and "moved.svs" in errors[0] and "no such file" in errors[0]
    assert_usable(qtbot, viewer, widget)


def test_out_of_gpu_memory_suggests_a_smaller_batch(env, qtbot, monkeypatch):
    viewer, widget = env
    add_sample_slide(viewer)
    widget.source.batch_size.value = 64
    real_model = widget.resources.model
    undo = []

    def exhausted(ref, device, sha256=None):
        model = real_model(ref, device, sha256)
        oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        undo.append(fail_inference(model, oom))
        return model

    monkeypatch.setattr(widget.resources, "model", exhausted)
    notes = Notes()
    widget.set_mode(WHOLE)
    run_and_wait(qtbot, widget)
    errors = notes.since(NotificationSeverity.ERROR)
    assert len(errors) == 1
    assert "Out of GPU memory with batch size 64" in errors[0] and "32" in errors[0]
    monkeypatch.setattr(widget.resources, "model", real_model)
    for step in undo:
        step()
    assert_usable(qtbot, viewer, widget)


def test_an_unexpected_error_is_reported_not_raised(env, qtbot, monkeypatch):
    viewer, widget = env
    add_sample_slide(viewer)

    def broken_plan(*args, **kwargs):
        raise RuntimeError("something nobody planned for")

    real_plan = engine.run.plan_cells  # the planner the one pipeline calls
    monkeypatch.setattr(engine.run, "plan_cells", broken_plan)
    notes = Notes()
    run_and_wait(qtbot, widget)
    errors = notes.since(NotificationSeverity.ERROR)
    assert errors == ["Analysis failed: RuntimeError: something nobody planned for"]
    monkeypatch.setattr(engine.run, "plan_cells", real_plan)
    assert_usable(qtbot, viewer, widget)


def test_visible_region_beside_the_slide_warns_and_runs_nothing(env, qtbot):
    viewer, widget = env
    add_sample_slide(viewer)
    viewer.scene.camera.center = (-5000.0, -5000.0)
    viewer.scene.camera.zoom = 1.0
    notes = Notes()
    widget.set_mode(VISIBLE)
    widget.run()
    assert not widget.is_running
    assert any("none of the slide" in m for m in notes.since(NotificationSeverity.WARNING))


def test_run_without_a_slide_warns(env):
    _viewer, widget = env
    notes = Notes()
    widget.run()
    assert not widget.is_running
    assert not widget.run_controls.run_button.enabled
    assert any("slide" in m for m in notes.since(NotificationSeverity.WARNING))


def test_drawn_shapes_analyse_the_cells_inside_them(env, qtbot):
    viewer, widget = env
    slide_layer = add_sample_slide(viewer)
    mpp_y, mpp_x = slide_layer.scale
    widget.set_mode(SHAPES)
    notes = Notes()
    widget.run()  # nothing drawn yet
    assert not widget.is_running
    assert any("Draw rectangles" in m for m in notes.since(NotificationSeverity.WARNING))

    rect_um = np.array([[100.0, 150.0], [100.0, 450.0], [350.0, 450.0], [350.0, 150.0]])
    tri_um = np.array([[800.0, 200.0], [1300.0, 200.0], [1300.0, 900.0]])
    shapes = viewer.add_shapes(
        [rect_um, tri_um], shape_type=["rectangle", "polygon"], name="to analyse"
    )
    widget.run_controls.select_shapes_layer(shapes.name)
    viewer.layers.selection.active = slide_layer
    run_and_wait(qtbot, widget)
    prob = widget.current_analysis.prob_map

    def to_px(yx):
        return [(x / mpp_x, y / mpp_y) for y, x in yx]

    (rx0, ry0), (rx1, ry1) = to_px(rect_um[[0, 2]])
    rect_px = box(rx0, ry0, rx1, ry1)
    expected_geometry = rect_px.union(Polygon(to_px(tri_um)))
    with Slide(SAMPLE_SLIDE) as slide:
        expected = engine.plan_cells(slide, prob.grid, expected_geometry, tissue=False)
    assert analysed_cells(prob) == {tuple(c) for c in expected.tolist()}
    assert 0 < prob.n_analysed < prob.values.size / 2
    assert "2 drawn shapes" in widget.status.text()

    # only the selected shape, when asked
    widget.run_controls.selected_only.value = True
    shapes.selected_data = {0}
    before = analysed_cells(prob)
    run_and_wait(qtbot, widget)
    assert "1 drawn shape," in widget.status.text()
    # a rectangle takes every cell its patches overlap; only those not analysed yet were run
    in_rect = {tuple(c) for c in prob.grid.cells_in_rect(rx0, ry0, rx1 - rx0, ry1 - ry0).tolist()}
    assert analysed_cells(prob) == before | in_rect
    assert f"{len(in_rect - before)} patches classified, {len(in_rect & before)} reused" in (
        widget.status.text()
    )
