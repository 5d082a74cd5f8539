"""Run WSInfer 0.6.1's CLI inside its own venv, with the two shims it needs on these machines.

* The PyPI torchvision wheel links CUDA libraries, so on a CPU-only torch its C extension does not
  load and ``torchvision::nms`` (and ``qnms``) are never declared; torchvision's import then fails
  registering fake kernels for them. WSInfer only uses torchvision's transforms, so declaring the
  operators' schemas (no kernels) is enough.
* WSInfer's CLI lists the model zoo at import, which downloads the registry from the Hugging Face
  hub. The hub is unreachable here, so a placeholder registry is read from a private HOME instead.

    $VENV/bin/python benchmarks/wsinfer_peer.py run --wsi-dir DIR --results-dir OUT --model-path M
    $VENV/bin/python benchmarks/wsinfer_peer.py --check
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

PLACEHOLDER_REGISTRY = {
    "models": {
        "placeholder": {
            "description": "offline placeholder: models are given with --model-path",
            "hf_repo_id": "none/none",
            "hf_revision": "main",
        }
    }
}


_LIBRARIES = []  # a Library's definitions last as long as the object


def _declare_nms() -> None:
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018  (declared when torchvision's extension loads)
    except (AttributeError, RuntimeError):
        library = torch.library.Library("torchvision", "DEF")
        for name in ("nms", "qnms"):
            library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARIES.append(library)


def _offline_zoo() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    home = Path(os.environ.get("WSINFER_PEER_HOME") or tempfile.mkdtemp(prefix="wsinfer-home-"))
    os.environ["HOME"] = str(home)
    registry = home / ".wsinfer-zoo" / "wsinfer-zoo-registry.json"
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_text(json.dumps(PLACEHOLDER_REGISTRY))
    import wsinfer_zoo.client as client

    original = client.load_registry
    client.load_registry = lambda registry_file=None: original(registry_file or registry)


def main() -> None:
    _declare_nms()
    _offline_zoo()
    import torchvision.transforms  # noqa: F401  (fails here if the shim is not enough)
    from wsinfer.cli.cli import cli

    if sys.argv[1:] == ["--check"]:
        import wsinfer

        print(f"wsinfer {wsinfer.__version__} ready")
        return
    cli(prog_name="wsinfer")


if __name__ == "__main__":
    main()
