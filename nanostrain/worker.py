"""``nanostrain worker``: the live analyses beside acquisition, not inside it.

A worker subscribes to the document bus (`nanostrain.bus`), feeds the documents to the
same analyses an inline session runs (`nanostrain.callbacks.registry`), reading frames
from the detector files as they are written, and writes their derived runs to the
catalog's ``derived`` node. Several workers share the load by analysis (``analyses=``:
each runs some of them).

Nothing is lost: the catalog is the durable record, and the worker reconciles against it

* on start: every recent raw run (``lookback``) that lacks a successful derived run of an
  analysis that applies to it, with this worker's parameters, is computed from the
  catalog (`nanostrain.replaying.replay`: frames from the detector files where the
  worker sees them, else through Tiled);
* after a gap on the bus (a lost message, a publisher that restarted) or a run whose
  start it never saw: the run's live derived runs are closed as failed with the reason,
  and once the raw run's stop is in the catalog the run is recomputed from there.

Derived runs are idempotent: a successful derived run replaces every other derived run
of the same raw run, analysis and parameters (`nanostrain.schema.catalog.SupersedingWriter`),
so a recomputation never leaves a duplicate, and a worker SIGKILLed mid-run and
restarted leaves one complete derived run.

Large arrays (I(Q) patterns, maps, volumes) go to HDF5 files under the catalog's
``<data_dir>/derived`` when the worker shares the catalog server's data folder
(``derived_dir``, `nanostrain.derived_files`), referenced by StreamResource/StreamDatum
(`nanostrain.callbacks.external_arrays`); otherwise they stay inside the events.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .bus import DEFAULT_OUT, Gap, Message, Subscriber
from .callbacks.derived import ANALYSIS_VERSION, AnalysisCallback, GuardedCallback
from .callbacks.registry import ANALYSES, live_signals
from .callbacks.external_arrays import ExternalArrays
from .catalog import catalog_nodes, connect
from .derived_files import HDF5ArraySink, remove_run_folder
from .live_pvs import DEFAULT_PREFIX, LiveValueServer
from .replaying import replay
from .schema.catalog import SupersedingWriter, derived_identity, derived_runs

logger = logging.getLogger(__name__)

Document = dict[str, Any]


class Worker:
    """Runs ``analyses`` on documents from ``subscriber``; derived runs go through
    ``writer`` (a `SupersedingWriter` into ``derived``), their large arrays written
    through ``sink`` if given (`ExternalArrays`), live and recomputed alike; ``raw`` is
    the catalog's raw node, read to reconcile. ``settle_s``: how long to wait for a raw
    run's stop to reach the catalog before recomputing it."""

    def __init__(
        self,
        subscriber: Subscriber,
        raw: Any,
        derived: Any,
        analyses: Iterable[AnalysisCallback],
        writer: SupersedingWriter,
        settle_s: float = 120.0,
        sink: HDF5ArraySink | None = None,
    ):
        self.subscriber = subscriber
        self.raw, self.derived = raw, derived
        self.analyses = list(analyses)
        self.writer = writer
        self._record = writer if sink is None else ExternalArrays(sink, writer)
        self.settle_s = settle_s
        for analysis in self.analyses:
            analysis.subscribe(self._record)
        self.guards = [GuardedCallback(analysis) for analysis in self.analyses]
        self._descriptors: dict[str, str] = {}  # descriptor uid -> run uid
        self._resources: dict[str, str] = {}  # (stream) resource uid -> run uid
        self._open: str | None = None  # the run being analysed live
        self._abandoned: set[str] = set()  # runs to recompute from the catalog at their stop
        self._sweep = False  # after a gap: look for runs whose every document was lost

    # -- the loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        """Handle bus messages until ``stop`` is set; when the bus is quiet after a gap,
        reconcile the newest runs (a run whose start and stop were both lost)."""
        while not stop.is_set():
            for item in self.subscriber.messages(timeout=poll_s):
                self.handle(item)
                if stop.is_set():
                    return
            if self._sweep and self._open is None:
                self._sweep = False
                self.reconcile(lookback=10)

    def handle(self, item: Message | Gap) -> None:
        if isinstance(item, Gap):
            self._on_gap(item)
            return
        name, doc = item.name, item.doc
        uid = self._run_of(name, doc)
        try:
            self._dispatch(name, doc, uid)
        finally:
            if name == "stop":
                self._forget(doc.get("run_start"))

    def _forget(self, uid: str | None) -> None:
        """Drop a finished run's descriptors and resources: a worker runs for weeks."""
        for table in (self._descriptors, self._resources):
            for key in [key for key, run in table.items() if run == uid]:
                del table[key]

    def _dispatch(self, name: str, doc: Document, uid: str | None) -> None:
        if name == "start":
            if self._open is not None:  # its stop never came
                self._abandon(self._open, "the raw run's stop document never reached the worker")
                self._recompute(self._open)
            self._open = uid
        elif uid is None or uid != self._open:  # a run whose start it did not see
            if name == "stop":
                self._recompute(doc["run_start"])
            return
        if uid in self._abandoned:
            if name == "stop":
                self._open = None
                self._recompute(uid)
            return
        for guard in self.guards:
            guard(name, doc)
        if name == "stop":
            self._open = None

    def _run_of(self, name: str, doc: Document) -> str | None:
        if name == "start":
            return doc["uid"]
        if name in ("stop", "descriptor", "resource", "stream_resource"):
            run = doc.get("run_start")
            if name == "descriptor":
                self._descriptors[doc["uid"]] = run
            elif name in ("resource", "stream_resource"):
                self._resources[doc["uid"]] = run
            return run
        if name in ("event", "event_page", "stream_datum"):
            return self._descriptors.get(doc["descriptor"])
        if name in ("datum", "datum_page"):
            return self._resources.get(doc["resource"])
        return None

    def _on_gap(self, gap: Gap) -> None:
        lost = "an unknown number of" if gap.missed is None else str(gap.missed)
        logger.warning("Bus gap: %s message(s) of publisher %s lost before #%d.", lost, gap.source, gap.next_seq)
        self._sweep = True
        if self._open is not None:
            self._abandon(self._open, f"{lost} bus message(s) lost; recomputed from the catalog at the run's stop")

    def _abandon(self, uid: str, reason: str) -> None:
        self._abandoned.add(uid)
        for analysis in self.analyses:
            analysis.abandon(reason)

    # -- reconciliation against the catalog ----------------------------------------------
    def _recompute(self, uid: str) -> None:
        self._abandoned.discard(uid)
        try:
            raw = self._settled(uid)
        except TimeoutError as error:
            logger.error("Cannot recompute run %s: %s", uid, error)
            return
        self.compute(raw)

    def _settled(self, uid: str):
        """The raw run ``uid`` once the catalog holds its stop document."""
        deadline = time.monotonic() + self.settle_s
        while True:
            try:
                run = self.raw[uid]
                if run.metadata.get("stop"):
                    return run
            except KeyError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw run {uid} has no stop in the catalog after {self.settle_s} s")
            time.sleep(0.5)

    def missing(self, raw_run) -> list[AnalysisCallback]:
        """The analyses of this worker that apply to ``raw_run`` and have no successful
        derived run of it with this worker's parameters."""
        start = raw_run.metadata["start"]
        done = {derived_identity(r.metadata["start"]) for r in derived_runs(self.derived, start["uid"])
                if (r.metadata.get("stop") or {}).get("exit_status") == "success"}
        return [a for a in self.analyses if a.accepts(start) and derived_identity({
            "derived_from": start["uid"], "analysis": a.analysis, "analysis_version": ANALYSIS_VERSION,
            "parameters": a.parameters_for(start)}) not in done]

    def compute(self, raw_run) -> list[str]:
        """Compute from the catalog the derived runs ``raw_run`` lacks; their analyses' names."""
        todo = self.missing(raw_run)
        if not todo:
            return []
        fresh = [type(a).from_parameters(a.parameters()) for a in todo]
        logger.info("Recomputing %s for run %s from the catalog.", [a.analysis for a in fresh],
                    raw_run.metadata["start"]["uid"])
        replay(raw_run, callbacks=fresh, writer=self._record)
        self.writer.flush()
        return [a.analysis for a in fresh]

    def reconcile(self, lookback: int = 50, progress: Callable[[str], None] | None = None) -> int:
        """Compute what the newest ``lookback`` finished raw runs lack; how many runs."""
        count = 0
        for raw_run in list(self.raw.values().tail(lookback)) if lookback else []:
            if not raw_run.metadata.get("stop"):
                continue  # in progress: the bus or its stop will bring it
            if self.compute(raw_run):
                count += 1
                if progress:
                    progress(raw_run.metadata["start"]["uid"])
        return count


