"""The viewer asks before running a model from outside the package, once per file (issue 15, 1b)."""

from __future__ import annotations

import json

import pytest
import torch
from engine_helpers import darkness_config
from napari.utils.notifications import NotificationSeverity, notification_manager
from widget_helpers import PATCH_PX, SPACING_UM, docked_widget, write_test_model

from napari_metastasis.models.trust import check_trust
from napari_metastasis.widgets.detection import WHOLE

pytestmark = pytest.mark.gui
RUN_TIMEOUT_MS = 30_000


class NaNModel(torch.nn.Module):
    """Returns NaN for patches with texture only: the load-time check (blank patches) passes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        textured = (x.flatten(1).std(dim=1) > 0.01).float()
        logit = torch.zeros_like(textured) / (1.0 - textured)  # 0/0 = NaN where textured
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


@pytest.fixture
def widget(make_napari_viewer, tmp_path, monkeypatch):
    _viewer, widget, _ = docked_widget(make_napari_viewer, tmp_path, monkeypatch)
    widget.source.device.value = "cpu"
    widget.source.tissue_min.value = 0.0
    widget.set_mode(WHOLE)
    return widget


def _errors_since(start: int) -> list[str]:
    return [
        str(n.message)
        for n in notification_manager.records[start:]
        if n.severity >= NotificationSeverity.WARNING
    ]


def test_untrusted_model_is_asked_about_once(widget, qtbot, tmp_path):
    folder = write_test_model(tmp_path, name="colleague")
    folder = _untrusted_copy(folder, tmp_path / "from-a-colleague")
    widget.add_model_folder(folder)
    asked = []

    widget.confirm_trust = lambda state: asked.append(state) or False  # the user says no
    start = len(notification_manager.records)
    widget.run()
    assert not widget.is_running and len(asked) == 1
    assert "not trusted" in widget.status.text()
    assert any("not trusted" in m for m in _errors_since(start))
    assert not check_trust(folder).trusted

    widget.confirm_trust = lambda state: asked.append(state) or True  # now yes: remembered
    widget.run()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)
    assert len(asked) == 2 and widget.current_analysis is not None
    assert check_trust(folder).trusted

    widget.confirm_trust = lambda state: pytest.fail("asked twice about the same file")
    widget.run()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)


def test_bundled_model_needs_no_trust(widget, qtbot):
    widget.source.select_model("default")
    assert widget.model_name == "default"
    widget.confirm_trust = lambda state: pytest.fail("the bundled model needs no trust step")
    assert widget.ensure_model_trusted(widget.model_ref)


def test_non_finite_output_is_a_notification_naming_model_and_patch(widget, qtbot, tmp_path):
    folder = tmp_path / "nan-model"
    folder.mkdir()
    torch.jit.script(NaNModel()).save(str(folder / "torchscript_model.pt"))
    config = darkness_config(PATCH_PX, SPACING_UM)
    (folder / "config.json").write_text(json.dumps(config))
    errors = _run_saying_yes(widget, qtbot, folder)
    assert len(errors) == 1, errors
    assert "model nan-model: non-finite output" in errors[0] and "level-0 x=" in errors[0]


def _run_saying_yes(widget, qtbot, folder) -> list[str]:
    """Run the model in ``folder`` with the user trusting it; the warnings and errors shown."""
    widget.add_model_folder(folder)
    widget.confirm_trust = lambda state: True
    start = len(notification_manager.records)
    widget.run()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)
    return _errors_since(start)


def _untrusted_copy(folder, target):
    """A copy with different bytes than any trusted file (so it is not trusted yet)."""
    import shutil

    shutil.copytree(folder, target)
    weights = target / "torchscript_model.pt"
    module = torch.jit.load(str(weights))
    torch.jit.save(module, str(weights), _extra_files={"note.txt": str(target)})
    return target


def test_a_model_the_loader_refuses_is_not_remembered_as_trusted(widget, qtbot, tmp_path):
    """Saying yes to a model whose operators are refused must not trust that file for later."""
    from test_model_operators import FromFileAttack

    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious" * 8)
    folder = tmp_path / "attack"
    folder.mkdir()
    torch.jit.script(FromFileAttack(str(victim), 64)).save(str(folder / "torchscript_model.pt"))
    (folder / "config.json").write_text(json.dumps(darkness_config(PATCH_PX, SPACING_UM)))
    errors = _run_saying_yes(widget, qtbot, folder)
    assert len(errors) == 1 and "aten::from_file" in errors[0], errors
    assert not check_trust(folder).trusted
    assert victim.read_bytes() == b"precious" * 8


def test_a_file_changed_after_the_user_trusted_it_is_not_run(widget, qtbot, tmp_path):
    """The loader checks the bytes it loads are the ones the user said yes to."""
    folder = _untrusted_copy(write_test_model(tmp_path, name="base"), tmp_path / "swapped")
    widget.add_model_folder(folder)

    def yes_then_swap(state):
        weights = folder / "torchscript_model.pt"
        module = torch.jit.load(str(weights))
        torch.jit.save(module, str(weights), _extra_files={"note.txt": "swapped after the answer"})
        return True

    widget.confirm_trust = yes_then_swap
    start = len(notification_manager.records)
    widget.run()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=RUN_TIMEOUT_MS)
    errors = _errors_since(start)
    assert len(errors) == 1 and "changed after it was checked" in errors[0], errors
    assert widget.current_analysis is None
    assert not check_trust(folder).trusted
