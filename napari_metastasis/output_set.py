"""A slide's outputs are written as a set: all of them, or none, and a manifest says which.

Ctrl-C, a full disk or SIGKILL while a slide's files were being written used to leave a new CSV next
to an old heatmap, or hidden ``.part`` files nothing removed. So every output of one slide is
written through an :class:`OutputSet`:

1. ``--out`` is checked first (:func:`check_writable`): it must be a folder this user can write in,
   with some free space, before minutes of classification are spent.
2. The files are written into a hidden folder inside ``out`` (``.<stem>.set-XXXXXXXX``, locked
   while in use). The old outputs stay untouched and complete until the new set is whole.
3. Commit: every file is flushed to disk, a journal (``COMMIT``) is written, the old manifest
   ``<stem>.outputs.json`` is removed, the files are renamed into place, and a new manifest listing
   each file with its size and SHA-256 is written last (atomically, flushed). A set is complete
   exactly when its manifest is there and matches (:func:`verify_set`).
4. Recovery (:func:`recover`, at the start of every set and every run): a hidden set folder whose
   journal is written is rolled forward (the interrupted commit is finished); one without is
   discarded; stale ``.part`` files of the slide's outputs are removed. Folders still locked by a
   running process (another dask worker) are left alone.

Other outputs plug in by writing into :meth:`OutputSet.path` (subfolders allowed, e.g.
``camelyon16/<stem>.csv``; a folder such as an OME-Zarr store works too: write it at the path).

An error inside the ``with`` block discards the new set; OS errors (no space, read-only,
permission) become one :class:`~napari_metastasis.errors.OutputError` naming the real target.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .atomic import fsync_path, make_folder, write_text_atomic
from .error_policy import os_error_sentence
from .errors import OutputError

try:  # POSIX advisory locks; elsewhere sets are not locked (recovery then trusts file ages)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MANIFEST_SUFFIX = ".outputs.json"
MANIFEST_FORMAT = "napari-metastasis output set 1"
JOURNAL = "COMMIT"
LOCK = ".lock"
MANIFEST_STAGING = ".manifest"
#: A ``.part`` file in ``out`` not tied to one slide is removed once it is this old (a small file
#: being written by another process right now is younger).
STALE_PART_SECONDS = 60
#: ``check_writable`` refuses a disk with less free space than this.
MIN_FREE_BYTES = 16 * 2**20
#: Without POSIX locks, a set folder untouched this long is taken as abandoned.
STALE_SECONDS = 6 * 3600


def manifest_path(out: str | Path, stem: str) -> Path:
    return Path(out) / f"{stem}{MANIFEST_SUFFIX}"


def _set_pattern(stem: str | None) -> re.Pattern:
    name = re.escape(stem) if stem is not None else ".+"
    return re.compile(rf"^\.({name})\.set-[A-Za-z0-9_]{{8}}$")


# --- checking the output folder -----------------------------------------------------------------
def check_writable(out: str | Path, min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Make sure results can be written into ``out`` before any work starts.

    Creates the folder, writes and removes a probe file in it, and checks the free space; anything
    wrong is one :class:`OutputError` sentence naming ``out``.
    """
    out = make_folder(out)
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=out)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise OutputError(os_error_sentence(exc, out, "write into")) from exc
    try:
        free = shutil.disk_usage(out).free
    except OSError:
        return out
    if free < min_free_bytes:
        raise OutputError(
            f"cannot write into {out}: only {free / 2**20:.1f} MB is free on its disk "
            f"(at least {min_free_bytes / 2**20:.0f} MB are needed)"
        )
    return out


