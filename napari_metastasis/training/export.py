"""Write a trained network (or an ensemble) in the model contract, with its model card.

The contract (shared with the inference engine and WSInfer-style model zoos)::

    MODEL_DIR/model.safetensors      the weights as plain tensors (data, no code): what this
                                     package loads, into the network named in config.json
    MODEL_DIR/torchscript_model.pt   the same network as TorchScript, for WSInfer and other tools
                                     (TorchScript is code; this package does not need it)
    MODEL_DIR/config.json            spec_version, architecture, num_classes, class_names,
                                     patch_size_pixels, spacing_um_px, transform (Resize to the
                                     network's input, ToTensor), and the package network spec
    MODEL_DIR/README.md              the model card: what it was trained on, how it was validated
    MODEL_DIR/model_card.json        the same numbers for programs (incl. the chosen threshold)

Normalisation lives inside the network, so the transform list is ``Resize`` + ``ToTensor``: the
Resize makes WSInfer feed the network the size it was trained on whatever it reads from the slide.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from napari_metastasis.models.networks import Ensemble, network_spec
from napari_metastasis.models.safe_weights import NETWORK_KEY, SAFETENSORS_FILE
from napari_metastasis.models.threshold import MODEL_CARD_FILE
from napari_metastasis.outputs.atomic import write_bytes_atomic, write_text_atomic
from napari_metastasis.training.card import render_card

CLASS_NAMES = ("normal", "tumor")
SPEC_VERSION = "1.0"


def contract_config(
    architecture: str, patch_px: int, spacing_um: float, network: dict | None = None
) -> dict:
    config = {
        "spec_version": SPEC_VERSION,
        "architecture": architecture,
        "num_classes": len(CLASS_NAMES),
        "class_names": list(CLASS_NAMES),
        "patch_size_pixels": int(patch_px),
        "spacing_um_px": float(spacing_um),
        "transform": [
            {"name": "Resize", "arguments": {"size": int(patch_px)}},
            {"name": "ToTensor", "arguments": {}},
        ],
    }
    if network is not None:
        config[NETWORK_KEY] = network
    return config


def safetensors_bytes(model: torch.nn.Module) -> bytes:
    """The module's state dict as safetensors (tensors only; contiguous copies)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return save(state, metadata={"format": "pt"})


def export_model(
    members: list[torch.nn.Module],
    out_dir: str | Path,
    *,
    architecture: str,
    patch_px: int,
    spacing_um: float,
    card_markdown: str,
    card_data: dict,
    tta: bool = False,
    config_blocks: Mapping[str, dict] | None = None,
) -> Path:
    """Write ``members`` (averaged when several, over flips/rotations with ``tta``) to ``out_dir``.

    ``config_blocks`` are extra blocks of plain numbers for ``config.json`` (the deposit decision's
    rule, chosen after training): written with the weights so a re-export never drops them.

    The scripted module is checked against the eager one on random input before anything is
    written, so a folder is never left with a model that disagrees with its own training.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for m in members:
        m.eval()
    model = Ensemble(list(members), tta=tta).eval()
    scripted = torch.jit.script(model)
    probe = torch.rand(4, 3, patch_px, patch_px, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.allclose(scripted(probe), model(probe), atol=1e-5):
            raise RuntimeError("the TorchScript export disagrees with the trained network")
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    try:
        spec = network_spec(list(members), tta)
    except ValueError:
        spec = None  # not a package network: TorchScript only
    if spec is not None:
        write_bytes_atomic(out_dir / SAFETENSORS_FILE, safetensors_bytes(model))
    write_bytes_atomic(out_dir / "torchscript_model.pt", buf.getvalue())
    config = {**contract_config(architecture, patch_px, spacing_um, spec), **(config_blocks or {})}
    write_text_atomic(out_dir / "config.json", json.dumps(config, indent=2) + "\n")
    write_text_atomic(out_dir / "README.md", card_markdown)
    write_text_atomic(
        out_dir / MODEL_CARD_FILE, json.dumps(card_data, indent=2, default=float) + "\n"
    )
    return out_dir


def publish_model(
    members: list[torch.nn.Module], out_dir: str | Path, card: dict, *, tta: bool = False
) -> Path:
    """The last step of every training route (``train`` and the bundled recipe): the card rendered
    to Markdown and written with the weights, so the folder's README and JSON say the same thing."""
    inp = card["input"]
    return export_model(
        members,
        out_dir,
        architecture=card["architecture"],
        patch_px=inp["patch_size_pixels"],
        spacing_um=inp["spacing_um_px"],
        card_markdown=render_card(card),
        card_data=card,
        tta=tta,
        config_blocks=card.get("config_blocks"),
    )
