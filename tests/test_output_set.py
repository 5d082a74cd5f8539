"""A slide's outputs are written as a set, and --out is checked first (issue 15, items 5 and 6).

Before: Ctrl-C or a failure while writing left a new CSV next to an old heatmap, SIGKILL left
``.part`` files nothing cleaned, and a read-only or full --out was found after the whole slide had
been classified, with a message naming a temporary file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import write_darkness_model, write_pyramid_tiff

from napari_metastasis.cli import main
from napari_metastasis.errors import OutputError
from napari_metastasis.outputs import output_set
from napari_metastasis.outputs.output_set import OutputSet, check_writable, recover, verify_set
from napari_metastasis.pipeline import slide_outputs as predict_files

SET_FILES = {
    "csv",
    "geojson",
    "heatmap.png",
    "prob.tiff",
    "prob.zarr",
    "summary.json",
    "outputs.json",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_darkness_model(tmp_path_factory.mktemp("m") / "darkness", 32)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    image = np.full((320, 320, 3), 255, np.uint8)
    image[64:256, 64:256] = 30
    return write_pyramid_tiff(tmp_path_factory.mktemp("s") / "block.tiff", image, mpp=1.0)


def _predict(out, slide, model, *extra):
    return main(
        [
            "predict",
            str(slide),
            "--out",
            str(out),
            "--model",
            str(model),
            "--tissue-min-fraction",
            "0",
            *extra,
        ]
    )


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def _hidden(out: Path) -> list[str]:
    """Hidden leftovers, except the map an interrupted run keeps for ``predict --resume``."""
    return [
        p.name
        for p in out.iterdir()
        if p.name.startswith(".") and not p.name.endswith(predict_files.RESUME_SUFFIX)
    ]


def test_a_run_writes_a_complete_set_with_a_manifest(tmp_path, slide, model):
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 0
    names = {p.name.removeprefix("block.") for p in out.glob("block.*")}
    assert names == SET_FILES
    assert verify_set(out, "block").state == "complete"
    manifest = json.loads((out / "block.outputs.json").read_text())
    listed = {f["name"] for f in manifest["files"]}
    assert {name.split("/")[0] for name in listed} == {
        f"block.{n}" for n in SET_FILES - {"outputs.json"}
    } | {"camelyon16"}
    assert "camelyon16/block.csv" in listed
    assert not _hidden(out) and not (out / f".block{predict_files.RESUME_SUFFIX}").exists()


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_failure_while_writing_keeps_the_old_set_whole(
    tmp_path, slide, model, monkeypatch, failure
):
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 0
    before = _snapshot(out)

    def broken(*args, **kwargs):
        raise failure

    monkeypatch.setattr(predict_files, "save_heatmap", broken)  # after the CSV and GeoJSON
    code = _predict(out, slide, model, "--threshold", "0.9")  # would change the GeoJSON
    assert code == (130 if isinstance(failure, KeyboardInterrupt) else 1)
    assert _snapshot(out) == before  # not a new CSV next to an old heatmap
    assert verify_set(out, "block").state == "complete" and not _hidden(out)


def test_kill_during_commit_is_finished_by_the_next_run(tmp_path, slide, model):
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 0
    # What SIGKILL in the middle of a commit leaves: a journal, one file moved, the rest not.
    folder = out / ".block.set-killed01"
    folder.mkdir()
    names = ["block.csv", "block.geojson", "block.heatmap.png"]
    for name in names:
        (folder / name).write_bytes(b"new " + name.encode())
    entries = [output_set._describe(folder / n, n) for n in names]
    (folder / output_set.JOURNAL).write_text(json.dumps({"stem": "block", "files": entries}))
    (out / "block.outputs.json").unlink()
    os.replace(folder / "block.csv", out / "block.csv")
    (out / ".block.set-unfinish").mkdir()  # killed before its journal: discarded
    (out / ".block.csv.abcd1234.part").write_bytes(b"half")  # an older writer's temporary
    assert verify_set(out, "block").state == "incomplete"

    done = recover(out, "block")
    assert any("finished an interrupted write" in line for line in done)
    assert any("removed an unfinished write" in line for line in done)
    assert (out / "block.geojson").read_bytes() == b"new block.geojson"
    assert verify_set(out, "block").state == "complete" and not _hidden(out)


def test_a_set_in_use_is_not_touched_by_recovery(tmp_path):
    out = tmp_path / "out"
    with OutputSet(out, "busy") as writer:
        writer.path("busy.csv").write_text("x")
        assert recover(out) == [] and writer.folder.exists()
    assert verify_set(out, "busy").state == "complete"


def test_subfolders_and_stores_plug_in(tmp_path):
    out = tmp_path / "out"
    for run in (1, 2):
        with OutputSet(out, "s") as writer:
            writer.path("camelyon16/s.csv").write_text(f"run {run}")
            store = writer.path("s.ome.zarr")
            store.mkdir()
            (store / ".zgroup").write_text("{}")
            (store / "0").mkdir()
            (store / "0" / "chunk").write_text(f"run {run}")
    assert (out / "camelyon16" / "s.csv").read_text() == "run 2"
    assert (out / "s.ome.zarr" / "0" / "chunk").read_text() == "run 2"
    assert verify_set(out, "s").state == "complete" and not _hidden(out)


def test_out_is_checked_before_any_slide_is_classified(tmp_path, slide, model, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("classified before --out was checked")

    monkeypatch.setattr(predict_files, "predict_slide", never)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out, reason in (
        (a_file, "is a file, not a folder"),
        (Path("/sys/out"), "permission denied"),
    ):
        assert _predict(out, slide, model) == 1
        err = capsys.readouterr().err
        assert str(out) in err and reason in err and ".part" not in err
    monkeypatch.setattr(
        output_set.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 2**20)
    )
    assert _predict(tmp_path / "full", slide, model) == 1
    assert "only 1.0 MB is free on its disk" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, "no space is left on the disk"),
        (errno.EROFS, "the file system is read-only"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_os_errors_name_the_real_target(tmp_path, slide, model, monkeypatch, capsys, code, reason):
    real_replace = os.replace

    def failing_replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".heatmap.png"):
            raise OSError(code, os.strerror(code), str(src))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    out = tmp_path / "out"
    assert _predict(out, slide, model) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out}/block.heatmap.png: {reason}" in err
    assert ".part" not in err and ".set-" not in err
    monkeypatch.setattr(os, "replace", real_replace)
    assert not list(out.glob("block.*")) and not _hidden(out)


def test_check_writable_names_the_folder(tmp_path):
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_writable(Path(__file__))
    assert check_writable(tmp_path / "new" / "folder").is_dir()
