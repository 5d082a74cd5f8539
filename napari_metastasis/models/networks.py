"""Small CNNs defined in the package (no downloaded weights exist where this runs).

With a few dozen annotated patches, a network of ~0.3 M parameters is plenty: width mattered little
in our trials, augmentation and negative mining mattered a lot. Input normalisation lives inside the
network, so the model contract's transform is just ``ToTensor`` (pixels in [0, 1]).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: Mean/std of RGB in [0, 1] over typical H&E tissue (fixed, so exported models are self-contained).
HE_MEAN = (0.70, 0.55, 0.70)
HE_STD = (0.18, 0.20, 0.15)


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """VGG-like: four stages (two 3x3 convs, then one), max-pooling, global average, one logit.

    ``forward`` returns (N, 2) logits ``[0, z]``, so a softmax gives (1 - p, p) with p = sigmoid(z),
    matching the contract's (N, num_classes) logits while training uses one binary logit.
    """

    def __init__(self, width: int = 24, dropout: float = 0.2):
        super().__init__()
        self.width = width
        w = (width, 2 * width, 4 * width, int(5.33 * width))
        layers: list[nn.Module] = []
        layers += [*_conv(3, w[0]), *_conv(w[0], w[0]), nn.MaxPool2d(2)]
        layers += [*_conv(w[0], w[1]), *_conv(w[1], w[1]), nn.MaxPool2d(2)]
        layers += [*_conv(w[1], w[2]), *_conv(w[2], w[2]), nn.MaxPool2d(2)]
        layers += [*_conv(w[2], w[3])]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(w[3], 1)
        self.register_buffer("mean", torch.tensor(HE_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(HE_STD).view(1, 3, 1, 1))

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) tumour logit of (N, 3, H, W) RGB in [0, 1]."""
        x = (x - self.mean) / self.std
        x = self.features(x)
        x = torch.flatten(torch.mean(x, dim=(2, 3)), 1)
        return self.head(self.dropout(x)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.logit(x)
        return torch.stack([torch.zeros_like(z), z], dim=1)


#: The eight views of the dihedral group: (quarter turns, flip) pairs.
DIHEDRAL_VIEWS = tuple((k, f) for f in (False, True) for k in range(4))


class Ensemble(nn.Module):
    """Averages the tumour probabilities of several networks (e.g. seeds or folds) in one module,
    optionally over the 8 flips and 90° rotations of each patch (test-time augmentation).

    Tissue has no up or down, so a patch and its turned copies should get one answer. With
    ``tta`` the 8 views are dealt out to the members in turn (with 3 members: 3, 3 and 2 views
    each), so a patch costs 8 forward passes whatever the member count, not 8 per member: on the
    old bundled model every member seeing every view gave the same validation AUC and no steadier
    answers between two encodings of a slide, at three times the cost. Returns logits
    ``[0, logit(mean p)]`` so the contract's softmax gives back the mean probability.
    """

    def __init__(self, members: list[nn.Module], tta: bool = False):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.tta = tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        views = 0
        if self.tta:
            n = len(self.members)
            for j, member in enumerate(self.members):
                for i in range(j, 8, n):  # view i of DIHEDRAL_VIEWS
                    total = total + torch.sigmoid(member.logit(_view(x, i)))
                    views += 1
        else:
            for member in self.members:
                total = total + torch.sigmoid(member.logit(x))
                views += 1
        return _probability_logits(total / views)


#: The views of the first pass (:class:`EnsembleViews`): the first two of :data:`DIHEDRAL_VIEWS`, one
#: each by the first two members; chosen on the validation patches (``benchmarks/bench_first_pass.py``:
#: one view cannot settle as many normal patches without settling one the full model puts near the
#: threshold; two follow the eight closely, correlation 0.993, for a quarter of the cost).
FIRST_PASS_VIEWS = (0, 1)


class EnsembleViews(nn.Module):
    """Some of an :class:`Ensemble`'s views, averaged as the ensemble averages all eight: the
    cheap first pass of a run (:mod:`napari_metastasis.pipeline.first_pass`), or the views it left
    out. View ``i`` is seen by member ``i % members``, as in the full model, so each view's
    probability is one of the eight the full model averages. Returns logits ``[0, logit(mean p)]``
    like the ensemble."""

    def __init__(self, members: nn.ModuleList, views: tuple[int, ...]):
        super().__init__()
        self.members = members
        self.views = tuple(views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in self.views:
            member = self.members[i % len(self.members)]
            total = total + torch.sigmoid(member.logit(_view(x, i)))
        return _probability_logits(total / len(self.views))


def first_pass_module(module: nn.Module) -> EnsembleViews | None:
    """The cheap first pass of ``module``: two of its eight views (:data:`FIRST_PASS_VIEWS`), for
    the package's own ensembles with test-time augmentation; None for any other network (it has
    no cheaper pass)."""
    if isinstance(module, Ensemble) and module.tta and len(module.members) >= 2:
        return EnsembleViews(module.members, FIRST_PASS_VIEWS)
    return None


def rest_pass_module(first: EnsembleViews) -> EnsembleViews:
    """The views of the ensemble that ``first`` leaves out: with the first pass's, the full model
    (see :func:`combine_passes`)."""
    rest = tuple(i for i in range(len(DIHEDRAL_VIEWS)) if i not in first.views)
    return EnsembleViews(first.members, rest)


def combine_passes(
    first: torch.Tensor, rest: torch.Tensor, first_views: int, rest_views: int
) -> torch.Tensor:
    """The full model's probabilities from a first pass's and the rest's, each the mean over its
    views: the mean over all of them (equal to the ensemble's to float rounding, ~1e-7)."""
    return (first * first_views + rest * rest_views) / (first_views + rest_views)


def _view(x: torch.Tensor, i: int) -> torch.Tensor:
    """View ``i`` of :data:`DIHEDRAL_VIEWS` of a (N, C, H, W) batch: flipped if ``i >= 4``, then
    turned ``i % 4`` quarter turns."""
    xv = torch.flip(x, dims=[3]) if i >= 4 else x
    return torch.rot90(xv, i % 4, dims=[2, 3]) if i % 4 > 0 else xv


def _probability_logits(p: torch.Tensor) -> torch.Tensor:
    """(N,) probabilities -> (N, 2) logits ``[0, logit(p)]`` whose softmax gives back ``p``."""
    p = p.clamp(1e-6, 1 - 1e-6)
    z = torch.log(p) - torch.log1p(-p)
    return torch.stack([torch.zeros_like(z), z], dim=1)


ARCHITECTURES = {"smallcnn": SmallCNN}


def build_network(name: str = "smallcnn", **kwargs: Any) -> nn.Module:
    try:
        return ARCHITECTURES[name](**kwargs)
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}"
        ) from None


