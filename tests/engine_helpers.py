"""Synthetic slides and a tiny model whose answers are known, for the engine, tissue and CLI tests.

* :func:`write_pyramid_tiff` writes a tiled, lossless, multi-level TIFF that OpenSlide opens as a
  "generic-tiff" slide with a real µm/px (from the TIFF resolution tags).
* :func:`write_darkness_model` writes a model folder in the project's contract whose tumour
  probability is the mean darkness of the patch (1 - mean of the RGB values in [0, 1]), so every
  prediction can be checked against the pixels that were drawn.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile
import torch


def write_pyramid_tiff(
    path: Path, image: np.ndarray, mpp: float, *, levels: int = 3, tile: int = 128
) -> Path:
    """``image`` (H, W, 3) uint8 as level 0, then 2x, 4x ... reductions (nearest, exact pixels)."""
    level = image
    with tifffile.TiffWriter(path) as tw:
        for i in range(levels):
            px_per_cm = 1e4 / (mpp * 2**i)
            tw.write(
                np.ascontiguousarray(level),
                tile=(tile, tile),
                photometric="rgb",
                compression="zlib",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if i else 0,
                metadata=None,
            )
            level = level[::2, ::2]
    return path


class DarknessModel(torch.nn.Module):
    """(N, 3, P, P) normalised with mean=std=0.5 -> logits whose softmax is [1 - d, d]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x * 0.5 + 0.5  # undo Normalize(0.5, 0.5): back to [0, 1]
        darkness = (1.0 - pixels.mean(dim=(1, 2, 3))).clamp(1e-6, 1 - 1e-6)
        return torch.stack([torch.log1p(-darkness), torch.log(darkness)], dim=1)


def darkness_config(patch_size: int = 32, spacing: float = 1.0, **overrides) -> dict:
    config = {
        "spec_version": "1.0",
        "architecture": "darkness-test-model",
        "num_classes": 2,
        "class_names": ["normal", "tumor"],
        "patch_size_pixels": patch_size,
        "spacing_um_px": spacing,
        "transform": [
            {"name": "Resize", "arguments": {"size": patch_size}},
            {"name": "ToTensor"},
            {"name": "Normalize", "arguments": {"mean": [0.5] * 3, "std": [0.5] * 3}},
        ],
    }
    config.update(overrides)
    return config


#: A deposit rule that confirms every candidate region (any patch at or above the threshold is a
#: seed): the test models' rule, so tests of sizes, stages and files see every region as a deposit;
#: the decision itself is tested with its own rules (test_deposit_decision.py).
CONFIRM_EVERY_CANDIDATE = {
    "name": "hysteresis",
    "seed_threshold": 1e-6,
    "min_seed_patches": 1,
    "min_patches": 1,
    "source": "tests: every candidate confirmed",
}


def write_darkness_model(
    folder: Path,
    patch_size: int = 32,
    spacing: float = 1.0,
    *,
    trust: bool = True,
    decision: dict | None = CONFIRM_EVERY_CANDIDATE,
    **overrides,
):
    """A model folder (torchscript_model.pt + config.json) for :class:`DarknessModel`.

    ``trust``: the test wrote it, so it is trusted (in the tests' own config folder), as a user
    would with ``--trust-model`` the first time. ``decision``: its deposit rule block (None: none,
    so the default rule applies).
    """
    folder.mkdir(parents=True, exist_ok=True)
    # The folder's path in the archive makes each file's bytes (and SHA-256) its own.
    torch.jit.save(
        torch.jit.script(DarknessModel()),
        str(folder / "torchscript_model.pt"),
        _extra_files={"written_for.txt": str(folder)},
    )
    config = darkness_config(patch_size, spacing, **overrides)
    if decision is not None:
        config.setdefault("napari_metastasis_decision", decision)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if trust:
        trust_model_folder(folder)
    return folder


def trust_model_folder(folder: Path) -> None:
    """Remember ``folder``'s weights as trusted (what ``--trust-model`` does)."""
    from napari_metastasis.models.trust import file_sha256, remember

    weights = folder / "torchscript_model.pt"
    remember(file_sha256(weights), weights)


def heldout_cells(n: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` held-out PCam patches, half of them tumour, as the node slides draw a cell (the
    central 80 µm at 1 µm/px): (n, 80, 80, 3) uint8, for answers that span the range."""
    from shared_data import DATA

    from napari_metastasis.datasets.pcam_splits import pcam_part
    from napari_metastasis.evaluation.node_slides import PatchCache, cell_image

    files = pcam_part(DATA, "test")
    rng = np.random.default_rng(seed)
    tumour = rng.choice(np.flatnonzero(files.labels == 1), n // 2, replace=False)
    normal = rng.choice(np.flatnonzero(files.labels == 0), n - n // 2, replace=False)
    cache = PatchCache(files)
    return np.stack(
        [cell_image(cache[int(i)], 80, 0, False) for i in np.concatenate([tumour, normal])]
    )
