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
:mod:`napari_metastasis.clinical.decision`).

A config is validated against ``config.schema.json`` (beside this module): WSInfer's own schema,
narrowed to the transform arguments torchvision takes (WSInfer would fail on the others at run time),
plus our blocks. Validation is strict and names the field at fault in one sentence, because a model
folder is usually made by hand and a silent misreading (wrong spacing, swapped classes) would produce
plausible-looking nonsense.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from napari_metastasis.errors import ModelError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "torchscript_model.pt"

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


#: The JSON Schema a config must satisfy, shipped beside this module: WSInfer's model-config schema
#: narrowed to what torchvision takes, plus our blocks. Its ``x-message`` entries word the errors.
SCHEMA_FILE = "config.schema.json"
#: The fields WSInfer requires, in the order errors are reported.
REQUIRED_FIELDS = (
    "spec_version",
    "architecture",
    "num_classes",
    "class_names",
    "patch_size_pixels",
    "spacing_um_px",
    "transform",
)
_TYPE_NAMES = {
    "integer": "a whole number",
    "number": "a number",
    "string": "a string",
    "array": "a list",
    "object": "an object",
    "boolean": "true or false",
    "null": "null",
}


def config_schema() -> dict[str, Any]:
    """The model-config JSON Schema (a fresh copy)."""
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> Any:
    import jsonschema  # ~0.2 s: only when a model config is read, never for --help

    return jsonschema.Draft202012Validator(config_schema())


def parse_config(data: Any, source: str = CONFIG_FILE) -> ModelConfig:
    """Validate a parsed ``config.json`` against the schema; ``source`` names it in errors, which
    are one sentence naming the field at fault."""
    errors = list(_validator().iter_errors(data))
    if errors:
        first = min(enumerate(errors), key=lambda item: (_rank(item[1]), item[0]))[1]
        raise ModelError(_sentence(first, source))
    _check_beyond_schema(data, source)
    extra = {k: v for k, v in data.items() if k not in REQUIRED_FIELDS}
    config = ModelConfig(
        spec_version=data["spec_version"],
        architecture=data["architecture"],
        num_classes=int(data["num_classes"]),
        class_names=tuple(data["class_names"]),
        patch_size_pixels=int(data["patch_size_pixels"]),
        spacing_um_px=float(data["spacing_um_px"]),
        transform=tuple(
            TransformStep(step["name"], _arguments(step["name"], step.get("arguments", {})))
            for step in data["transform"]
        ),
        extra=extra,
    )
    if "positive_class" in extra:  # fail now, naming the field, rather than at predict time
        try:
            config.positive_class_index()
        except ModelError as exc:
            raise ModelError(f"{source}: field 'positive_class': {exc}") from None
    from napari_metastasis.clinical.decision import CONFIG_KEY, DecisionRule

    if CONFIG_KEY in extra:  # the deposit decision's numbers: checked now, not at the verdict
        DecisionRule.from_dict(extra[CONFIG_KEY], f"{source}: field '{CONFIG_KEY}'")
    return config


def _field(path: Sequence[str | int]) -> str:
    """``transform[0].arguments.size`` for the path ("transform", 0, "arguments", "size")."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _missing(error: Any) -> str:
    """The first field a ``required`` error is about."""
    present = error.instance if isinstance(error.instance, dict) else {}
    return next((name for name in error.validator_value if name not in present), "")


def _rank(error: Any) -> int:
    """Errors are reported in WSInfer's field order, a non-object config first."""
    path = list(error.absolute_path)
    if path:
        field = path[0]
    elif error.validator == "required":
        field = _missing(error)
    else:
        return -1
    return REQUIRED_FIELDS.index(field) if field in REQUIRED_FIELDS else len(REQUIRED_FIELDS)


