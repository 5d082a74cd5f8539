"""Reading annotation files with limits, so a huge or hostile file fails cleanly, not the viewer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import AnnotationError

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
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path.name}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError as exc:
        raise AnnotationError(f"{path.name}: JSON is nested too deeply to be annotations") from exc
