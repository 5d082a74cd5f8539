"""The fixed, seeded splits of the shared PatchCamelyon/Kaggle patches, in one place.

Training, the model card and the node validation (``benchmarks/bench_nodes.py``) must agree on which
patches were never trained on and never used for a choice: a node slide built from a patch the
network learnt from would flatter it. PCam carries no slide ids, so the split is by patch,
stratified by label, with a fixed seed per folder:

- ``pcam_kaggle_5k``: 20 % test, 10 % validation, 70 % training (seed 2024, as every card so far);
- ``pcam_kaggle_more`` (added later): 40 % test, 20 % validation, 40 % training (seed 2027): a
  larger test share, because the node validation lays held-out patches out as whole node slides.

"test" patches are the held-out set: the card's test numbers and the node slides of the validation
are built only from them. "val" patches are where thresholds and the deposit decision are chosen
(the validation nodes); "train" patches are the only ones a network learns from.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: folder -> (seed, test share, validation share)
SPLITS: dict[str, tuple[int, float, float]] = {
    "pcam_kaggle_5k": (2024, 0.2, 0.1),
    "pcam_kaggle_more": (2027, 0.4, 0.2),
}
PARTS = ("train", "val", "test")


def split_labels(
    labels: np.ndarray, seed: int, test_share: float, val_share: float
) -> dict[str, np.ndarray]:
    """Stratified train / val / test indices of ``labels`` (sorted; fixed by ``seed``)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {part: [] for part in PARTS}
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(len(idx) * test_share)
        n_val = round(len(idx) * val_share)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def split_folder_labels(folder: str, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The split of one shared PCam folder (by its name in :data:`SPLITS`)."""
    seed, test_share, val_share = SPLITS[folder]
    return split_labels(labels, seed, test_share, val_share)


@dataclass(frozen=True)
class PatchFiles:
    """Patch files and their labels (1 = tumour in the centre 32 x 32 px)."""

    paths: list[Path]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


def read_kaggle_labels(folder: Path) -> tuple[list[str], np.ndarray]:
    """``train_labels.csv`` of a Kaggle-layout folder, in file order (ids, labels)."""
    with (folder / "train_labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["id"] for r in rows], np.array([int(r["label"]) for r in rows], dtype=np.int64)


def pcam_part(
    data_dir: str | Path, part: str, folders: tuple[str, ...] = tuple(SPLITS)
) -> PatchFiles:
    """The ``part`` ("train", "val" or "test") of the shared PCam folders, as files and labels.

    Files are in ``train_labels.csv`` order within each folder (the order training reads them in,
    which the seeded split is defined on), folders in :data:`SPLITS` order. A folder missing
    from ``data_dir`` is skipped (older copies of the shared data lack ``pcam_kaggle_more``).
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    paths: list[Path] = []
    labels: list[np.ndarray] = []
    for name in folders:
        folder = Path(data_dir) / "patches" / name
        if not (folder / "train_labels.csv").is_file():
            continue
        ids, folder_labels = read_kaggle_labels(folder)
        index = split_folder_labels(name, folder_labels)[part]
        paths.extend(folder / "train" / f"{ids[i]}.tif" for i in index)
        labels.append(folder_labels[index])
    return PatchFiles(paths, np.concatenate(labels) if labels else np.zeros(0, np.int64))
