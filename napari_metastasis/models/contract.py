"""The model contract: a folder with ``torchscript_model.pt`` and a WSInfer-style ``config.json``.

Sharing WSInfer's config format means models trained for WSInfer (and WSInfer's own zoo, once
downloaded by the user) work here unchanged, and ours work there. A config looks like::

    {
      "spec_version": "1.0",
      "architecture": "resnet18",
      "num_classes": 2,
      "class_names": ["notumor", "tumor"],
      "patch_size_pixels": 224,
      "spacing_um_px": 0.5,
      "transform": [
        {"name": "Resize", "arguments": {"size": 224}},
        {"name": "ToTensor"},
        {"name": "Normalize", "arguments": {"mean": [0.485, 0.456, 0.406],
                                            "std": [0.229, 0.224, 0.225]}}
      ]
    }

``patch_size_pixels`` at ``spacing_um_px`` is the physical field of view of one patch (224 px at
0.5 µm/px is 112 µm); ``Resize`` is the network's input size. Extra keys are kept in
:attr:`ModelConfig.extra` and ignored, except ``positive_class`` (our extension: the class whose
probability the heatmap shows, when no class is called tumour or metastasis) and
``napari_metastasis_decision`` (the deposit decision's rule, plain numbers: see
:mod:`napari_metastasis.deposit_decision`).

Validation is strict and names the field at fault, because a model folder is usually made by hand
and a silent misreading (wrong spacing, swapped classes) would produce plausible-looking nonsense.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "torchscript_model.pt"
SUPPORTED_SPEC_VERSIONS = ("1.0",)
KNOWN_TRANSFORMS = ("Resize", "ToTensor", "Normalize")

#: Class names taken as the positive (tumour) class, compared case-insensitively.
POSITIVE_CLASS_NAMES = ("tumor", "tumour", "metastasis", "metastases", "cancer", "malignant")


@dataclass(frozen=True)
class TransformStep:
    name: str
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """A validated ``config.json``."""

    spec_version: str
    architecture: str
    num_classes: int
    class_names: tuple[str, ...]
    patch_size_pixels: int
    spacing_um_px: float
    transform: tuple[TransformStep, ...]
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the tensor the network takes: ``Resize``'s size, else the patch."""
        for step in self.transform:
            if step.name == "Resize":
                size = step.arguments["size"]
                return (size, size) if isinstance(size, int) else (size[0], size[1])
        return self.patch_size_pixels, self.patch_size_pixels

    @property
    def resize_interpolation(self) -> int:
        """Pillow filter code of the ``Resize`` step (torchvision's default: 2, bilinear)."""
        for step in self.transform:
            if step.name == "Resize":
                return int(step.arguments.get("interpolation", 2))
        return 2

    @property
    def normalize(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) of the ``Normalize`` step, or None."""
        for step in self.transform:
            if step.name == "Normalize":
                return tuple(step.arguments["mean"]), tuple(step.arguments["std"])
        return None

    @property
    def patch_size_um(self) -> float:
        return self.patch_size_pixels * self.spacing_um_px

    def positive_class_index(self, choice: str | int | None = None) -> int:
        """Index of the class the heatmap shows.

        ``choice`` (a class name or index) wins; then the config's ``positive_class``; then the
        class named tumour/metastasis; a single-class model's only class; else an error that lists
        the classes so the user can choose.
        """
        choice = choice if choice is not None else self.extra.get("positive_class")
        names = [n.lower() for n in self.class_names]
        if choice is not None:
            if isinstance(choice, int) or (isinstance(choice, str) and choice.isdigit()):
                index = int(choice)
                if 0 <= index < self.num_classes:
                    return index
            elif choice.lower() in names:
                return names.index(choice.lower())
            raise ModelError(
                f"positive class {choice!r} is not one of the model's classes {list(self.class_names)}"
            )
        for index, name in enumerate(names):
            if name in POSITIVE_CLASS_NAMES:
                return index
        if self.num_classes == 1:
            return 0
        raise ModelError(
            f"none of the model's classes {list(self.class_names)} is called tumor or metastasis; "
            "choose the positive class (--positive-class NAME, or 'positive_class' in config.json)"
        )

    def to_dict(self) -> dict:
        data = dict(self.extra)
        data.update(
            spec_version=self.spec_version,
            architecture=self.architecture,
            num_classes=self.num_classes,
            class_names=list(self.class_names),
            patch_size_pixels=self.patch_size_pixels,
            spacing_um_px=self.spacing_um_px,
            transform=[
                {"name": s.name, "arguments": dict(s.arguments)}
                if s.arguments
                else {"name": s.name}
                for s in self.transform
            ],
        )
        return data


class _Fields:
    """Field readers that raise ``ModelError`` naming the file and the field."""

    def __init__(self, data: dict, source: str):
        self.data = data
        self.source = source

    def error(self, name: str, problem: str) -> ModelError:
        return ModelError(f"{self.source}: field '{name}' {problem}")

    def get(self, name: str) -> Any:
        if name not in self.data:
            raise ModelError(f"{self.source}: missing required field '{name}'")
        return self.data[name]

    def string(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str) or not value.strip():
            raise self.error(name, f"must be a non-empty string, got {value!r}")
        return value

    def positive_int(self, name: str) -> int:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be a whole number, got {value!r}")
        if value <= 0:
            raise self.error(name, f"must be greater than 0, got {value}")
        return value

    def positive_float(self, name: str) -> float:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise self.error(name, f"must be greater than 0, got {value}")
        return float(value)


def parse_config(data: Any, source: str = CONFIG_FILE) -> ModelConfig:
    """Validate a parsed ``config.json``; ``source`` names it in error messages."""
    if not isinstance(data, dict):
        raise ModelError(f"{source}: must hold a JSON object, got {type(data).__name__}")
    fields = _Fields(data, source)
    spec_version = str(fields.get("spec_version"))
    if spec_version not in SUPPORTED_SPEC_VERSIONS:
        raise fields.error(
            "spec_version", f"is {spec_version!r}; supported: {', '.join(SUPPORTED_SPEC_VERSIONS)}"
        )
    architecture = fields.string("architecture")
    num_classes = fields.positive_int("num_classes")
    class_names = fields.get("class_names")
    if not isinstance(class_names, list) or not all(
        isinstance(n, str) and n.strip() for n in class_names
    ):
        raise fields.error("class_names", "must be a list of non-empty strings")
    if len(class_names) != num_classes:
        raise fields.error(
            "class_names", f"lists {len(class_names)} names but num_classes is {num_classes}"
        )
    if len({n.lower() for n in class_names}) != len(class_names):
        raise fields.error("class_names", f"has duplicate names: {class_names}")
    patch_size = fields.positive_int("patch_size_pixels")
    spacing = fields.positive_float("spacing_um_px")
    transform = _parse_transform(fields.get("transform"), fields)
    known = {
        "spec_version",
        "architecture",
        "num_classes",
        "class_names",
        "patch_size_pixels",
        "spacing_um_px",
        "transform",
    }
    extra = {k: v for k, v in data.items() if k not in known}
    config = ModelConfig(
        spec_version,
        architecture,
        num_classes,
        tuple(class_names),
        patch_size,
        spacing,
        transform,
        extra,
    )
    if "positive_class" in extra:
        config.positive_class_index()  # fail now, naming the field, rather than at predict time
    from ..deposit_decision import CONFIG_KEY, DecisionRule

    if CONFIG_KEY in extra:  # the deposit decision's numbers: checked now, not at the verdict
        DecisionRule.from_dict(extra[CONFIG_KEY], f"{source}: field '{CONFIG_KEY}'")
    return config


def _parse_transform(steps: Any, fields: _Fields) -> tuple[TransformStep, ...]:
    if not isinstance(steps, list):
        raise fields.error("transform", "must be a list of {name, arguments} steps")
    parsed: list[TransformStep] = []
    for i, step in enumerate(steps):
        where = f"transform[{i}]"
        if not isinstance(step, dict) or "name" not in step:
            raise fields.error(where, "must be an object with a 'name'")
        name = step["name"]
        if name not in KNOWN_TRANSFORMS:
            raise fields.error(
                where, f"is an unknown transform {name!r}; known: {', '.join(KNOWN_TRANSFORMS)}"
            )
        args = step.get("arguments") or {}
        if not isinstance(args, dict):
            raise fields.error(f"{where}.arguments", "must be an object")
        args = _transform_arguments(name, args, where, fields)
        parsed.append(TransformStep(name, args))
    names = [s.name for s in parsed]
    if "ToTensor" not in names:
        raise fields.error("transform", "must include ToTensor (the network takes floats)")
    if names.count("Resize") > 1 or names.count("Normalize") > 1 or names.count("ToTensor") > 1:
        raise fields.error("transform", f"repeats a step: {names}")
    if "Normalize" in names and names.index("Normalize") < names.index("ToTensor"):
        raise fields.error("transform", "has Normalize before ToTensor")
    return tuple(parsed)


#: The arguments WSInfer passes on to each torchvision transform (``cls(**arguments)``) that a JSON
#: config can express; anything else would make torchvision raise in WSInfer, so it is refused here.
TRANSFORM_ARGUMENTS = {
    "Resize": ("size", "interpolation", "max_size", "antialias"),
    "ToTensor": (),
    "Normalize": ("mean", "std", "inplace"),
}
#: torchvision's Resize takes Pillow's integer filter codes for ``interpolation`` (what JSON can
#: hold): 0 nearest, 1 Lanczos, 2 bilinear (its default), 3 bicubic, 4 box, 5 Hamming.
PIL_INTERPOLATIONS = {
    0: "nearest",
    1: "lanczos",
    2: "bilinear",
    3: "bicubic",
    4: "box",
    5: "hamming",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _transform_arguments(name: str, args: dict, where: str, fields: _Fields) -> dict:
    """Checked arguments of one step, as torchvision (and so WSInfer) would take them."""
    unknown = sorted(set(args) - set(TRANSFORM_ARGUMENTS[name]))
    if unknown:
        allowed = ", ".join(TRANSFORM_ARGUMENTS[name]) or "none"
        raise fields.error(
            f"{where}.arguments", f"has {unknown} which {name} does not take (it takes: {allowed})"
        )
    if name == "Resize":
        size = args.get("size")
        if isinstance(size, list) and len(size) == 1:
            size = size[0]  # torchvision reads a one-element list as the int
        square = isinstance(size, int) and not isinstance(size, bool) and size > 0
        pair = isinstance(size, list) and len(size) == 2 and all(_is_int(s) and s > 0 for s in size)
        if not (square or pair):
            raise fields.error(
                f"{where}.arguments.size", f"must be a size in pixels > 0, got {args.get('size')!r}"
            )
        out: dict[str, Any] = {"size": size if square else list(size or [])}
        if args.get("interpolation") is not None:
            code = args["interpolation"]
            if not _is_int(code) or code not in PIL_INTERPOLATIONS:
                raise fields.error(
                    f"{where}.arguments.interpolation",
                    f"must be one of Pillow's filter codes {sorted(PIL_INTERPOLATIONS)} "
                    f"({', '.join(PIL_INTERPOLATIONS.values())}), got {code!r}",
                )
            out["interpolation"] = code
        if args.get("max_size") is not None:
            max_size = args["max_size"]
            if not square or not _is_int(max_size) or max_size <= (size or 0):
                raise fields.error(
                    f"{where}.arguments.max_size",
                    f"must be a whole number above an int size, got {max_size!r}",
                )
            out["max_size"] = max_size
        if args.get("antialias") is not None:
            if not isinstance(args["antialias"], bool):
                raise fields.error(f"{where}.arguments.antialias", "must be true or false")
            out["antialias"] = args["antialias"]  # patches are PIL images: always antialiased
        return out
    if name == "Normalize":
        for key in ("mean", "std"):
            values = args.get(key)
            if (
                not isinstance(values, list)
                or len(values) not in (1, 3)
                or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                    for v in values
                )
            ):
                raise fields.error(
                    f"{where}.arguments.{key}",
                    f"must be 3 numbers (R, G, B) or 1 for all, got {values!r}",
                )
        if any(v <= 0 for v in args["std"]):
            raise fields.error(f"{where}.arguments.std", "must be greater than 0")
        if "inplace" in args and not isinstance(args["inplace"], bool):
            raise fields.error(f"{where}.arguments.inplace", "must be true or false")
        return {
            "mean": [float(v) for v in args["mean"]] * (3 // len(args["mean"])),
            "std": [float(v) for v in args["std"]] * (3 // len(args["std"])),
            **({"inplace": args["inplace"]} if "inplace" in args else {}),
        }
    return {}


def load_config(folder: str | Path) -> ModelConfig:
    """Read and validate ``folder/config.json``."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    source = f"{folder.name}/{CONFIG_FILE}"
    if not folder.is_dir():
        raise ModelError(f"{folder}: model folder not found")
    if not path.is_file():
        raise ModelError(f"{folder}: no {CONFIG_FILE} in the model folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{source}: cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"{source}: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise ModelError(f"{source}: JSON is nested too deeply to be a model config") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ModelError(f"{source}: not a usable JSON file ({exc})") from exc
    return parse_config(data, source)
