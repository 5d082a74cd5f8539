"""A model folder is code: unsafe operators are refused before any of it runs (issue 15, item 1a).

Every attack here is built in the test and shown to work when run directly, so a pass means the
loader stopped it, not that the attack was harmless.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_helpers import DarknessModel, darkness_config, write_darkness_model

from napari_metastasis.errors import ModelError, UnsafeModelError
from napari_metastasis.models import BUNDLED_DIR, load_model
from napari_metastasis.models.operator_check import (
    ALLOWED_OPERATORS,
    check_operator_names,
    check_torchscript_module,
    exported_program_operators,
    torchscript_operators,
)

VICTIM_BYTES = b"precious data\n" * 4


def _darkness(x: torch.Tensor) -> torch.Tensor:
    """DarknessModel's forward, as a function scripted modules can call."""
    pixels = x * 0.5 + 0.5
    darkness = (1.0 - pixels.mean(dim=(1, 2, 3))).clamp(1e-6, 1 - 1e-6)
    return torch.stack([torch.log1p(-darkness), torch.log(darkness)], dim=1)


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM_BYTES)
    return victim


def _model_folder(tmp_path: Path, scripted: torch.jit.ScriptModule, name="attack") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    scripted.save(str(folder / "torchscript_model.pt"))
    (folder / "config.json").write_text(json.dumps(darkness_config(patch_size=16)))
    return folder


class FromFileAttack(torch.nn.Module):
    """Maps a file into a tensor, shared, and overwrites its bytes; then looks like a classifier."""

    def __init__(self, path: str, size: int):
        super().__init__()
        self.path = path
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stolen = torch.from_file(self.path, shared=True, size=self.size, dtype=torch.uint8)
        stolen.fill_(88)
        return _darkness(x) + stolen.sum() * 0


def test_from_file_attack_is_refused_before_it_runs(tmp_path):
    victim = _victim(tmp_path)
    scripted = torch.jit.script(FromFileAttack(str(victim), len(VICTIM_BYTES)))
    folder = _model_folder(tmp_path, scripted)

    with pytest.raises(UnsafeModelError, match=r"aten::from_file, which reads a file"):
        load_model(folder, device="cpu")
    assert victim.read_bytes() == VICTIM_BYTES  # forward never ran

    # The attack is real: run directly, the same file overwrites the victim.
    torch.jit.load(str(folder / "torchscript_model.pt"))(torch.zeros(1, 3, 16, 16))
    assert victim.read_bytes() == b"X" * len(VICTIM_BYTES)


def test_cli_refuses_the_attack_with_one_sentence(tmp_path, capsys):
    from napari_metastasis.cli import main

    victim = _victim(tmp_path)
    folder = _model_folder(
        tmp_path, torch.jit.script(FromFileAttack(str(victim), len(VICTIM_BYTES)))
    )
    code = main(
        [
            "predict",
            "--sample",
            "--model",
            str(folder),
            "--trust-model",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "aten::from_file" in err and "Traceback" not in err
    assert victim.read_bytes() == VICTIM_BYTES


class SetStateAttack(torch.nn.Module):
    """``__setstate__`` runs inside torch.jit.load itself, before any graph can be inspected."""

    def __init__(self, path: str, size: int):
        super().__init__()
        self.path = path
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _darkness(x)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, int, bool]:
        return (self.path, self.size, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, int, bool]) -> None:
        self.path = state[0]
        self.training = state[2]
        stolen = torch.from_file(self.path, shared=True, size=state[1], dtype=torch.uint8)
        self.size = state[1] + int(stolen.fill_(88)[0].item()) * 0


def test_setstate_attack_is_refused_before_torch_opens_the_file(tmp_path):
    victim = _victim(tmp_path)
    folder = _model_folder(
        tmp_path, torch.jit.script(SetStateAttack(str(victim), len(VICTIM_BYTES)))
    )
    victim.write_bytes(VICTIM_BYTES)  # saving ran nothing, but be sure

    with pytest.raises(UnsafeModelError, match="__setstate__"):
        load_model(folder, device="cpu")
    assert victim.read_bytes() == VICTIM_BYTES

    torch.jit.load(str(folder / "torchscript_model.pt"))  # the attack is real: loading runs it
    assert victim.read_bytes() == b"X" * len(VICTIM_BYTES)


