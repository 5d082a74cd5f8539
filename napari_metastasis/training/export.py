"""Write a trained network (or an ensemble) in the model contract, with its model card.

The contract (shared with the inference engine and WSInfer-style model zoos)::

    MODEL_DIR/torchscript_model.pt   (N, 3, P, P) float in [0, 1] -> (N, num_classes) logits
    MODEL_DIR/model.pt2              the same network as a torch.export program
    MODEL_DIR/config.json            spec_version, architecture, num_classes, class_names,
                                     patch_size_pixels, spacing_um_px, transform
    MODEL_DIR/README.md              the model card: what it was trained on, how it was validated
    MODEL_DIR/model_card.json        the same numbers for programs (incl. the chosen threshold)

Normalisation lives inside the TorchScript module, so the transform list is ``Resize`` to the patch
size (what WSInfer needs to feed the network patches of the size it was trained on) and ``ToTensor``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from ..atomic import write_bytes_atomic, write_text_atomic
from ..models.exported import EXPORTED_FILE, export_program
from ..models.threshold import MODEL_CARD_FILE
from .networks import Ensemble

CLASS_NAMES = ("normal", "tumor")
SPEC_VERSION = "1.0"


def contract_config(architecture: str, patch_px: int, spacing_um: float) -> dict:
    return {
        "spec_version": SPEC_VERSION,
        "architecture": architecture,
        "num_classes": len(CLASS_NAMES),
        "class_names": list(CLASS_NAMES),
        "patch_size_pixels": int(patch_px),
        "spacing_um_px": float(spacing_um),
        # WSInfer reads each patch at the slide's own resolution (96 px for 48 px at 1 µm/px on a
        # 0.5 µm/px slide) and applies this list as it is: the Resize makes it feed the network
        # the size it was trained on.
        "transform": [
            {"name": "Resize", "arguments": {"size": int(patch_px)}},
            {"name": "ToTensor", "arguments": {}},
        ],
    }


def export_model(
    members: list[torch.nn.Module],
    out_dir: str | Path,
    *,
    architecture: str,
    patch_px: int,
    spacing_um: float,
    card_markdown: str,
    card_data: dict,
) -> Path:
    """Script ``members`` (averaged when several) into ``out_dir`` in the model contract.

    The scripted module is checked against the eager one on random input before anything is
    written, so a folder is never left with a model that disagrees with its own training.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for m in members:
        m.eval()
    model = Ensemble(list(members)).eval()
    scripted = torch.jit.script(model)
    probe = torch.rand(4, 3, patch_px, patch_px, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.allclose(scripted(probe), model(probe), atol=1e-5):
            raise RuntimeError("the TorchScript export disagrees with the trained network")
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    write_bytes_atomic(out_dir / "torchscript_model.pt", buf.getvalue())  # what WSInfer loads
    export_program(model, probe, out_dir / EXPORTED_FILE)  # what the loader prefers
    config = contract_config(architecture, patch_px, spacing_um)
    write_text_atomic(out_dir / "config.json", json.dumps(config, indent=2) + "\n")
    write_text_atomic(out_dir / "README.md", card_markdown)
    write_text_atomic(
        out_dir / MODEL_CARD_FILE, json.dumps(card_data, indent=2, default=float) + "\n"
    )
    return out_dir
