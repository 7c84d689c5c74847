"""From the journal to the catalog: live forwarding, resync after an outage, recovery.

* `CatalogForwarder` feeds one catalog node (``raw`` or ``derived``) through
  bluesky-tiled-plugins' TiledWriter on a background thread with a bounded queue, so the
  RunEngine never waits on the network during a run, and at a run's stop waits at most a
  bounded time (none at all once the catalog is known to be unreachable). When the
  catalog fails, the runs then open are *deferred*: their documents are in the journal
  already; once the catalog answers again (checked at the next run's start and every
  ``retry_interval_s`` while idle) the forwarder replays them from their journal files.
* `DocumentRecorder` is what the RunEngine (or a live analysis) subscribes: journal
  first, then the forwarder; when neither can take a document it calls ``on_failure``
  with a message naming both problems (the session pauses the RunEngine).
* `recover` (``nanostrain catalog recover``) replays every pending journal file of a data
  folder, file by file: a damaged file is named and skipped, a file whose last line was
  cut gives every intact document, a run the catalog already holds in full is skipped.

Replaying is idempotent: a run complete in the catalog is left alone, a partial copy is
replaced by the journal's. A journal without a stop document (the session died) gets a
closing stop with ``exit_status="fail"`` and a reason saying so.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bluesky_tiled_plugins import TiledWriter

from .journal import Document, Journal, journal_path, mark_synced, pending_journals, read_journal
from .schema.catalog import DERIVED_NODE, RAW_NODE

logger = logging.getLogger(__name__)

EVENT_BATCH = 100  # events TiledWriter gathers before one table append


def node_for(start: Document) -> str:
    """The catalog node a run belongs in: ``derived`` if its start names ``derived_from``."""
    return DERIVED_NODE if "derived_from" in start else RAW_NODE


def closing_stop(documents: list[tuple[str, Document]]) -> Document:
    """A stop document for a run whose journal ends without one (the session died):
    ``exit_status="fail"``, the events counted per stream."""
    start = documents[0][1]
    streams = {doc["uid"]: doc.get("name", "primary") for name, doc in documents if name == "descriptor"}
    counts: Counter[str] = Counter()
    for name, doc in documents:
        if name == "event":
            counts[streams.get(doc["descriptor"], "primary")] += 1
        elif name == "event_page":
            counts[streams.get(doc["descriptor"], "primary")] += len(doc["seq_num"])
    return {
        "uid": str(uuid.uuid4()),
        "run_start": start["uid"],
        "time": max(doc.get("time", 0) for _, doc in documents),
        "exit_status": "fail",
        "reason": "recovered from the journal: the session ended before the run's stop document",
        "num_events": dict(counts),
    }


def write_run(node, documents: list[tuple[str, Document]], batch_size: int = EVENT_BATCH) -> bool:
    """Put one run's documents into ``node`` (a ``CatalogOfBlueskyRuns`` client).

    Returns False, writing nothing, if the catalog holds the run complete (with its stop
    document); a partial copy is deleted first and the run written whole.
    """
    uid = documents[0][1]["uid"]
    if uid in node:
        if node[uid].metadata.get("stop"):
            return False
        node.delete_contents(uid, recursive=True, external_only=False)
    writer = TiledWriter(node, batch_size=batch_size)
    for name, doc in documents:
        writer(name, doc)
    if documents[-1][0] != "stop":
        writer("stop", closing_stop(documents))
    return True


@dataclass
class Recovery:
    """What `recover` did, file by file.

    written: uids of runs put (back) into the catalog.
    complete: uids the catalog already held in full (their files are marked synced).
    truncated: files whose cut last line was left out (their intact documents written).
    damaged: (file, reason) of files skipped and left where they are.
    failed: (file, reason) of files the catalog refused (left for a later attempt).
    """

    written: list[str] = field(default_factory=list)
    complete: list[str] = field(default_factory=list)
    truncated: list[Path] = field(default_factory=list)
    damaged: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def recover(journal_dir: Path | str, client, batch_size: int = EVENT_BATCH) -> Recovery:
    """Replay the pending journal files in ``journal_dir`` into the catalog whose root
    client is ``client`` (raw runs into ``raw``, derived runs into ``derived``).

    File by file: a damaged file is named in ``Recovery.damaged`` and skipped; one file's
    failure never stops the others. Each file replayed (or found complete in the
    catalog) moves to ``journal/synced/``, so a second call finds nothing to do.
    """
    report = Recovery()
    for path in pending_journals(Path(journal_dir)):
        found = read_journal(path)
        if found.damage is not None:
            report.damaged.append((path, found.damage))
            continue
        try:
            written = write_run(client[node_for(found.start)], found.documents, batch_size)
        except Exception as error:  # the catalog refused this run; try the next one
            report.failed.append((path, f"{type(error).__name__}: {error}"))
            continue
        (report.written if written else report.complete).append(found.start["uid"])
        if found.truncated:
            report.truncated.append(path)
        mark_synced(path)
    return report


def catalog_reachable(url: str, timeout_s: float = 0.5) -> bool:
    """Whether the catalog server at ``url`` (``http://host:port[/api/v1]``) answers its
    health check within ``timeout_s`` seconds."""
    root = url.rstrip("/").removesuffix("/api/v1")
    try:
        return httpx.get(f"{root}/healthz", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


_CLOSE = object()


class CatalogForwarder:
    """Feeds documents to one catalog node through TiledWriter on a background thread.

    connect: returns the node's client (called lazily; again after a failure).
    journal_dir: where the journal keeps each run's file (read back to resync).
    probe: answers quickly whether the catalog is up (`catalog_reachable`).
    queue_size: documents that may wait for the network; beyond, the open runs are
        deferred to a resync from the journal (the RunEngine never waits to enqueue).
    drain_timeout_s: longest wait (s) at a stop for the catalog to take the run while it
        answers; ``probe_interval_s`` (s) how often the wait checks it still does.
    retry_interval_s: how often (s) an idle forwarder with deferred runs tries to resync.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        journal_dir: Path,
        probe: Callable[[], bool],
        *,
        queue_size: int = 100_000,
        batch_size: int = EVENT_BATCH,
        drain_timeout_s: float = 120.0,
        probe_interval_s: float = 0.5,
        retry_interval_s: float = 5.0,
        name: str = "catalog",
    ):
        self._connect = connect
        self.journal_dir = Path(journal_dir)
        self._probe = probe
        self._batch_size = batch_size
        self.drain_timeout_s = drain_timeout_s
        self.probe_interval_s = probe_interval_s
        self.retry_interval_s = retry_interval_s
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Condition()
        self._open: set[str] = set()  # runs started and not stopped (as the caller sees them)
        self._spilled: set[str] = set()  # runs some of whose documents did not fit the queue
        self._submitted = 0
        self._processed = 0
        # state of the background thread
        self.online = False  # documents reach the catalog as they come
        self.deferred: set[str] = set()  # runs waiting for a resync from their journal
        self._live: set[str] = set()  # runs whose start the thread has handled, not their stop
        self._writer: TiledWriter | None = None
        self._thread = threading.Thread(target=self._run, name=f"nanostrain-forward-{name}", daemon=True)
        self._thread.start()

    # ---- the caller's side (the RunEngine's thread) ----
    def __call__(self, name: str, doc: Document) -> None:
        with self._lock:
            if name == "start":
                self._open.add(doc["uid"])
            try:
                self._queue.put_nowait((name, doc))
                self._submitted += 1
            except queue.Full:
                self._spilled |= self._open
            if name == "stop":
                self._open.discard(doc["run_start"])
        if name == "stop":
            self.wait()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the catalog has taken what was submitted, for at most ``timeout_s``
        (default ``drain_timeout_s``), and not at all once it stops answering. Returns
        whether everything was taken."""
        deadline = time.monotonic() + (self.drain_timeout_s if timeout_s is None else timeout_s)
        with self._lock:
            target = self._submitted
        while True:
            with self._lock:
                if self._processed >= target:
                    return True
                if (not self.online and self.deferred) or time.monotonic() > deadline:
                    return False
                self._lock.wait(self.probe_interval_s)
                if self._processed >= target:
                    return True
            if not self._probe():
                return False

    def synced(self) -> bool:
        """Whether the catalog holds everything submitted: forwarding live, no run
        deferred, nothing queued."""
        with self._lock:
            return self.online and not self.deferred and self._processed >= self._submitted

    def reachable(self) -> bool:
        """Whether documents reach the catalog now (forwarding live and the server answers)."""
        return self.online and self._probe()

    def close(self, timeout_s: float = 10.0) -> None:
        """Forward what is queued (for at most ``timeout_s`` s) and stop the thread; runs
        the catalog does not have yet stay in the journal (`recover`)."""
        self.wait(timeout_s)
        try:
            self._queue.put(_CLOSE, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        if not self.synced():
            logger.warning("the catalog lacks runs of this session (%s); `nanostrain catalog recover` "
                           "puts them there from %s", ", ".join(sorted(self.deferred)) or "still queued",
                           self.journal_dir)

    # ---- the background thread ----
    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.retry_interval_s)
            except queue.Empty:
                with self._lock:
                    idle = not self._open
                if idle and (self.deferred or not self.online):
                    self._resync()
                continue
            if item is _CLOSE:
                return
            self._handle(*item)
            with self._lock:
                self._processed += 1
                self._lock.notify_all()

    def _handle(self, name: str, doc: Document) -> None:
        with self._lock:
            spilled, self._spilled = self._spilled, set()
            open_runs = set(self._open)
        if spilled:
            logger.warning("catalog forwarding fell behind; runs %s will be resynced from the journal", sorted(spilled))
            self._go_offline(spilled)
        if name == "start":
            self._live.add(doc["uid"])
            if not self.online and not (self.deferred & open_runs):
                self._resync()
        if self.online:
            try:
                self._writer(name, doc)
            except Exception as error:
                logger.warning("the catalog did not take a %r document (%s); its run(s) will be "
                               "resynced from the journal", name, error)
                self._go_offline(set())
            else:
                if name == "stop":
                    mark_synced(journal_path(self.journal_dir, doc["run_start"]))
        if not self.online:
            self.deferred |= self._live
        if name == "stop":
            self._live.discard(doc["run_start"])

    def _go_offline(self, runs: set[str]) -> None:
        """Stop forwarding live; the runs being written (and ``runs``) wait for a resync."""
        self.online = False
        self._writer = None  # its per-run state is lost with the runs it was writing
        self.deferred |= runs | self._live

    def _resync(self) -> None:
        """If the catalog answers: replay the deferred runs that have ended, then forward
        live again (only when no deferred run is still open)."""
        if not self._probe():
            return
        with self._lock:
            open_runs = set(self._open)
        try:
            node = self._connect()
            for uid in sorted(self.deferred - open_runs):
                path = journal_path(self.journal_dir, uid)
                found = read_journal(path)
                if found.damage is None:
                    write_run(node, found.documents, self._batch_size)
                    mark_synced(path)
                else:
                    logger.error("journal %s is damaged (%s); run `nanostrain catalog recover`", path, found.damage)
                self.deferred.discard(uid)
                self._live.discard(uid)  # its stop may never have reached the queue
                logger.info("run %s resynced from the journal", uid)
        except Exception as error:
            logger.warning("catalog resync failed (%s); retrying in %s s", error, self.retry_interval_s)
            return
        if not (self.deferred & open_runs):
            self._writer = TiledWriter(node, batch_size=self._batch_size)
            self.online = True


class StorageError(RuntimeError):
    """Neither the journal nor the catalog can take the experiment's documents."""


