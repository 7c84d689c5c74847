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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluesky import RunEngine
from bluesky.run_engine import PAUSE_MSG
from ophyd_async.core import SignalR

from .beamline import make_devices
from .callbacks.derived import AnalysisCallback, GuardedCallback
from .callbacks.registry import default_analyses
from .catalog import CatalogSettings, EmbeddedCatalog, connect
from .journal import Journal, pending_journals
from .plans import registry as plan_registry
from .replaying import replay
from .schema.catalog import DERIVED_NODE, RAW_NODE, derived_runs
from .syncing import CatalogForwarder, DocumentRecorder, StorageError, catalog_reachable

logger = logging.getLogger(__name__)

Document = dict[str, Any]


def options_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """`make_session`'s arguments from the variables the profile and blueapi are
    configured by: ``NANOSTRAIN_CATALOG`` (catalog URL; empty: embedded),
    ``NANOSTRAIN_API_KEY``, ``NANOSTRAIN_DATA_DIR`` (default ``nanostrain-data``),
    ``NANOSTRAIN_BEAMLINE_CONFIG`` (TOML of real devices; empty: simulated),
    ``NANOSTRAIN_BEC`` and ``NANOSTRAIN_PLOTS`` ("0" turns off bluesky's
    BestEffortCallback and the live figures)."""
    config = environ.get("NANOSTRAIN_BEAMLINE_CONFIG") or None
    return {
        "catalog_uri": environ.get("NANOSTRAIN_CATALOG") or None,
        "api_key": environ.get("NANOSTRAIN_API_KEY") or None,
        "data_dir": environ.get("NANOSTRAIN_DATA_DIR") or "nanostrain-data",
        "sim": config is None,
        "beamline_config": config,
        "best_effort": environ.get("NANOSTRAIN_BEC", "1") == "1",
        "live_plots": environ.get("NANOSTRAIN_PLOTS", "1") == "1",
    }


def live_signals(analyses: Iterable[AnalysisCallback]) -> dict[str, SignalR]:
    """The live signals of ``analyses`` keyed ``f"{analysis}_{signal}"``; two analyses of
    one name would clash, which raises ValueError."""
    signals: dict[str, SignalR] = {}
    for analysis in analyses:
        for name, signal in analysis.signals.items():
            key = f"{analysis.analysis}_{name}"
            if key in signals:
                raise ValueError(f"two live analyses publish the live signal {key!r}")
            signals[key] = signal
    return signals


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
    analyses: list[AnalysisCallback]
    connect: Callable[[], Any]  # the catalog's root client (connects on first use)
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
        (`nanostrain.schema.catalog.derived_runs`)."""
        return derived_runs(self.derived, uid)

    @property
    def live_signals(self) -> dict[str, SignalR]:
        """Every live analysis's live values (soft signals plans can read), keyed
        ``f"{analysis}_{signal}"``, e.g. ``"xrd_reduction_lattice_change_A"``."""
        return live_signals(self.analyses)

    def replay(self, uid: str, write: bool = False) -> list[tuple[str, Document]]:
        """Re-run a stored run's analyses as they ran live (`nanostrain.replaying.replay`);
        ``write`` records the new derived runs (journal, then catalog)."""
        return replay(self.catalog[uid], derived=self.derived, writer=self.derived_recorder if write else None)

    def close(self) -> None:
        """Hand queued documents to the catalog (bounded wait) and stop the embedded
        catalog (if any)."""
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


def _recorder(name: str, node: str, client: _LazyClient, journal_dir: Path, url: str) -> DocumentRecorder:
    """Journal + forwarder into catalog node ``node``; a failed connection is made anew.
    A storage failure fails the run (`make_session` makes it pause its RunEngine)."""

    def connect_node() -> Any:
        client.reset()
        return client()[node]

    forwarder = CatalogForwarder(connect_node, journal_dir, probe=lambda: catalog_reachable(url), name=name)
    return DocumentRecorder(Journal(journal_dir), forwarder, on_failure=_fail_run)


def make_recording(
    catalog_uri: str | None = None,
    data_dir: str | Path | None = None,
    api_key: str | None = None,
    best_effort: bool = False,
    live_analysis: bool = True,
    live_plots: bool = False,
    analyses: Iterable[AnalysisCallback] | None = None,
) -> Recording:
    """Build the journal, the catalog writers behind it and the live analyses that record
    runs (starting an embedded catalog if no ``catalog_uri``; a served one need not be up);
    the arguments are `make_session`'s."""
    live: list[AnalysisCallback] = []
    if live_analysis:
        live = default_analyses() if analyses is None else list(analyses)
        live_signals(live)  # refuse clashing names before anything starts
    settings = CatalogSettings(data_dir=Path(data_dir or "nanostrain-data"), **({"api_key": api_key} if api_key else {}))
    server = None
    if catalog_uri is None:
        server = EmbeddedCatalog(settings)
        url, client = server.url, _LazyClient(server.client)
    else:
        url, client = catalog_uri, _LazyClient(lambda: connect(catalog_uri, api_key=settings.api_key))
    leftovers = pending_journals(settings.journal_dir) if settings.journal_dir.exists() else []
    if leftovers:
        logger.warning("%d run(s) in %s are not in the catalog (an earlier session ended abruptly?): "
                       "`nanostrain catalog recover` puts them there", len(leftovers), settings.journal_dir)
    recorder = _recorder("raw", RAW_NODE, client, settings.journal_dir, url)
    derived_recorder = _recorder("derived", DERIVED_NODE, client, settings.journal_dir, url)

    callbacks: list[Callable[[str, Document], Any]] = [recorder]
    guards: list[GuardedCallback] = []
    for analysis in live:
        analysis.subscribe(derived_recorder)
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
    return Recording(settings=settings, recorder=recorder, derived_recorder=derived_recorder, analyses=live,
                     connect=client, server=server, guards=guards, callbacks=callbacks)


def make_session(
    catalog_uri: str | None = None,
    data_dir: str | Path | None = None,
    sim: bool = True,
    api_key: str | None = None,
    beamline_config: str | Path | None = None,
    best_effort: bool = False,
    persist_metadata: bool = True,
    live_analysis: bool = True,
    live_plots: bool = False,
    analyses: Iterable[AnalysisCallback] | None = None,
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
    live_analysis: subscribe the live analyses (their derived runs go to the catalog).
    analyses: the live analyses to run (default: every analysis with its default
        settings, `callbacks.registry.default_analyses`).
    live_plots: draw the live figures (operando XRD) as the analyses publish.
    """
    recording = make_recording(catalog_uri, data_dir, api_key, best_effort=best_effort, live_analysis=live_analysis,
                               live_plots=live_plots, analyses=analyses)
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
    devices = make_devices(sim=sim, detector_dir=recording.settings.detector_dir, config=beamline_config)
    return Session(**vars(recording), RE=RE, devices=devices, plans=plan_registry())
