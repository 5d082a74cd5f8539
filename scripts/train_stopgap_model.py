"""Train the stop-gap bundled model (napari_metastasis/models/bundled/default) in a few CPU minutes.

A deliberately small recipe so that ``predict --sample`` and the viewer have a model from day one;
the full training pipeline (napari_metastasis.training) replaces it. Data, all from ../shared/data:

* positives: the Camelyon16 tumour patches (256 px at ~0.243 µm/px, resized to 128 px ≈ 0.5 µm/px);
* negatives: the Camelyon16 normal patches, plus tissue tiles mined from CMU-1-Small-Region (skin,
  0.499 µm/px) and CropBreastSlide (normal breast; no usable µm/px, read at level 0 as ~0.5 µm/px),
  plus a few glass tiles.

Validation holds out Camelyon16 slide tumor_064 (4 tumour, 22 normal patches); the shipped model is
then retrained on everything with the same recipe (tumor_064 holds most of the Camelyon16 normal
patches, which a lymph-node model needs), so the held-out figure estimates the recipe. Usage::

    PYTHONPATH=. python scripts/train_stopgap_model.py --out napari_metastasis/models/bundled/default
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from napari_metastasis.grid import PatchGrid
from napari_metastasis.slide import Slide
from napari_metastasis.tissue import tissue_mask

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
PATCH = 128
SPACING = 0.5
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class StopGapCNN(nn.Module):
    """A strided stem and four conv blocks (16-32-64-96 channels), average pooling, linear head.

    The stride-2 stem keeps training to CPU minutes on 128-px patches.
    """

    def __init__(self, num_classes: int = 2):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        ]
        channels = [16, 16, 32, 64, 96]
        for cin, cout in itertools.pairwise(channels):
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(channels[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def camelyon_patches() -> tuple[list[np.ndarray], list[int], list[str]]:
    images, labels, slides = [], [], []
    folder = DATA / "patches" / "camelyon16_256"
    for line in (folder / "labels.csv").read_text().splitlines()[1:]:
        file, label, slide = line.split(",")[:3]
        rgb = Image.open(folder / file).convert("RGB").resize((PATCH, PATCH), Image.BILINEAR)
        images.append(np.asarray(rgb))
        labels.append(int(label))
        slides.append(slide)
    return images, labels, slides


def slide_tiles(path: Path, mpp: float | None, max_tiles: int, glass: int, seed: int):
    """Tissue tiles (and a few glass tiles) of a slide at 0.5 µm/px, all negatives."""
    rng = np.random.default_rng(seed)
    with Slide(path, mpp=mpp) as slide:
        res = slide.require_resolution()
        w, h = slide.dimensions
        grid = PatchGrid(w, h, res.mpp_x, res.mpp_y, PATCH, SPACING, stride_um=PATCH * SPACING / 2)
        fractions = tissue_mask(slide).tissue_fraction(grid, grid.all_cells())
        cells = grid.all_cells()
        tissue = cells[fractions >= 0.5]
        empty = cells[fractions == 0]
        chosen = tissue[rng.permutation(len(tissue))[:max_tiles]]
        chosen = np.concatenate([chosen, empty[rng.permutation(len(empty))[:glass]]])
        tiles = []
        for x, y, bw, bh in grid.cell_boxes(chosen):
            tile = slide.read_region(0, x, y, bw, bh)
            tiles.append(np.asarray(Image.fromarray(tile).resize((PATCH, PATCH), Image.BILINEAR)))
    return tiles


def augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flips, 90° rotations and a stain-ish colour jitter on float (N, 3, H, W) in [0, 1]."""
    if torch.rand(1, generator=gen) < 0.5:
        batch = batch.flip(3)
    batch = torch.rot90(batch, int(torch.randint(4, (1,), generator=gen)), dims=(2, 3))
    n = batch.shape[0]
    gain = 1 + 0.12 * (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1)
    bias = 0.06 * (torch.rand(n, 3, 1, 1, generator=gen) * 2 - 1)
    grey = batch.mean(1, keepdim=True)
    sat = 1 + 0.3 * (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1)
    batch = grey + (batch - grey) * sat
    return (batch * gain + bias).clamp(0, 1)


def to_input(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return x


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def train(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> StopGapCNN:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = StopGapCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=epochs * ((len(x) + 31) // 32)
    )
    # Balance classes: tumour patches are few, so weight the loss by inverse frequency.
    counts = torch.bincount(y, minlength=2).float()
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (2 * counts))
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), 32):
            idx = order[i : i + 32]
            logits = model(normalise(augment(x[idx], gen)))
            loss = loss_fn(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if epoch % 5 == 4 or epoch == epochs - 1:
            print(f"epoch {epoch + 1}: loss {total / len(x):.3f}", flush=True)
    return model.eval()


@torch.no_grad()
def evaluate(model: StopGapCNN, x: torch.Tensor, y: torch.Tensor) -> dict:
    p = torch.softmax(model(normalise(x)), 1)[:, 1]
    pred = (p >= 0.5).long()
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    return {
        "n": len(y),
        "accuracy": round(float((pred == y).float().mean()), 3),
        "sensitivity": round(tp / max(1, int((y == 1).sum())), 3),
        "specificity": round(tn / max(1, int((y == 0).sum())), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.time()

    cam_images, cam_labels, cam_slides = camelyon_patches()
    negatives = slide_tiles(DATA / "slides/aperio_svs/CMU-1-Small-Region.svs", None, 120, 10, 1)
    negatives += slide_tiles(DATA / "slides/generic_tiff/CropBreastSlide.tiff", 0.5, 60, 0, 2)
    print(f"{len(cam_images)} Camelyon16 patches, {len(negatives)} mined negatives")

    cam_x = to_input(np.stack(cam_images))
    cam_y = torch.tensor(cam_labels)
    neg_x = to_input(np.stack(negatives))
    neg_y = torch.zeros(len(negatives), dtype=torch.long)
    held = torch.tensor([s == "tumor_064" for s in cam_slides])

    # Camelyon patches are repeated so that they are not drowned by the mined negatives.
    def fit_set(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([cam_x[mask]] * 3 + [neg_x])
        y = torch.cat([cam_y[mask]] * 3 + [neg_y])
        return x, y

    model = train(*fit_set(~held), args.epochs, args.seed)
    validation = evaluate(model, cam_x[held], cam_y[held])
    print("held-out tumor_064:", validation)

    model = train(*fit_set(torch.ones_like(held)), args.epochs, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.jit.script(model).save(str(args.out / "torchscript_model.pt"))
    config = {
        "spec_version": "1.0",
        "architecture": "stopgap-cnn",
        "num_classes": 2,
        "class_names": ["normal", "tumor"],
        "patch_size_pixels": PATCH,
        "spacing_um_px": SPACING,
        "transform": [
            {"name": "Resize", "arguments": {"size": PATCH}},
            {"name": "ToTensor"},
            {"name": "Normalize", "arguments": {"mean": MEAN, "std": STD}},
        ],
        "name": "default",
        "description": "Stop-gap CNN trained in minutes on 57 Camelyon16 patches + mined negatives",
        "recipe_validation_held_out_tumor_064": validation,
        "training_seconds": round(time.time() - started, 1),
    }
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"written to {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
