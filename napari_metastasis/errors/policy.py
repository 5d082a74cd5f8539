"""One error policy for the command line and the viewer: one sentence, never a traceback.

* Library errors are translated into :mod:`.errors` classes where they happen (OpenSlide in
  :mod:`.slide`, torch in :mod:`.models`, XML/JSON in :mod:`.annotations`, the file system in
  :mod:`.atomic` and :mod:`.output_set`), with a message naming the file and the reason.
* Whatever still escapes is turned into one sentence by :func:`user_message`: by the CLI's
  catch-all (exit code 1; ``--debug`` shows the traceback) and by the viewer's notifications, so
  both say the same thing.

:func:`os_error_sentence` names the real target of a failed write (not a temporary file) and says
what the operating system meant: no space, read-only, permission denied.
"""

from __future__ import annotations

import errno
from pathlib import Path

from napari_metastasis.errors import MetastasisError

#: Longest reason quoted from a library's message.
MAX_REASON = 300
#: Longest name (of a region, a class) quoted in a message: a 200,000-character name from a
#: hostile file is cut, with its length said.
MAX_QUOTED = 60


def quoted(value: object, limit: int = MAX_QUOTED) -> str:
    """``value`` as ``repr`` quotes it, cut to about ``limit`` characters (a name from a hostile
    file can be any length; a message stays one readable line)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit + 2 else f"{text[:limit]}… ({len(text):,} characters)"


_TORCHSCRIPT_PREFIX = "The following operation failed in the TorchScript interpreter"


def exception_reason(exc: BaseException) -> str:
    """The line of an exception's text that says why it happened.

    Usually the first line; for TorchScript's interpreter errors (whose first line only says that
    something failed, followed by two tracebacks) the last line, which holds the real reason.
    """
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if lines[0].startswith(_TORCHSCRIPT_PREFIX) else lines[0]
    for prefix in ("RuntimeError: ", "builtins.RuntimeError: ", "ValueError: "):
        if line.startswith(prefix):
            line = line[len(prefix) :]
    if len(line) > MAX_REASON:
        line = line[: MAX_REASON - 1] + "…"
    return line


_OS_REASONS = {
    errno.ENOSPC: "no space is left on the disk",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EEXIST: "something else already has that name",
    errno.EFBIG: "the file is too large for the file system",
    errno.EIO: "the disk reported an input/output error",
}


def os_error_reason(exc: OSError) -> str:
    """What an OSError means, in a few words."""
    return _OS_REASONS.get(exc.errno or -1) or (exc.strerror or exception_reason(exc))


def os_error_sentence(exc: OSError, target: str | Path, action: str = "write") -> str:
    """``cannot write /out/slide.csv: no space is left on the disk`` (the real target named)."""
    return f"cannot {action} {target}: {os_error_reason(exc)}"


def user_message(exc: BaseException) -> str:
    """One sentence for any error, the same in the CLI and the viewer."""
    if isinstance(exc, MetastasisError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory: the input is too large for this computer's memory"
    if "OutOfMemory" in type(exc).__name__ or "out of memory" in str(exc).lower():
        return "out of GPU memory: try a smaller batch size or the CPU device"
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to be read"
    if isinstance(exc, OSError):
        target = exc.filename if exc.filename is not None else "a file"
        action = "read or write"
        return os_error_sentence(exc, target, action)
    return f"{type(exc).__name__}: {exception_reason(exc)}"