def _save_hook(module: torch.nn.Module, inputs: tuple[torch.Tensor]) -> None:
    torch.save(inputs[0], "/nonexistent-dir/stolen.pt")
    return None


class Inner(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _darkness(x)

    @torch.jit.export
    def unused(self, x: torch.Tensor) -> torch.Tensor:
        print("a method forward never calls is checked too")
        return x


class Outer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_hooks_and_methods_forward_never_calls_are_checked(tmp_path):
    hooked = Outer()
    hooked.register_forward_pre_hook(
        _save_hook
    )  # a hook on the top module: outside forward's graph
    ops = torchscript_operators(torch.jit.script(hooked))
    assert {"aten::save", "prim::Print"} <= ops
    folder = _model_folder(tmp_path, torch.jit.script(hooked), "hooked")
    with pytest.raises(UnsafeModelError, match=r"aten::save, which writes a file"):
        load_model(folder, device="cpu")

    folder = _model_folder(tmp_path, torch.jit.script(Outer()), "printing")
    with pytest.raises(UnsafeModelError, match=r"prim::Print, which prints"):
        load_model(folder, device="cpu")


def test_safe_models_pass(tmp_path):
    for folder in (BUNDLED_DIR / "default", write_darkness_model(tmp_path / "darkness")):
        check_torchscript_module(torch.jit.load(str(folder / "torchscript_model.pt")), "m")
        load_model(folder, device="cpu")


def test_traced_and_scripted_common_layers_pass():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
            self.norm = torch.nn.LayerNorm(8)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.gelu(self.bn(self.conv(x)))
            x = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear")
            x = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(2).transpose(1, 2)
            x = self.norm(x + self.attn(x, x, x)[0])
            return self.head(torch.nn.functional.dropout(x.mean(1), 0.1, self.training))

    net = Net().eval()
    example = torch.rand(2, 3, 16, 16)
    for module in (torch.jit.script(net), torch.jit.trace(net, example, check_trace=False)):
        check_torchscript_module(module, "net")


def test_operator_names_from_other_program_formats():
    check_operator_names(["aten.conv2d.default", "aten::relu", "_operator::getitem"], "m.pt2")
    with pytest.raises(UnsafeModelError, match=r"m.pt2: refused: the model calls aten::from_file"):
        check_operator_names(["aten.conv2d.default", "aten.from_file.default"], "m.pt2")
    with pytest.raises(UnsafeModelError, match=r"c10d::allreduce_, which talks to other"):
        check_operator_names(["c10d::allreduce_"], "m.pt2")
    assert "aten::from_file" not in ALLOWED_OPERATORS and "aten::save" not in ALLOWED_OPERATORS


def test_exported_program_operators_are_checked():
    program = torch.export.export(DarknessModel(), (torch.rand(2, 3, 8, 8),))
    names = exported_program_operators(program)
    assert any(n.startswith("aten::") for n in names)
    check_operator_names(names, "darkness.pt2")


def test_garbage_file_is_not_a_model(tmp_path):
    folder = write_darkness_model(tmp_path / "garbage")
    (folder / "torchscript_model.pt").write_bytes(b"not a zip at all")
    with pytest.raises(ModelError, match="not a loadable TorchScript model"):
        load_model(folder, device="cpu")


def test_loading_a_pt2_program_applies_the_operator_allowlist(tmp_path, monkeypatch):
    """The loader checks an exported program's operators against the same allowlist as
    TorchScript (an operator the allowlist lacks is refused by name, before the program runs)."""
    from napari_metastasis.models import exported, operator_check

    path = exported.export_program(DarknessModel(), torch.rand(2, 3, 8, 8), tmp_path / "m.pt2")
    exported.load_exported(path, torch.device("cpu"))  # pure tensor operators: loads
    used = sorted(exported_program_operators(torch.export.load(path)))
    monkeypatch.setattr(operator_check, "ALLOWED_OPERATORS", frozenset(used[1:]))
    with pytest.raises(UnsafeModelError, match=f"m.pt2: refused: the model calls {used[0]}"):
        exported.load_exported(path, torch.device("cpu"))