def serve_worker(
    catalog_uri: str,
    api_key: str | None = None,
    bus: str = DEFAULT_OUT,
    analyses: Iterable[str] | None = None,
    lookback: int = 50,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = print,
    pv_prefix: str | None = DEFAULT_PREFIX,
    derived_dir: Path | None = None,
) -> Worker:
    """Run a worker until ``stop`` is set (``nanostrain worker``): subscribe to the bus at
    ``bus``, reconcile the newest ``lookback`` runs against the catalog at
    ``catalog_uri``, then analyse documents as they come. ``analyses``: names of the
    analyses to run (default all, `nanostrain.callbacks.registry.ANALYSES`). The live
    values are served as PVs ``f"{pv_prefix}{analysis}_{signal}"``
    (`nanostrain.live_pvs`; None: not served). ``derived_dir``: the catalog's folder of
    derived runs' array files (``<data_dir>/derived``, which the server reads); None keeps
    every array inside the events."""
    from bluesky_tiled_plugins import TiledWriter

    names = list(ANALYSES) if analyses is None else list(analyses)
    unknown = sorted(set(names) - set(ANALYSES))
    if unknown:
        raise ValueError(f"unknown analyses {unknown}; known: {', '.join(ANALYSES)}")
    raw, derived = catalog_nodes(connect(catalog_uri, api_key=api_key))
    # straight to the catalog: a derived run it could not take is recomputed from the raw
    # run (the durable record) when the worker next reconciles
    # a superseded run's array files go with it; rows visible as they come (batch_size=1)
    remove_files = None if derived_dir is None else functools.partial(remove_run_folder, derived_dir)
    writer = SupersedingWriter(TiledWriter(derived, batch_size=1), derived, on_deleted=remove_files)
    subscriber = Subscriber(bus)  # subscribe first: what comes during the reconciliation waits
    sink = None if derived_dir is None else HDF5ArraySink(derived_dir)
    worker = Worker(subscriber, raw, derived, [ANALYSES[name]() for name in names], writer, sink=sink)
    pvs = LiveValueServer(live_signals(worker.analyses), pv_prefix).start() if pv_prefix is not None else None
    say(f"worker: analyses {', '.join(names)}; bus {bus}; catalog {catalog_uri}"
        + (f"; live values as PVs {pv_prefix}*" if pvs else "")
        + (f"; large arrays to {derived_dir}" if sink else "; arrays inside the events"))
    try:
        count = worker.reconcile(lookback, progress=lambda uid: say(f"worker: computed what run {uid} lacked"))
        say(f"worker: reconciled the newest {lookback} runs ({count} computed); listening")
        worker.run(stop or threading.Event())
    finally:
        subscriber.close()
        if pvs is not None:
            pvs.stop()
    return worker