def _sentence(error: Any, source: str) -> str:
    """One sentence for a schema error: the file, the field, what is wrong with its value."""
    path = list(error.absolute_path)
    keyword, schema = error.validator, error.schema
    if not path and keyword == "type":
        return f"{source}: must hold a JSON object, got {type(error.instance).__name__}"
    value = _Shown(error.instance)
    if keyword == "required":
        if not path:
            return f"{source}: missing required field '{_missing(error)}'"
        return f"{source}: field '{_field(path)}' is missing '{_missing(error)}'"
    names = list(schema.get("properties", {})) if isinstance(schema, dict) else []
    instance = error.instance
    extra = sorted(set(instance) - set(names)) if isinstance(instance, dict) else []
    allowed = ", ".join(names) or "none"
    template = schema.get("x-message") if isinstance(schema, dict) else None
    if isinstance(template, dict):
        template = template.get(keyword)
    if template:
        problem = template.format(value=value, extra=_Shown(extra), allowed=allowed)
    elif keyword == "type":
        types = (
            error.validator_value
            if isinstance(error.validator_value, list)
            else [error.validator_value]
        )
        problem = f"must be {' or '.join(_TYPE_NAMES[t] for t in types)}, got {value!r}"
    elif keyword == "exclusiveMinimum":
        problem = f"must be greater than {error.validator_value}, got {value!r}"
    elif keyword == "minimum":
        problem = f"must be at least {error.validator_value}, got {value!r}"
    elif keyword == "enum":
        choices = ", ".join(repr(v) for v in error.validator_value)
        problem = f"must be one of {choices}, got {value!r}"
    elif keyword == "additionalProperties":
        problem = f"has {extra}, which it may not (it may hold: {allowed})"
    else:  # a keyword the schema does not word itself: jsonschema's own sentence
        problem = error.message
    return f"{source}: field '{_field(path)}' {problem}" if path else f"{source}: {problem}"


class _Shown:
    """A value as an error sentence shows it: its repr, cut short when long (a config is a file
    from anywhere; one sentence stays one line on a screen)."""

    LIMIT = 80

    def __init__(self, value: Any):
        self.value = value

    def _cut(self, text: str) -> str:
        return text if len(text) <= self.LIMIT else text[: self.LIMIT - 1] + "…"

    def __repr__(self) -> str:
        return self._cut(repr(self.value))

    def __str__(self) -> str:
        return self._cut(str(self.value))


def _check_beyond_schema(data: dict[str, Any], source: str) -> None:
    """What JSON Schema cannot say: finite numbers, a name per class, case-blind uniqueness, the
    order of the steps, and ``max_size`` above ``size``."""

    def error(field: str, problem: str) -> ModelError:
        return ModelError(f"{source}: field '{field}' {problem}")

    def finite(value: Any, path: list[str | int]) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise error(_field(path), f"must be a finite number, got {value}")
        if isinstance(value, dict):
            for key, item in value.items():
                finite(item, [*path, key])
        elif isinstance(value, list):
            for index, item in enumerate(value):
                finite(item, [*path, index])

    for name in REQUIRED_FIELDS:
        finite(data[name], [name])
    class_names, num_classes = data["class_names"], data["num_classes"]
    if len(class_names) != num_classes:
        raise error(
            "class_names", f"lists {len(class_names)} names but num_classes is {num_classes}"
        )
    if len({n.lower() for n in class_names}) != len(class_names):
        raise error("class_names", f"has duplicate names: {_Shown(class_names)}")
    names = [step["name"] for step in data["transform"]]
    if "Normalize" in names and names.index("Normalize") < names.index("ToTensor"):
        raise error("transform", "has Normalize before ToTensor")
    for index, step in enumerate(data["transform"]):
        args = step.get("arguments", {})
        if step["name"] == "Resize" and args.get("max_size") is not None:
            size = _arguments("Resize", {"size": args["size"]})["size"]
            if not isinstance(size, int) or args["max_size"] <= size:
                raise error(
                    f"transform[{index}].arguments.max_size",
                    f"must be a whole number above an int size, got {args['max_size']!r}",
                )


def _arguments(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """A valid step's arguments as torchvision (and so WSInfer) would take them: a one-element
    ``size`` list is the int, 1 mean or std value stands for all 3 channels, JSON nulls are
    torchvision's defaults."""
    if name == "Resize":
        size = args["size"]
        if isinstance(size, list) and len(size) == 1:
            size = size[0]  # torchvision reads a one-element list as the int
        out: dict[str, Any] = {
            "size": int(size) if isinstance(size, int | float) else [int(v) for v in size]
        }
        if args.get("interpolation") is not None:
            out["interpolation"] = int(args["interpolation"])
        if args.get("max_size") is not None:
            out["max_size"] = int(args["max_size"])
        if args.get("antialias") is not None:
            out["antialias"] = args["antialias"]  # patches are PIL images: always antialiased
        return out
    if name == "Normalize":
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
