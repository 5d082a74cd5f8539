"""A slide's outputs are written as a set: all of them, or none, and a manifest says which.

Ctrl-C, a full disk or SIGKILL while a slide's files were being written used to leave a new CSV next
to an old heatmap, or hidden ``.part`` files nothing removed. So every output of one slide is
written through an :class:`OutputSet`:

1. ``--out`` is checked first (:func:`check_writable`): it must be a folder this user can write in,
   with some free space, before minutes of classification are spent.
2. The files are written into a hidden folder inside ``out`` (``.<stem>.set-XXXXXXXX``, locked
   while in use). The old outputs stay untouched and complete until the new set is whole.
3. Commit: every file is flushed to disk, a journal (``COMMIT``) is written, the old manifest
   ``<stem>.outputs.json`` is removed, the files are renamed into place (an old folder output is
   first moved into the hidden set folder, never beside it), and a new manifest listing each file
   with its size and SHA-256 (of a folder: of its listing and files) is written last (atomically,
   flushed). Only then is the journal removed: Ctrl-C, an error or SIGKILL during the move leaves
   it, with the hidden folder, for the next run to finish. A set is complete exactly when its
   manifest is there and matches (:func:`verify_set`).
4. Recovery (:func:`recover`, at the start of every set and every run, and before a reader uses a
   set: :func:`require_complete`): a hidden set folder whose journal is written is rolled forward
   (the interrupted commit is finished); one without is discarded; stale ``.part`` files and
   ``.<stem>.old-*`` folders (left by versions that moved old folders beside the new ones) are
   removed. Folders still locked by a running process (another dask worker) are left alone.
5. A set made *from* other files (``stages.csv`` from the slides' summaries, the patient reports)
   lists them with their SHA-256 as ``depends``: once one of them changes (a later run replaced a
   slide's set, and was stopped before it wrote ``stages.csv`` again) the set is *stale*, and
   readers refuse it as they refuse an incomplete one.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from napari_metastasis.errors import IncompleteSetError, OutputError
from napari_metastasis.errors.policy import os_error_sentence
from napari_metastasis.outputs.atomic import fsync_path, make_folder, write_text_atomic

try:  # POSIX advisory locks; elsewhere sets are not locked (recovery then trusts file ages)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MANIFEST_SUFFIX = ".outputs.json"
MANIFEST_FORMAT = "napari-metastasis output set 1"
JOURNAL = "COMMIT"
LOCK = ".lock"
MANIFEST_STAGING = ".manifest"
#: Inside a set folder: where an old folder output goes while the new one is moved in.
OLD_OUTPUTS = ".old"
RESERVED = (JOURNAL, LOCK, MANIFEST_STAGING, OLD_OUTPUTS)
#: Saved probability maps that may belong to a ``predict`` set (see :func:`check_saved_map`).
MAP_SUFFIXES = (".prob.tiff", ".prob.zarr")
#: Longest file listing quoted in a message.
MAX_LISTED = 4
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


def _old_pattern(stem: str | None) -> re.Pattern:
    name = re.escape(stem) if stem is not None else ".+"
    return re.compile(rf"^\.({name})\.old-[A-Za-z0-9_]{{8}}$")


# --- checking the output folder -----------------------------------------------------------------
def check_writable(
    out: str | Path, min_free_bytes: int = MIN_FREE_BYTES, *, create: bool = True
) -> Path:
    """Make sure results can be written into ``out`` before any work starts.

    Writes and removes a probe file in it and checks the free space; anything wrong is one
    :class:`OutputError` sentence naming ``out``. ``create`` False leaves a missing ``out`` missing
    and probes the nearest folder that exists instead, so a run refused later (an untrusted model,
    a bad list of cases) leaves no empty folder behind.
    """
    out = Path(out)
    if create:
        out = make_folder(out)
        probe_folder = out
    else:
        if out.exists() and not out.is_dir():
            raise OutputError(f"cannot write into {out}: it is a file, not a folder")
        probe_folder = next((p for p in (out, *out.parents) if p.exists()), Path("."))
        if not probe_folder.is_dir():
            raise OutputError(f"cannot write into {out}: {probe_folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=probe_folder)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise OutputError(os_error_sentence(exc, out, "write into")) from exc
    try:
        free = shutil.disk_usage(probe_folder).free
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

    def __init__(
        self,
        out: str | Path,
        stem: str,
        *,
        info: dict | None = None,
        depends_on: Iterable[str] = (),
    ):
        self.out = Path(out)
        self.stem = stem
        self.info = dict(info or {})
        #: files in ``out`` (relative names) the set is made from: see :func:`verify_set`
        self.depends_on = list(depends_on)
        self.folder: Path | None = None
        self._lock_fd: int | None = None
        self._journaled = False  # the journal is on disk: from here the move must be finished
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

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                self.commit()
            elif isinstance(exc, OSError) and self.folder is not None:
                raise self._translate(exc) from exc
        finally:
            if self._journaled:  # stopped during the move: the next run finishes it
                self._unlock()
                self.folder = None
            else:
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
        if relative.parts[0] in RESERVED:
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
            if relative.parts[0] in RESERVED or entry.name.endswith(".part"):
                continue
            if _inside_store(relative, self.folder):
                continue  # part of a store, which is listed (and moved) as a whole
            if entry.is_file() or (entry.is_dir() and _is_store(entry)):
                names.append(relative.as_posix())
        return names

    def commit(self) -> None:
        """Flush, journal, move every file into ``out``, write the manifest, drop the journal.

        Once the journal is written the commit is decided: whatever stops it (Ctrl-C, an OS
        error, SIGKILL) leaves the journal for :func:`recover` to finish the move."""
        assert self.folder is not None
        names = self.files()
        entries = [_describe(self.folder / name, name) for name in names]
        try:
            depends = [_dependency(self.out, name) for name in self.depends_on]
            for name in names:
                _fsync_tree(self.folder / name)
            journal = {"stem": self.stem, "files": entries, "info": self.info}
            if depends:
                journal["depends"] = depends
            write_text_atomic(self.folder / JOURNAL, json.dumps(journal) + "\n")
            fsync_path(self.folder)
            self._journaled = True
            _roll_forward(self.folder, self.out, journal)
            _drop_journal(self.folder)
            self._journaled = False
        except OSError as exc:
            raise OutputError(os_error_sentence(exc, self.out / f"{self.stem}.*")) from exc
        self.committed = names

    # --- internals ------------------------------------------------------------------------
    def _lock(self) -> None:
        lock = self.folder / LOCK  # type: ignore[operator]
        self._lock_fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        if fcntl is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def _discard(self) -> None:
        self._unlock()
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
        files = sorted(p for p in path.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in files)
        return {"name": name, "size": size, "sha256": _tree_digest(path, files), "folder": True}
    return {"name": name, "size": path.stat().st_size, "sha256": _file_digest(path)}


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tree_digest(folder: Path, files: list[Path] | None = None) -> str:
    """A folder's SHA-256: of each file's relative name and SHA-256, in name order (so an old
    chunk left in a new store, or a missing one, changes it)."""
    digest = hashlib.sha256()
    for path in files if files is not None else sorted(folder.rglob("*")):
        if path.is_file():
            relative = path.relative_to(folder).as_posix()
            digest.update(f"{relative}\0{_file_digest(path)}\n".encode())
    return digest.hexdigest()


def _digest(path: Path) -> str:
    return _tree_digest(path) if path.is_dir() else _file_digest(path)


def _dependency(out: Path, name: str) -> dict:
    """A file a set is made from, with its SHA-256 now (None: not there)."""
    path = out / name
    return {"name": name, "sha256": _digest(path) if path.exists() else None}


def _drop_journal(folder: Path) -> None:
    """The move is finished: without its journal the hidden folder is only to be removed."""
    with contextlib.suppress(FileNotFoundError):
        (folder / JOURNAL).unlink()
    fsync_path(folder)


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
            # A folder cannot be renamed over another: the old one goes into the set folder
            # (removed with it), never beside the outputs where nothing would clean it up.
            (folder / OLD_OUTPUTS).mkdir(exist_ok=True)
            trash = Path(tempfile.mkdtemp(dir=folder / OLD_OUTPUTS))
            os.replace(target, trash / target.name)
        os.replace(source, target)
        fsync_path(target.parent)
    payload = {
        "format": MANIFEST_FORMAT,
        "stem": stem,
        "complete": True,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": journal["files"],
        **({"depends": journal["depends"]} if journal.get("depends") else {}),
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
    busy: set[str] = set()  # stems with a set being written right now
    for folder in sorted(out.iterdir()):
        match = pattern.match(folder.name)
        if not match or not folder.is_dir():
            continue
        if _in_use(folder):
            busy.add(match.group(1))
            continue
        journal = _read_journal(folder)
        if journal is not None:
            try:
                _roll_forward(folder, out, journal)
                _drop_journal(folder)
            except OSError as exc:
                raise OutputError(os_error_sentence(exc, out / f"{journal['stem']}.*")) from exc
            done.append(f"{journal['stem']}: finished an interrupted write")
        else:
            done.append(f"{match.group(1)}: removed an unfinished write")
        shutil.rmtree(folder, ignore_errors=True)
    for old in _stray_old_folders(out, stem):
        if _old_pattern(None).match(old.name).group(1) not in busy:  # type: ignore[union-attr]
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old.relative_to(out)}")
    for part in _stale_parts(out, stem):
        with contextlib.suppress(OSError):
            part.unlink()
            done.append(f"removed {part.name}")
    return done


def _stray_old_folders(out: Path, stem: str | None) -> Iterator[Path]:
    """``.<stem>.old-XXXXXXXX`` folders in ``out`` or a plain subfolder of it (``camelyon16``):
    old folder outputs that earlier versions moved aside during a commit and a kill left there."""
    pattern = _old_pattern(stem)
    places = [out]
    for entry in out.iterdir():
        if not entry.name.startswith(".") and entry.is_dir() and not _is_store(entry):
            places.append(entry)
    for place in places:
        with contextlib.suppress(OSError):
            for entry in place.iterdir():
                if pattern.match(entry.name) and entry.is_dir():
                    yield entry


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
    #: "complete"; "missing" (no outputs); "incomplete" (outputs, no manifest); "corrupt" (a listed
    #: file missing or changed); "stale" (whole, but a file it was made from changed since)
    state: str
    detail: str = ""


def verify_set(out: str | Path, stem: str) -> SetState:
    """Whether ``stem``'s outputs in ``out`` are a complete set (manifest present and matching,
    and the files it was made from unchanged)."""
    out = Path(out)
    manifest = manifest_path(out, stem)
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        files, depends = list(data.get("files", [])), list(data.get("depends", []))
    except FileNotFoundError:
        present = [p.name for p in out.glob(f"{glob_escape(stem)}.*") if p.name != manifest.name]
        if present:
            return SetState(stem, "incomplete", f"present: {_listing(sorted(present))}")
        return SetState(stem, "missing")
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        return SetState(stem, "corrupt", f"unreadable manifest ({exc})")
    for entry in files:
        path = out / entry["name"]
        if not path.exists():
            return SetState(stem, "corrupt", f"{entry['name']} is listed but missing")
        if entry.get("sha256") is None:
            continue  # a folder in a manifest of an older version: not hashed
        if (not entry.get("folder") and path.stat().st_size != entry["size"]) or _digest(
            path
        ) != entry["sha256"]:
            return SetState(stem, "corrupt", f"{entry['name']} does not match the manifest")
    for entry in depends:
        path = out / entry["name"]
        if not path.exists():
            return SetState(stem, "stale", f"{entry['name']}, which it was made from, is missing")
        if _digest(path) != entry["sha256"]:
            return SetState(stem, "stale", f"{entry['name']} changed after it was written")
    return SetState(stem, "complete")


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def require_complete(out: str | Path, stem: str, what: str | None = None) -> None:
    """Refuse (:class:`IncompleteSetError`, one sentence naming what is missing) unless ``stem``'s
    set in ``out`` is complete; a move an interrupted run left half done is finished first.

    ``what`` names the outputs in the message (default: ``stem``'s outputs)."""
    out = Path(out)
    with contextlib.suppress(OSError):  # a read-only folder: checked as it is
        recover(out, stem)
    state = verify_set(out, stem)
    if state.state == "complete":
        return
    what = what or f"the outputs of {stem}"
    manifest = manifest_path(out, stem).name
    if state.state == "missing":
        reason = f"{manifest} and the files it lists are missing"
    elif state.state == "incomplete":
        reason = (
            f"{manifest}, the manifest that marks the set complete, is missing ({state.detail})"
        )
    elif state.state == "stale":
        reason = f"out of date, {state.detail}"
    else:
        reason = state.detail
    raise IncompleteSetError(f"cannot use {what} in {out}: {reason}; run predict again")


def is_set_member(out: str | Path, stem: str) -> bool:
    """Whether ``stem`` in ``out`` has a set: a manifest, or a hidden set folder being written or
    left by an interrupted run."""
    out = Path(out)
    if manifest_path(out, stem).exists():
        return True
    pattern = _set_pattern(stem)
    with contextlib.suppress(OSError):
        return any(pattern.match(p.name) for p in out.iterdir())
    return False


def check_saved_map(path: str | Path) -> None:
    """Refuse a probability map (``<stem>.prob.tiff``, a ``<stem>.prob.zarr`` store or a file in
    it) that is part of a ``predict`` set which is not complete. A map saved on its own (no
    manifest, no hidden set, no ``<stem>.summary.json`` beside it) is no set's member."""
    path = Path(path)
    for candidate in (path, *path.parents):
        name = candidate.name
        suffix = next((s for s in MAP_SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            continue
        stem, folder = name[: -len(suffix)], candidate.parent
        if is_set_member(folder, stem) or (folder / f"{stem}.summary.json").exists():
            require_complete(folder, stem, f"{name} and the other outputs of {stem}")
        return


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