class DocumentRecorder:
    """Journal, then catalog: the one callback through which a session records runs.

    on_failure(message) is called when a document reaches neither the journal (disk full,
    I/O error; the document is then held in memory) nor the catalog; ``on_recovered()``
    when the journal writes again.
    """

    def __init__(
        self,
        journal: Journal,
        forwarder: CatalogForwarder,
        on_failure: Callable[[str], None],
        on_recovered: Callable[[], None] = lambda: None,
    ):
        self.journal = journal
        self.forwarder = forwarder
        self.on_failure = on_failure
        self.on_recovered = on_recovered
        self._failing = False

    def __call__(self, name: str, doc: Document) -> None:
        journaled = self.journal(name, doc)
        self.forwarder(name, doc)
        if journaled:
            if self._failing:
                self._failing = False
                self.on_recovered()
            return
        if not self.forwarder.reachable():
            self._failing = True
            message = (
                f"STORAGE FAILURE: the journal cannot write ({self.journal.error}; folder "
                f"{self.journal.journal_dir}) and the catalog is unreachable. {self.journal.backlog} "
                "document(s) are held in memory only. Free space (or fix the disk), then RE.resume()."
            )
            self.on_failure(message)
            if name == "stop":  # too late to pause: the run must not end as a success
                raise StorageError(message)

    def close(self) -> None:
        self.forwarder.close()
        self.journal.close()