# --- writing a set ------------------------------------------------------------------------------
class OutputSet:
    """The outputs of one slide (``stem``) in ``out``, written all together or not at all::

    with OutputSet(out, stem) as outputs:
        write_csv(outputs.path(f"{stem}.csv"))
        save_png(outputs.path(f"{stem}.heatmap.png"))
    # here every file is in ``out`` and ``<stem>.outputs.json`` lists them
    """

    def __init__(self, out: str | Path, stem: str, *, info: dict | None = None):
        self.out = Path(out)
        self.stem = stem
        self.info = dict(info or {})
        self.folder: Path | None = None
        self._lock_fd: int | None = None
        self.committed: list[str] = []

    # --- context --------------------------------------------------------------------------
    def __enter__(self) -> OutputSet:
        make_folder(self.out)
        recover(self.out, self.stem)
        try:
            self.folder = Path(tempfile.mkdtemp(prefix=f".{self.stem}.set-", dir=self.out))
            self._lock()
        except OSError as exc:
            raise OutputError(os_error_sentence(exc, self.out, "write into")) from exc
        return self

    def __exit__(self, kind, exc, tb) -> None:
        try:
            if kind is None:
                self.commit()
            elif isinstance(exc, OSError) and self.folder is not None:
                raise self._translate(exc) from exc
        finally:
            self._discard()

    def _translate(self, exc: OSError) -> OutputError:
        """An OS error while writing into the hidden set folder, naming the file's final place."""
        hidden, final = f"{self.folder}{os.sep}", f"{self.out}{os.sep}"
        if isinstance(exc, OutputError):
            return OutputError(str(exc).replace(hidden, final))
        target = str(exc.filename or self.out / f"{self.stem}.*").replace(hidden, final)
        if ".part" in target:  # atomic_path's temporary: name the file it was for
            match = _PART.match(Path(target).name)
            target = str(Path(target).parent / match.group("name")) if match else target
        return OutputError(os_error_sentence(exc, target))

    def path(self, name: str) -> Path:
        """Where to write the set's file ``name`` (relative to ``out``; subfolders allowed)."""
        if self.folder is None:
            raise RuntimeError("OutputSet.path() outside its with-block")
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"an output name must be a relative path inside the folder: {name!r}")
        if relative.parts[0] in (JOURNAL, LOCK, MANIFEST_STAGING):
            raise ValueError(f"{name!r} is reserved")
        target = self.folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    # --- commit ---------------------------------------------------------------------------
    def files(self) -> list[str]:
        """Names (relative, POSIX) of what was written into the set: files and top folders."""
        if self.folder is None:
            return []
        names = []
        for entry in sorted(self.folder.rglob("*")):
            relative = entry.relative_to(self.folder)
            if relative.parts[0] in (JOURNAL, LOCK, MANIFEST_STAGING) or entry.name.endswith(
                ".part"
            ):
                continue
            if _inside_store(relative, self.folder):
                continue  # part of a store, which is listed (and moved) as a whole
            if entry.is_file() or (entry.is_dir() and _is_store(entry)):
                names.append(relative.as_posix())
        return names

    def commit(self) -> None:
        """Flush, journal, move every file into ``out``, then write the manifest."""
        assert self.folder is not None
        names = self.files()
        entries = [_describe(self.folder / name, name) for name in names]
        try:
            for name in names:
                _fsync_tree(self.folder / name)
            journal = {"stem": self.stem, "files": entries, "info": self.info}
            write_text_atomic(self.folder / JOURNAL, json.dumps(journal) + "\n")
            fsync_path(self.folder)
            _roll_forward(self.folder, self.out, journal)
        except OSError as exc:
            raise OutputError(os_error_sentence(exc, self.out / f"{self.stem}.*")) from exc
        self.committed = names

    # --- internals ------------------------------------------------------------------------
    def _lock(self) -> None:
        lock = self.folder / LOCK  # type: ignore[operator]
        self._lock_fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        if fcntl is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _discard(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None


def _is_store(folder: Path) -> bool:
    """A folder written as one output (an OME-Zarr store, say): moved in as a whole."""
    return any((folder / marker).exists() for marker in (".zattrs", ".zgroup", "zarr.json"))


def _inside_store(relative: Path, root: Path) -> bool:
    return any(_is_store(root.joinpath(*relative.parts[:k])) for k in range(1, len(relative.parts)))


def _describe(path: Path, name: str) -> dict:
    if path.is_dir():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return {"name": name, "size": size, "sha256": None, "folder": True}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"name": name, "size": path.stat().st_size, "sha256": digest.hexdigest()}


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for entry in path.rglob("*"):
            fsync_path(entry)
    fsync_path(path)


