"""The local write-ahead journal: every document of every run, on disk, before the catalog.

A session appends each document it emits as one JSON line ``{"name": ..., "doc": ...}``
to ``<data_dir>/journal/<start uid>.jsonl`` (one file per run, raw and derived runs
alike) *before* the document goes to the catalog. Each line reaches the operating system
as soon as it is written (a killed process loses nothing) and is forced to the disk
(``os.fsync``) at every event, event page, stream datum and stop document; any other
document is forced with the next one written ``fsync_interval_s`` seconds or more after
the last fsync (a power cut can cost only such documents, never an event).

When a line cannot be written (disk full, I/O error) the file is cut back to its last
complete line, the document is kept in memory, and every later call retries the backlog
in order first; `Journal.__call__` reports whether the document is on disk, so the
caller can decide what to do when neither journal nor catalog can take it.

`read_journal` reads a file back: every intact document of a file whose last line was
cut (a crash mid-write), and a clear reason for a file that is damaged elsewhere.
A run whose documents the catalog has taken in full is moved to ``journal/synced/``,
gzip-compressed (``<uid>.jsonl.gz``, ~10x smaller; kept as a local record, which
`read_journal` reads as it reads a pending file; `nanostrain.syncing` does this).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Document = dict[str, Any]
SUFFIX = ".jsonl"
SYNCED = "synced"
# documents after which the journal forces its file to disk
FSYNC_AFTER = frozenset({"event", "event_page", "stream_datum", "stop"})


def journal_path(journal_dir: Path, uid: str) -> Path:
    """The journal file of run ``uid`` (its start document's uid)."""
    return Path(journal_dir) / f"{uid}{SUFFIX}"


def pending_journals(journal_dir: Path) -> list[Path]:
    """Journal files of runs the catalog has not (yet) taken in full, oldest first."""
    return sorted(Path(journal_dir).glob(f"*{SUFFIX}"), key=lambda path: path.stat().st_mtime)


def mark_synced(path: Path) -> None:
    """Move a journal file whose run the catalog holds in full to ``synced/``, gzipped
    (written beside, then renamed into place; the pending file goes last, so a crash
    leaves it pending, never lost). A file already moved, or never written, is left alone."""
    if not path.exists():
        return
    target = path.parent / SYNCED / f"{path.name}.gz"
    target.parent.mkdir(exist_ok=True)
    partial = target.with_name(f"{target.name}.partial")
    with open(path, "rb") as source, gzip.open(partial, "wb", compresslevel=6) as packed:
        shutil.copyfileobj(source, packed)
    os.replace(partial, target)
    path.unlink()


class _RunFile:
    """One run's journal file, appended with ``os.write`` so that a failed write can be
    cut back to the last complete line (``good_size``, bytes)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.good_size = os.fstat(self.fd).st_size
        self.synced_at = time.monotonic()

    def append(self, line: bytes) -> None:
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:
            os.ftruncate(self.fd, self.good_size)  # no half line left behind
            raise
        self.good_size += len(line)

    def fsync(self) -> None:
        os.fsync(self.fd)
        self.synced_at = time.monotonic()

    def close(self) -> None:
        os.close(self.fd)


class Journal:
    """A RunEngine callback writing every document to its run's journal file.

    journal_dir: folder of the journal files (created if missing).
    fsync_interval_s: after this long (s) without an fsync, the next document forces one.

    ``journal(name, doc)`` returns True once the document (and any backlog before it)
    is in the file, False if it is only held in memory (``self.error`` says why).
    """

    def __init__(self, journal_dir: Path | str, fsync_interval_s: float = 1.0):
        self.journal_dir = Path(journal_dir)
        self.journal_dir.mkdir(parents=True, exist_ok=True)
        self.fsync_interval_s = fsync_interval_s
        self.error: OSError | None = None
        self._files: dict[str, _RunFile] = {}  # open runs by start uid
        self._owner: dict[str, str] = {}  # descriptor / (stream) resource uid -> start uid
        self._backlog: deque[tuple[str, str, bytes]] = deque()  # (run uid, name, line)

    def run_of(self, name: str, doc: Document) -> str | None:
        """The start uid of the run ``doc`` belongs to (None if unknown)."""
        if name == "start":
            return doc["uid"]
        if name in ("stop", "descriptor"):
            return doc["run_start"]
        if name in ("resource", "stream_resource") and doc.get("run_start"):
            return doc["run_start"]
        key = {"event": "descriptor", "event_page": "descriptor", "datum": "resource",
               "datum_page": "resource", "stream_datum": "stream_resource"}.get(name)
        if key is not None and doc.get(key) in self._owner:
            return self._owner[doc[key]]
        return next(iter(self._files)) if len(self._files) == 1 else None

    def __call__(self, name: str, doc: Document) -> bool:
        uid = self.run_of(name, doc)
        if uid is None:
            logger.warning("journal: a %r document of no known run was not journaled", name)
            return True
        if name in ("descriptor", "resource", "stream_resource"):
            self._owner[doc["uid"]] = uid
        line = (json.dumps({"name": name, "doc": doc}, default=_jsonable) + "\n").encode()
        self._backlog.append((uid, name, line))
        return self._write_backlog()

    def _write_backlog(self) -> bool:
        while self._backlog:
            uid, name, line = self._backlog[0]
            try:
                run = self._files.get(uid)
                if run is None:
                    run = self._files[uid] = _RunFile(journal_path(self.journal_dir, uid))
                run.append(line)
                if name in FSYNC_AFTER or time.monotonic() - run.synced_at > self.fsync_interval_s:
                    run.fsync()
            except OSError as error:
                if self.error is None:
                    logger.error("journal: cannot write %s: %s", journal_path(self.journal_dir, uid), error)
                self.error = error
                return False
            self._backlog.popleft()
            if name == "stop":
                self._close(uid)
        if self.error is not None:
            logger.warning("journal: writing again; the %s held documents are on disk", self.journal_dir)
            self.error = None
        return True

    def _close(self, uid: str) -> None:
        self._files.pop(uid).close()
        self._owner = {key: run for key, run in self._owner.items() if run != uid}

    @property
    def backlog(self) -> int:
        """How many documents wait in memory for the disk."""
        return len(self._backlog)

    def close(self) -> None:
        """Write what can be written and close every file (runs left open stay open)."""
        self._write_backlog()
        for run in self._files.values():
            try:
                run.fsync()
            except OSError:
                pass
            run.close()
        self._files.clear()


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays (which documents may carry) as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass
class JournalRead:
    """What `read_journal` found in one file.

    documents: every intact (name, doc) pair, in order.
    damage: why the file cannot be trusted (None if it can); a damaged file is skipped.
    truncated: the last line was cut (a crash mid-write) and left out.
    """

    path: Path
    documents: list[tuple[str, Document]] = field(default_factory=list)
    damage: str | None = None
    truncated: bool = False

    @property
    def start(self) -> Document | None:
        return self.documents[0][1] if self.documents and self.documents[0][0] == "start" else None


def read_journal(path: Path | str) -> JournalRead:
    """Read one journal file back.

    A last line that is cut or not valid JSON (the process died while writing it) is left
    out and reported as ``truncated``; a bad line anywhere else, or a file that does not
    begin with a start document, makes the file ``damage``d (its reason names the line).
    """
    path = Path(path)
    result = JournalRead(path)
    try:
        lines = (gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()).split(b"\n")
    except (OSError, EOFError) as error:  # gzip: a cut archive raises EOFError
        result.damage = f"cannot be read: {error}"
        return result
    complete, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline
    if tail.strip():
        result.truncated = True
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            name, doc = entry["name"], entry["doc"]
            if not isinstance(name, str) or not isinstance(doc, dict):
                raise ValueError("not a {name, doc} pair")
        except (ValueError, KeyError, TypeError) as error:
            if number == len(complete) and not tail.strip():
                result.truncated = True  # the last line, cut and not newline-terminated
                break
            result.damage = f"line {number} is not a document ({error})"
            return result
        result.documents.append((name, doc))
    if result.start is None:
        result.damage = "does not begin with a start document"
    return result
