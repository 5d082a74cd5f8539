"""Atomic file writes: a reader never sees a half-written file, and a failed write leaves the old one.

Everything the package writes for the user (CSV, GeoJSON, XML, PNG, model files) goes through here.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from napari_metastasis.errors import OutputError
from napari_metastasis.errors.policy import os_error_sentence


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Read once at import (os.umask can only be read by setting it, which is not thread-safe later).
_UMASK = _read_umask()


def _final_mode(target: Path) -> int:
    """The mode the file would have had if written directly: the old file's, else 0o666 - umask.

    mkstemp creates 0600 files, which would leave results unreadable to colleagues.
    """
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o666 & ~_UMASK


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's) data to the disk, where the OS allows it."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems cannot fsync a folder
            os.fsync(fd)
    finally:
        os.close(fd)


def make_folder(folder: str | Path, target: str | Path | None = None) -> Path:
    """``mkdir -p``; an OS error becomes an :class:`OutputError` naming ``target`` (or the folder)."""
    folder = Path(folder)
    name = target if target is not None else folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise OutputError(f"cannot write {name}: {folder} is a file, not a folder") from exc
    except OSError as exc:
        raise OutputError(os_error_sentence(exc, name)) from exc
    return folder


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``.

    The temporary file lives in the same folder so the final ``os.replace`` is atomic; it is
    flushed to the disk first, so a power cut cannot leave an empty file under the final name. On
    an exception (or Ctrl-C) it is removed and ``target`` is untouched. An OS error (no space,
    read-only, permission) becomes an :class:`OutputError` naming ``target``, not the temporary file.
    """
    target = Path(target)
    make_folder(target.parent, target)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
    except OSError as exc:
        raise OutputError(os_error_sentence(exc, target)) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with contextlib.suppress(OSError):
            os.chmod(tmp, _final_mode(target))
        fsync_path(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OutputError):
            raise
        raise OutputError(os_error_sentence(exc, target)) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text_atomic(target: str | Path, text: str, encoding: str = "utf-8") -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding=encoding)


def write_bytes_atomic(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