def network_spec(members: list[nn.Module], tta: bool) -> dict:
    """The data that rebuilds an :class:`Ensemble` of :class:`SmallCNN` (see :func:`build_from_spec`)."""
    first = members[0]
    if not all(isinstance(m, SmallCNN) for m in members):
        raise ValueError("only ensembles of SmallCNN can be described as data")
    return {
        "name": "smallcnn_ensemble",
        "width": int(first.width),
        "members": len(members),
        "tta": bool(tta),
    }


def build_from_spec(spec: dict) -> Ensemble:
    """An untrained :class:`Ensemble` shaped as ``spec`` says; its weights come from a file.

    Only plain numbers are read from ``spec``: the code is the package's, never the file's.
    """
    if not isinstance(spec, dict) or spec.get("name") != "smallcnn_ensemble":
        raise ValueError(
            f"unknown network {spec.get('name') if isinstance(spec, dict) else spec!r}"
        )
    width, count, tta = spec.get("width"), spec.get("members"), spec.get("tta", False)
    if not isinstance(width, int) or not 1 <= width <= 256:
        raise ValueError(f"network width must be a whole number 1-256, got {width!r}")
    if not isinstance(count, int) or not 1 <= count <= 16:
        raise ValueError(f"network members must be a whole number 1-16, got {count!r}")
    if not isinstance(tta, bool):
        raise ValueError(f"network tta must be true or false, got {tta!r}")
    return Ensemble([SmallCNN(width=width) for _ in range(count)], tta=tta)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
