"""A beamline session: RunEngine, catalog writer, live analyses, devices and plans.

    >>> from nanostrain import make_session
    >>> s = make_session(data_dir="nanostrain-data")          # embedded catalog, sim devices
    >>> uid, = s.RE(s.plans["alignment_scan"](s.devices["cam"], s.devices["sx"], -1, 1, 11))
    >>> s.catalog[uid], s.catalog[-1]                          # the raw run, the newest
    >>> s.derived_runs(uid)                                    # what the live analyses made

``s.catalog`` is the catalog's ``raw`` node and ``s.derived`` its ``derived`` node, both
bluesky-tiled-plugins' ``CatalogOfBlueskyRuns`` (see `nanostrain.schema.catalog`).

Every document, of raw runs and of the live analyses' derived runs, is first appended to
the local journal (``<data_dir>/journal``, `nanostrain.journal`), then handed to a
background writer that feeds the catalog (`nanostrain.syncing.CatalogForwarder`: raw
runs into ``raw``, derived runs into ``derived``). The catalog never holds the plan for
long: a run's stop waits for the catalog only while it answers. If the catalog is down
(at start or mid-run), the runs are resynced from the journal once it answers again, or
with `nanostrain catalog recover`. If the journal cannot write either (disk full), the
RunEngine pauses with a message naming the problem.

The large arrays of derived runs (I(Q) patterns, maps, volumes) are written to HDF5 files
under ``<data_dir>/derived`` (`nanostrain.derived_files`) and recorded as
StreamResource/StreamDatum, as detector frames are (`nanostrain.callbacks.external_arrays`);
the analyses' own subscribers (live plots) still see them inline.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluesky import RunEngine
from bluesky.run_engine import PAUSE_MSG
from bluesky.utils import ProgressBarManager
from ophyd_async.core import SignalR

from .beamline import connection_errors_of, make_devices
from .bus import DEFAULT_IN, BusPublisher
from .callbacks.derived import AnalysisCallback, GuardedCallback
from .callbacks.external_arrays import ExternalArrays
from .callbacks.registry import default_analyses, live_signals
from .catalog import CatalogSettings, EmbeddedCatalog, connect
from .derived_files import HDF5ArraySink, remove_run_folder
from .journal import Journal, pending_journals
from .live_pvs import DEFAULT_PREFIX, live_signal_types, remote_live_signals
from .plans import registry as plan_registry
from .plans.progress import RunProgress
from .plans.suspenders import beam_suspenders
from .replaying import replay
from .roles import role_key
from .schema.catalog import DERIVED_NODE, RAW_NODE, SupersedingWriter, derived_runs
from .syncing import EVENT_BATCH, CatalogForwarder, DocumentRecorder, StorageError, catalog_reachable

logger = logging.getLogger(__name__)

Document = dict[str, Any]

#: how long a session waits for a worker's live-value PVs (s)
REMOTE_CONNECT_S = 5.0

#: ``live_analysis`` values and the mode each means
LIVE_MODES: dict[Any, str | None] = {True: "inline", "inline": "inline", "worker": "worker", False: "off", "off": "off"}


def options_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """`make_session`'s arguments from the variables the profile and blueapi are
    configured by: ``NANOSTRAIN_CATALOG`` (catalog URL; empty: embedded),
    ``NANOSTRAIN_API_KEY``, ``NANOSTRAIN_DATA_DIR`` (default ``nanostrain-data``),
    ``NANOSTRAIN_BEAMLINE_CONFIG`` (TOML of real devices; empty: simulated),
    ``NANOSTRAIN_BEC`` and ``NANOSTRAIN_PLOTS`` ("0" turns off bluesky's
    BestEffortCallback and the live figures), ``NANOSTRAIN_LIVE_ANALYSIS`` (``inline``,
    ``worker`` or ``off``), ``NANOSTRAIN_BUS`` (the bus's publisher address) and
    ``NANOSTRAIN_PV_PREFIX`` (the worker's live-value PVs)."""
    config = environ.get("NANOSTRAIN_BEAMLINE_CONFIG") or None
    return {
        "live_analysis": environ.get("NANOSTRAIN_LIVE_ANALYSIS") or "inline",
        "bus": environ.get("NANOSTRAIN_BUS") or DEFAULT_IN,
        "pv_prefix": environ.get("NANOSTRAIN_PV_PREFIX") or DEFAULT_PREFIX,
        "catalog_uri": environ.get("NANOSTRAIN_CATALOG") or None,
        "api_key": environ.get("NANOSTRAIN_API_KEY") or None,
        "data_dir": environ.get("NANOSTRAIN_DATA_DIR") or "nanostrain-data",
        "sim": config is None,
        "beamline_config": config,
        "best_effort": environ.get("NANOSTRAIN_BEC", "1") == "1",
        "live_plots": environ.get("NANOSTRAIN_PLOTS", "1") == "1",
    }


class StoragePause:
    """Pauses the RunEngine when neither the journal nor the catalog can take documents;
    the message (why, and what to do) becomes the pause message ``RE(...)`` raises."""

    def __init__(self, RE: RunEngine):
        self.RE = RE

    def __call__(self, message: str) -> None:
        logger.error(message)
        self.RE.pause_msg = f"\n{message}\n{PAUSE_MSG}"
        if self.RE.state == "running":
            # callbacks run on the RunEngine's loop: ask from another thread, it pauses
            # before its next message
            threading.Thread(target=self._pause, name="nanostrain-storage-pause", daemon=True).start()

    def _pause(self) -> None:
        try:
            self.RE.request_pause()
        except Exception as error:  # already pausing, or the run has ended
            logger.debug("storage pause not requested: %s", error)

    def clear(self) -> None:
        """The journal writes again: Ctrl-C pauses get bluesky's own message back."""
        self.RE.pause_msg = PAUSE_MSG


def _fail_run(message: str) -> None:
    """What a recording without a RunEngine of its own does on a storage failure: raise,
    so the RunEngine that feeds it fails the run with the message."""
    raise StorageError(message)


@dataclass(kw_only=True)
class Recording:
    """What records runs, whichever RunEngine makes them: the journal and the catalog
    writers behind it (one recorder for raw runs, one for derived runs) and the live
    analyses. ``callbacks`` are what a RunEngine subscribes (`make_session` does it for its
    own; blueapi's plans carry them with ``subs_wrapper``, `nanostrain.blueapi_env`)."""

    settings: CatalogSettings
    recorder: DocumentRecorder  # raw runs: journal, then the catalog's ``raw`` node
    derived_recorder: DocumentRecorder  # derived runs: journal, then ``derived``
    derived_writer: SupersedingWriter  # derived runs through ``derived_recorder``, one per computation
    record_derived: Callable[[str, Document], Any]  # derived runs' documents to ``derived_writer``, large arrays to files
    analyses: list[AnalysisCallback]  # run here (inline); none when a worker runs them
    connect: Callable[[], Any]  # the catalog's root client (connects on first use)
    publisher: BusPublisher | None = None  # every document to the bus, for workers
    remote_signals: dict[str, SignalR] = field(default_factory=dict)  # a worker's live values, as PVs
    server: EmbeddedCatalog | None = None
    guards: list[GuardedCallback] = field(default_factory=list)
    callbacks: list[Callable[[str, Document], Any]] = field(default_factory=list)

    @property
    def catalog(self) -> Any:
        """The catalog's ``raw`` node (raises if the catalog does not answer)."""
        return self.connect()[RAW_NODE]

    @property
    def derived(self) -> Any:
        """The catalog's ``derived`` node (raises if the catalog does not answer)."""
        return self.connect()[DERIVED_NODE]

    def derived_runs(self, uid: str) -> list:
        """Derived runs (catalog clients) whose start document names raw run ``uid``
        (`nanostrain.schema.catalog.derived_runs`), once the catalog holds what this
        session recorded (`wait_stored`, at most 10 s)."""
        self.wait_stored(10.0)
        return derived_runs(self.derived, uid)

    def wait_stored(self, timeout_s: float = 30.0) -> bool:
        """Wait until the catalog holds every document of raw and derived runs this
        session recorded so far (they reach it from a background writer, which the end
        of a run waits for only a bounded time); at most ``timeout_s`` s, not at all while
        the catalog does not answer. Returns whether it holds them."""
        deadline = time.monotonic() + timeout_s
        raw = self.recorder.forwarder.wait(timeout_s)
        return self.derived_recorder.forwarder.wait(max(0.0, deadline - time.monotonic())) and raw

    @property
    def live_signals(self) -> dict[str, SignalR]:
        """Every live analysis's live values (signals plans can read), keyed
        ``f"{analysis}_{signal}"``, e.g. ``"xrd_reduction_lattice_change_A"``: soft
        signals of the analyses inline, Channel Access signals of the worker's PVs
        (`nanostrain.live_pvs`) when a worker runs them."""
        return self.remote_signals or live_signals(self.analyses)

    def replay(self, uid: str, write: bool = False) -> list[tuple[str, Document]]:
        """Re-run a stored run's analyses as they ran live (`nanostrain.replaying.replay`);
        ``write`` records the new derived runs as live ones are (journal, then catalog;
        large arrays to files under ``<data_dir>/derived``)."""
        published = replay(self.catalog[uid], derived=self.derived, writer=self.record_derived if write else None)
        if write:
            self.derived_writer.flush()
        return published

    def close(self) -> None:
        """Close the bus publisher, hand queued documents to the catalog (bounded wait)
        and stop the embedded catalog (if any)."""
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        self.derived_recorder.close()
        self.recorder.close()
        if self.server is not None:
            self.server.close()
            self.server = None


@dataclass(kw_only=True)
class Session(Recording):
    """What a beamline session holds; the profile puts these names in the namespace."""

    RE: RunEngine
    devices: dict[str, Any]
    plans: dict[str, Callable]

    def close(self) -> None:
        """Write persisted metadata now, hand queued documents to the catalog and stop
        the embedded catalog (if any)."""
        finalizer = getattr(self.RE.md, "_finalizer", None)  # bluesky PersistentDict
        if finalizer is not None:
            finalizer()  # a weakref.finalize: writes to disk once, then never again
        super().close()


class _LazyClient:
    """The catalog's root client, made on first use (a session may start while the
    catalog is down) and made again after a failure."""

    def __init__(self, make: Callable[[], Any]):
        self._make = make
        self._client: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make()
            return self._client

    def reset(self) -> None:
        with self._lock:
            self._client = None


def _recorder(name: str, node: str, client: _LazyClient, journal_dir: Path, url: str,
              batch_size: int = EVENT_BATCH) -> DocumentRecorder:
    """Journal + forwarder into catalog node ``node`` (events appended ``batch_size`` at a
    time); a failed connection is made anew. A storage failure fails the run
    (`make_session` makes it pause its RunEngine)."""

    def connect_node() -> Any:
        client.reset()
        return client()[node]

    forwarder = CatalogForwarder(connect_node, journal_dir, probe=lambda: catalog_reachable(url), name=name,
                                 batch_size=batch_size)
    return DocumentRecorder(Journal(journal_dir), forwarder, on_failure=_fail_run)


def make_recording(
    catalog_uri: str | None = None,
    data_dir: str | Path | None = None,
    api_key: str | None = None,
    best_effort: bool = False,
    live_analysis: bool | str = "inline",
    live_plots: bool = False,
    analyses: Iterable[AnalysisCallback] | None = None,
    bus: str = DEFAULT_IN,
    pv_prefix: str = DEFAULT_PREFIX,
) -> Recording:
    """Build the journal, the catalog writers behind it and the live analyses that record
    runs (starting an embedded catalog if no ``catalog_uri``; a served one need not be up);
    the arguments are `make_session`'s."""
    mode = LIVE_MODES.get(live_analysis)
    if mode is None:
        raise ValueError(f"live_analysis must be one of 'inline', 'worker' or False, got {live_analysis!r}.")
    live: list[AnalysisCallback] = []
    if mode == "inline":
        live = default_analyses() if analyses is None else list(analyses)
        live_signals(live)  # refuse clashing names before anything starts
    settings = CatalogSettings(data_dir=Path(data_dir or "nanostrain-data"), **({"api_key": api_key} if api_key else {}))
    server = None
    # with roles, inline analyses write derived runs as the analysis writer (superseding an
    # older derived run deletes it, which the beamline key may not); nanostrain.roles
    derived_key = role_key(settings.data_dir, "analysis") if settings.roles and not api_key else settings.api_key
    if catalog_uri is None:
        server = EmbeddedCatalog(settings)
        url, client = server.url, _LazyClient(server.client)
        make_derived_client = functools.partial(server.client, api_key=derived_key)
    else:
        url, client = catalog_uri, _LazyClient(lambda: connect(catalog_uri, api_key=settings.api_key))
        make_derived_client = functools.partial(connect, catalog_uri, api_key=derived_key)
    # one client where one key writes both (no roles): a second would only open a second connection
    derived_client = client if derived_key == settings.api_key else _LazyClient(make_derived_client)
    leftovers = pending_journals(settings.journal_dir) if settings.journal_dir.exists() else []
    if leftovers:
        logger.warning("%d run(s) in %s are not in the catalog (an earlier session ended abruptly?): "
                       "`nanostrain catalog recover` puts them there", len(leftovers), settings.journal_dir)
    recorder = _recorder("raw", RAW_NODE, client, settings.journal_dir, url)
    # a derived run's events (one per analysed frame or angle) reach the catalog as they
    # come, so its readers (the web view) follow a run in progress; raw events go in batches
    derived_recorder = _recorder("derived", DERIVED_NODE, derived_client, settings.journal_dir, url, batch_size=1)
    # a superseded run's array files go with it (the session writes them: see below)
    derived_writer = SupersedingWriter(derived_recorder, lambda: derived_client()[DERIVED_NODE],
                                       on_deleted=functools.partial(remove_run_folder, settings.derived_dir))
    # large arrays to files the catalog registers, as the detectors' frames (the session
    # writes where the catalog server reads, as it does for its detectors)
    record_derived = ExternalArrays(HDF5ArraySink(settings.derived_dir), derived_writer)

    callbacks: list[Callable[[str, Document], Any]] = [recorder]
    publisher, remote = None, {}
    if mode == "worker":
        publisher = BusPublisher(bus)
        callbacks.append(publisher)
        remote = remote_live_signals(live_signal_types(default_analyses()), pv_prefix)
    guards: list[GuardedCallback] = []
    for analysis in live:
        analysis.subscribe(record_derived)
        guards.append(GuardedCallback(analysis))
    callbacks += guards
    if live_plots:
        from .callbacks.xrd_plots import XrdLivePlot

        for analysis in live:
            if analysis.analysis == "xrd_reduction":
                analysis.subscribe(XrdLivePlot())
    if best_effort:
        from bluesky.callbacks.best_effort import BestEffortCallback

        callbacks.append(BestEffortCallback())
    return Recording(settings=settings, recorder=recorder, derived_recorder=derived_recorder,
                     derived_writer=derived_writer, record_derived=record_derived, analyses=live, connect=client, server=server, guards=guards,
                     callbacks=callbacks, publisher=publisher, remote_signals=remote)


def make_session(
    catalog_uri: str | None = None,
    data_dir: str | Path | None = None,
    sim: bool = True,
    api_key: str | None = None,
    beamline_config: str | Path | None = None,
    best_effort: bool = False,
    persist_metadata: bool = True,
    live_analysis: bool | str = "inline",
    live_plots: bool = False,
    analyses: Iterable[AnalysisCallback] | None = None,
    bus: str = DEFAULT_IN,
    pv_prefix: str = DEFAULT_PREFIX,
    progress: bool | None = None,
) -> Session:
    """Build a beamline session.

    catalog_uri: URL of a running catalog server (``nanostrain serve``); if omitted, an
        embedded catalog server is started on ``data_dir`` (default ``./nanostrain-data``).
        The server need not be up: runs are journaled and resynced when it answers.
    data_dir: where detector files, the journal, persisted metadata (and the embedded
        catalog) live. Detector files must be readable by the catalog server.
    sim: simulated devices (default) or real EPICS devices from ``beamline_config``.
    best_effort: subscribe bluesky's BestEffortCallback (tables and plots).
    persist_metadata: keep ``RE.md`` (proposal, sample, ...) between sessions.
    live_analysis: where the live analyses run (their derived runs go to the catalog):
        ``"inline"`` (or True) in this process, on the RunEngine's callbacks;
        ``"worker"``: every document is published to the bus at ``bus`` (`nanostrain
        bus`), and ``nanostrain worker`` processes analyse them beside acquisition;
        False: none.
    analyses: the live analyses to run inline (default: every analysis with its default
        settings, `callbacks.registry.default_analyses`).
    bus: the document bus's publisher address (``live_analysis="worker"``).
    pv_prefix: the prefix of the worker's live-value PVs (``live_analysis="worker"``);
        `live_signals` are then those PVs, connected now if the worker serves them (a
        warning names them otherwise; they can be connected later).
    live_plots: draw the live figures (operando XRD) as the analyses publish.
    progress: progress bars on standard error, a bar per run (`plans.progress.RunProgress`)
        and bluesky's ``ProgressBarManager`` for motion: True, False, or None (default)
        only on a terminal.
    """
    recording = make_recording(catalog_uri, data_dir, api_key, best_effort=best_effort, live_analysis=live_analysis,
                               live_plots=live_plots, analyses=analyses, bus=bus, pv_prefix=pv_prefix)
    md: Any = {}
    if persist_metadata:
        from bluesky.utils import PersistentDict

        md = PersistentDict(str(recording.settings.data_dir / "runengine-metadata"))
    RE = RunEngine(md)
    pause = StoragePause(RE)  # a storage failure pauses this RunEngine (not fail the run)
    for recorder in (recording.recorder, recording.derived_recorder):
        recorder.on_failure, recorder.on_recovered = pause, pause.clear
    for callback in recording.callbacks:
        RE.subscribe(callback)
    if progress or (progress is None and sys.stderr.isatty()):
        RE.waiting_hook = ProgressBarManager()
        RE.subscribe(RunProgress(enabled=True))
    missing = connection_errors_of(recording.remote_signals, timeout=REMOTE_CONNECT_S)
    if missing:
        logger.warning("The worker's live-value PVs did not connect (is `nanostrain worker` running?): %s",
                       ", ".join(sorted(missing)))
    devices = make_devices(sim=sim, detector_dir=recording.settings.detector_dir, config=beamline_config)
    beam = {name: devices[name] for name in ("ring_current", "shutter") if name in devices}
    if beam:  # beam dumps and a closed shutter suspend every plan (docs: README "Beam dumps and pauses")
        for suspender in beam_suspenders(**beam):
            RE.install_suspender(suspender)
    return Session(**vars(recording), RE=RE, devices=devices, plans=plan_registry())
