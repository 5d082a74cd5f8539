"""ONNX Runtime as the network's backend (by default, ``--backend auto``, where it can run the
model; ``predict --backend onnxruntime`` to insist): the package's own networks exported with the
folder's weights, cached, checked, and the same answers as torch to float rounding; torch where
it cannot run, and one sentence where it was asked for and cannot run."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from engine_helpers import write_darkness_model

from napari_metastasis.cli import main
from napari_metastasis.commands.predict import BACKENDS as CLI_BACKENDS
from napari_metastasis.errors import ModelError
from napari_metastasis.models import load_model
from napari_metastasis.models.onnx_runtime import BACKENDS, OnnxNetwork, cache_dir
from napari_metastasis.pipeline import predict_slide
from napari_metastasis.slides.slide import Slide

REGION = (300, 500, 1300, 1500)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_backends_are_named_alike_in_the_cli_and_the_library():
    assert CLI_BACKENDS == BACKENDS == ("auto", "torch", "onnxruntime")


def test_onnxruntime_gives_torchs_answers_on_the_sample(cache, svs_file):
    torch_model = load_model("default", device="cpu", backend="torch")
    onnx_model = load_model("default", device="cpu", backend="onnxruntime")
    assert onnx_model.backend == "onnxruntime" and len(list(cache_dir().glob("*.onnx"))) == 3
    with Slide(svs_file) as slide:
        ours = predict_slide(slide, onnx_model, region=REGION)
        theirs = predict_slide(slide, torch_model, region=REGION)
    assert ours.n_done == theirs.n_done > 40
    np.testing.assert_allclose(ours.prob_map.values, theirs.prob_map.values, atol=1e-6)
    # the first pass and the rest of the views too
    x = torch_model.prepare(np.random.default_rng(3).integers(0, 256, (8, 80, 80, 3), np.uint8))
    for which in ({"first_pass": True}, {"rest_pass": True}):
        np.testing.assert_allclose(
            onnx_model.forward(x, **which).numpy(),
            torch_model.forward(x, **which).numpy(),
            atol=1e-6,
        )


def test_a_cached_graph_that_answers_otherwise_is_exported_again(cache):
    load_model("default", device="cpu", backend="onnxruntime")
    graphs = sorted(cache_dir().glob("*.onnx"))
    stamps = [g.stat().st_mtime_ns for g in graphs]
    first, second = graphs[0], graphs[1]
    first.write_bytes(second.read_bytes())  # a graph of other views: other answers
    graphs[2].write_bytes(b"not an ONNX graph")
    model = load_model("default", device="cpu", backend="onnxruntime")
    reference = load_model("default", device="cpu", backend="torch")
    x = reference.prepare(np.full((2, 80, 80, 3), 200, np.uint8))
    np.testing.assert_allclose(model.predict(x), reference.predict(x), atol=1e-6)
    assert first.read_bytes() != second.read_bytes()  # both replaced by their own graphs
    assert [g.stat().st_mtime_ns for g in graphs][1] == stamps[1]  # the good one was kept


def test_where_onnxruntime_cannot_run_one_sentence_says_so(cache, tmp_path, monkeypatch, capsys):
    darkness = write_darkness_model(tmp_path / "dark", 32, spacing=1.0)
    with pytest.raises(ModelError, match="only the package's own models"):
        load_model(darkness, device="cpu", backend="onnxruntime")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime: ImportError
    with pytest.raises(ModelError, match=r"pip install onnxruntime"):
        load_model("default", device="cpu", backend="onnxruntime")
    code = main(["predict", "--sample", "--backend", "onnxruntime", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code != 0 and "pip install onnxruntime" in err and "Traceback" not in err


def test_by_default_onnxruntime_runs_the_packages_own_models_on_the_cpu(cache):
    """``--backend auto`` (the default of predict, the viewer and load_model)."""
    model = load_model("default", device="cpu")
    assert model.backend == "onnxruntime"
    assert isinstance(model.first_pass, OnnxNetwork) and isinstance(model.rest_pass, OnnxNetwork)


def test_by_default_torch_runs_what_onnxruntime_cannot(cache, tmp_path, monkeypatch, capsys):
    """A TorchScript model from elsewhere, no onnxruntime, or a graph that fails: torch, as
    before, and the run goes on (only ``--backend onnxruntime`` insists)."""
    darkness = write_darkness_model(tmp_path / "dark", 32, spacing=1.0)
    assert load_model(darkness, device="cpu").backend == "torch"
    import napari_metastasis.models.onnx_runtime as onnx_runtime

    def broken(*_args, **_kwargs):
        raise RuntimeError("the exporter failed")

    with monkeypatch.context() as patch:
        patch.setattr(onnx_runtime, "onnx_network", broken)
        model = load_model("default", device="cpu")
        assert model.backend == "torch" and not isinstance(model.first_pass, OnnxNetwork)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert load_model("default", device="cpu").backend == "torch"
    assert main(["predict", "--sample", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "µm/px on cpu\n" in err and "(ONNX Runtime)" not in err


@pytest.mark.slow
def test_predict_with_onnxruntime_gives_the_same_answer(cache, tmp_path):
    answers = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        assert main(["predict", "--sample", "--backend", backend, "--out", str(out)]) == 0
        summary = json.loads((out / "CMU-1-Small-Region.summary.json").read_text())
        answers[backend] = (
            summary["verdict"],
            summary["patches"],
            summary["patches_first_pass_only"],
            [(r["confirmed"], r["greatest_dimension_mm"]) for r in summary["regions"]],
        )
    assert answers["onnxruntime"] == answers["torch"]


@pytest.mark.parametrize("tta", [True, False])
def test_every_member_of_an_ensemble_is_exported(cache, tta):
    """With or without test-time augmentation, the graph averages the members as torch does
    (a graph of the first member only would answer otherwise and be refused)."""
    import torch

    from napari_metastasis.models.networks import Ensemble, SmallCNN
    from napari_metastasis.models.onnx_runtime import onnx_network

    torch.manual_seed(1)
    ensemble = Ensemble([SmallCNN(width=4) for _ in range(3)], tta=tta).eval()
    graph = onnx_network(ensemble, f"test-{tta}", (32, 32))
    x = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        expected = torch.softmax(ensemble(x), 1)
    np.testing.assert_allclose(torch.softmax(graph(x), 1).numpy(), expected.numpy(), atol=1e-6)


def test_a_cache_that_cannot_be_written_only_costs_the_export(tmp_path, monkeypatch):
    """A read-only home (or a file where the cache folder should be) used to stop the load with
    an OSError; the graph is only a cache, so ONNX Runtime runs the model all the same."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    model = load_model("default", device="cpu", backend="onnxruntime")
    assert model.backend == "onnxruntime"
    reference = load_model("default", device="cpu", backend="torch")
    x = reference.prepare(np.full((2, 80, 80, 3), 180, np.uint8))
    np.testing.assert_allclose(model.predict(x), reference.predict(x), atol=1e-6)


def test_a_failed_export_asked_for_is_one_sentence(cache, tmp_path, monkeypatch, capsys):
    """``--backend onnxruntime`` where torch's exporter fails: a sentence and exit 1, no
    traceback (with the default, torch runs it: the test above)."""
    import napari_metastasis.models.onnx_runtime as onnx_runtime

    def broken(*_args):
        raise RuntimeError("Exporting the operator 'aten::weird' to ONNX is not supported")

    monkeypatch.setattr(onnx_runtime, "_export", broken)
    with pytest.raises(ModelError, match="its export failed"):
        load_model("default", device="cpu", backend="onnxruntime")
    code = main(["predict", "--sample", "--backend", "onnxruntime", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code != 0 and "use --backend torch" in err and "Traceback" not in err
