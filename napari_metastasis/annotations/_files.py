"""Reading annotation files with limits, so a huge or hostile file fails cleanly, not the viewer."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

from napari_metastasis.annotations._validate import AnnotationRepairWarning
from napari_metastasis.errors import AnnotationError

#: Larger annotation files than this are refused (Camelyon16's largest XML is a few MB; QuPath
#: exports of every cell on a slide reach a few hundred MB).
MAX_FILE_BYTES = 512 * 2**20


def read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    size = path.stat().st_size
    if size == 0:
        raise AnnotationError(f"{path.name}: the file is empty")
    if size > MAX_FILE_BYTES:
        raise AnnotationError(
            f"{path.name}: {size / 2**20:.0f} MB is larger than the {MAX_FILE_BYTES // 2**20} MB "
            "limit for annotation files"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"{path.name}: cannot read the file ({exc.strerror or exc})") from exc


def load_json(path: str | Path) -> Any:
    """Parse JSON with the size limit; absurd nesting depth becomes an error, not a crash."""
    path = Path(path)
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path.name}: not UTF-8 text ({exc.reason})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError as exc:
        raise AnnotationError(f"{path.name}: JSON is nested too deeply to be annotations") from exc
    except ValueError as exc:  # an integer of more than 4300 digits, say
        raise AnnotationError(f"{path.name}: not usable JSON ({exc})") from exc
    if _SURROGATE_ESCAPE.search(text):
        data = _replace_lone_surrogates(data, path.name)
    return data


#: A JSON escape of a UTF-16 surrogate; paired ones decode to one character, lone ones do not.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace_lone_surrogates(data: Any, source: str) -> Any:
    """Replace lone surrogates (``"\\ud800"`` in the file: not text in any encoding) by U+FFFD.

    Left in, they break every later write (UTF-8 cannot encode them) and XML; the reader warns.
    """
    count = 0

    def fix(value: Any) -> Any:
        nonlocal count
        if isinstance(value, str):
            if _SURROGATE.search(value):
                count += 1
                return _SURROGATE.sub("\ufffd", value)
            return value
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {fix(k): fix(v) for k, v in value.items()}
        return value

    data = fix(data)
    if count:
        warnings.warn(
            f"{source}: {count} text value(s) held an invalid character (a lone UTF-16 "
            "surrogate); replaced by U+FFFD",
            AnnotationRepairWarning,
            stacklevel=3,
        )
    return data
