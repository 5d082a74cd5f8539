"""Model cards: what a model was trained on, how it was checked, and what its numbers mean.

The card is built as plain data (saved as ``model_card.json``) and rendered to Markdown (saved as
the model folder's ``README.md`` and pasted into docs/model-card.md for the bundled model), so both say the same thing.
"""

from __future__ import annotations

import datetime as _dt
import math

from napari_metastasis import __version__


def base_card(
    name: str, architecture: str, parameters: int, patch_px: int, spacing_um: float
) -> dict:
    return {
        "name": name,
        "date": _dt.date.today().isoformat(),
        "package_version": __version__,
        "architecture": architecture,
        "parameters": int(parameters),
        "input": {
            "patch_size_pixels": patch_px,
            "spacing_um_px": spacing_um,
            "field_of_view_um": patch_px * spacing_um,
            "transform": (
                f"Resize to {patch_px} px, ToTensor (RGB in [0, 1]); normalisation is inside the "
                "network"
            ),
        },
        "classes": ["normal", "tumor"],
        "weights": (
            "model.safetensors (tensors only) loaded into the network defined in "
            "napari_metastasis/models/networks.py; torchscript_model.pt beside it is for WSInfer"
        ),
    }


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _table(rows: list[tuple[str, object]]) -> list[str]:
    out = ["| | |", "|---|---|"]
    out += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    return out


def render_card(card: dict, heading: str = "#") -> str:
    """Markdown for a card dict (sections appear when their keys are present)."""
    h2 = heading + "#"
    lines = [f"{heading} Model card: {card['name']}", ""]
    inp = card["input"]
    lines += _table(
        [
            ("architecture", card["architecture"]),
            ("parameters", f"{card['parameters']:,}"),
            (
                "input",
                f"{inp['patch_size_pixels']} px at {inp['spacing_um_px']:g} µm/px ({inp['field_of_view_um']:g} µm)",
            ),
            ("output", "(N, 2) logits for (normal, tumor); softmax gives the tumour probability"),
            ("weights", card.get("weights", "torchscript_model.pt")),
            ("test-time augmentation", card.get("test_time_augmentation", "off")),
            ("decision threshold", card.get("threshold", 0.5)),
            ("threshold chosen by", card.get("threshold_rule", "default 0.5")),
            ("trained", f"{card['date']} with napari-metastasis {card['package_version']}"),
        ]
    )
    if "intended_use" in card:
        lines += ["", f"{h2} Intended use", "", card["intended_use"]]
    if "data" in card:
        lines += ["", f"{h2} Training data", ""]
        lines += [f"- {item}" for item in card["data"]]
    if "training" in card:
        lines += ["", f"{h2} Training", ""]
        lines += [f"- {item}" for item in card["training"]]
    if "validation" in card:
        val = card["validation"]
        lines += ["", f"{h2} Validation", "", val.get("scheme", "")]
        for title, metrics in val.get("results", {}).items():
            lines += ["", f"**{title}**", ""]
            lines += _table(list(metrics.items()))
    if "deposit_decision" in card:
        decision = card["deposit_decision"]
        lines += ["", f"{h2} Deposit decision", "", decision.get("note", ""), ""]
        lines += _table(list(decision.get("rule", {}).items()))
    if "node_validation" in card:
        nodes = card["node_validation"]
        lines += ["", f"{h2} Node-level validation", "", nodes.get("note", ""), ""]
        lines += [nodes.get("table", "")]
    if "calibration" in card:
        cal = card["calibration"]
        lines += ["", f"{h2} Calibration", "", cal.get("note", ""), ""]
        lines += ["| predicted | patches | mean predicted | observed tumour |", "|---|---|---|---|"]
        edges = cal["bin_edges"]
        for i, n in enumerate(cal["bin_count"]):
            if n:
                lines.append(
                    f"| {edges[i]:.1f}-{edges[i + 1]:.1f} | {n} | "
                    f"{cal['bin_mean_probability'][i]:.2f} | {cal['bin_fraction_positive'][i]:.2f} |"
                )
    if "whole_slide_false_positives" in card:
        lines += ["", f"{h2} False positives on whole slides without metastasis", ""]
        if card.get("whole_slide_false_positives_note"):
            lines += [card["whole_slide_false_positives_note"], ""]
        slides = card["whole_slide_false_positives"]
        if slides:
            keys = list(next(iter(slides.values())))
            lines += ["| slide | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
            for name, row in slides.items():
                lines.append(f"| {name} | " + " | ".join(_fmt(row[k]) for k in keys) + " |")
    history = card.get("history")
    if isinstance(history, dict) and "epoch" in history:
        lines += ["", f"{h2} Per-epoch curves", ""]
        series = {k: v for k, v in history.items() if k != "epoch"}
        lines += ["| epoch | " + " | ".join(series) + " |", "|---" * (len(series) + 1) + "|"]
        for i, epoch in enumerate(history["epoch"]):
            cells = [
                " / ".join(_fmt(v[i]) for v in values)  # one value per fold
                if values and isinstance(values[0], list)
                else _fmt(values[i])
                for values in series.values()
            ]
            lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    if "limitations" in card:
        lines += ["", f"{h2} Limitations", ""]
        lines += [f"- {item}" for item in card["limitations"]]
    if "reproduce" in card:
        lines += ["", f"{h2} Reproduce", "", "```bash", card["reproduce"], "```"]
    return "\n".join(lines) + "\n"