def _roll_forward(folder: Path, out: Path, journal: dict) -> None:
    """Finish a commit: remove the old manifest, move each file in, write the new manifest."""
    stem = journal["stem"]
    manifest = manifest_path(out, stem)
    with contextlib.suppress(FileNotFoundError):
        manifest.unlink()
    fsync_path(out)
    for entry in journal["files"]:
        source, target = folder / entry["name"], out / entry["name"]
        if not source.exists():  # moved before the interruption
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir() and target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{stem}.old-", dir=target.parent))
            os.replace(target, trash / target.name)
            os.replace(source, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(source, target)
        fsync_path(target.parent)
    payload = {
        "format": MANIFEST_FORMAT,
        "stem": stem,
        "complete": True,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": journal["files"],
        **({"info": journal["info"]} if journal.get("info") else {}),
    }
    staged = folder / MANIFEST_STAGING  # written in the set folder, then renamed: no .part in out
    staged.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    fsync_path(staged)
    os.replace(staged, manifest)
    fsync_path(out)


# --- recovery -----------------------------------------------------------------------------------
def recover(out: str | Path, stem: str | None = None) -> list[str]:
    """Finish or discard interrupted sets in ``out`` (of ``stem``, or all), remove stale ``.part``
    files of their outputs; return what was done, one line each. Sets in use are left alone."""
    out = Path(out)
    done: list[str] = []
    if not out.is_dir():
        return done
    pattern = _set_pattern(stem)
    for folder in sorted(out.iterdir()):
        match = pattern.match(folder.name)
        if not match or not folder.is_dir() or _in_use(folder):
            continue
        journal = _read_journal(folder)
        if journal is not None:
            try:
                _roll_forward(folder, out, journal)
            except OSError as exc:
                raise OutputError(os_error_sentence(exc, out / f"{journal['stem']}.*")) from exc
            done.append(f"{journal['stem']}: finished an interrupted write")
        else:
            done.append(f"{match.group(1)}: removed an unfinished write")
        shutil.rmtree(folder, ignore_errors=True)
    for part in _stale_parts(out, stem):
        with contextlib.suppress(OSError):
            part.unlink()
            done.append(f"removed {part.name}")
    return done


def _read_journal(folder: Path) -> dict | None:
    try:
        journal = json.loads((folder / JOURNAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(journal, dict) or not isinstance(journal.get("files"), list):
        return None
    return journal


def _in_use(folder: Path) -> bool:
    """Whether a running process holds the set's lock (or, without locks, wrote it recently)."""
    lock = folder / LOCK
    if fcntl is None:
        try:
            return time.time() - folder.stat().st_mtime < STALE_SECONDS
        except OSError:
            return False
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False  # no lock file: never opened, or a set from before locking
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the lock we took
    return False


#: ``atomic_path``'s temporaries: ``.<name>.<8 random characters>.part``.
_PART = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.part$")


def _stale_parts(out: Path, stem: str | None) -> Iterator[Path]:
    """``.part`` files left in ``out`` by a writer killed mid-write: ``stem``'s, or (``stem``
    None) any older than :data:`STALE_PART_SECONDS`."""
    now = time.time()
    for entry in out.iterdir():
        match = _PART.match(entry.name)
        if not match or not entry.is_file():
            continue
        name = match.group("name")
        if stem is not None and (name == stem or name.startswith(f"{stem}.")):
            yield entry
        elif stem is None:
            with contextlib.suppress(OSError):
                if now - entry.stat().st_mtime > STALE_PART_SECONDS:
                    yield entry


# --- checking a set -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SetState:
    """What :func:`verify_set` found for one stem."""

    stem: str
    state: str  # "complete", "missing" (no outputs), "incomplete" (outputs, no manifest), "corrupt"
    detail: str = ""


def verify_set(out: str | Path, stem: str) -> SetState:
    """Whether ``stem``'s outputs in ``out`` are a complete set (manifest present and matching)."""
    out = Path(out)
    manifest = manifest_path(out, stem)
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        present = [p.name for p in out.glob(f"{glob_escape(stem)}.*") if p.name != manifest.name]
        if present:
            return SetState(
                stem, "incomplete", f"no manifest; present: {', '.join(sorted(present))}"
            )
        return SetState(stem, "missing")
    except (OSError, ValueError) as exc:
        return SetState(stem, "corrupt", f"unreadable manifest ({exc})")
    for entry in data.get("files", []):
        path = out / entry["name"]
        if not path.exists():
            return SetState(stem, "corrupt", f"{entry['name']} is listed but missing")
        if entry.get("sha256") is None:
            continue
        if (
            path.stat().st_size != entry["size"]
            or _describe(path, entry["name"])["sha256"] != entry["sha256"]
        ):
            return SetState(stem, "corrupt", f"{entry['name']} does not match the manifest")
    return SetState(stem, "complete")


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
