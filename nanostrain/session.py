"""A beamline session: RunEngine, catalog writer, live analyses, devices and plans.

    >>> from nanostrain import make_session
    >>> s = make_session(data_dir="nanostrain-data")          # embedded catalog, sim devices
    >>> uid, = s.RE(s.plans["alignment_scan"](s.devices["cam"], s.devices["sx"], -1, 1, 11))
    >>> s.catalog[uid]                                         # the raw run
    >>> s.derived_runs(uid)                                    # what the live analyses made

Every run goes to the catalog through bluesky-tiled-plugins' TiledWriter, with a backup
folder: if the catalog cannot take a run (server down, network cut), the whole run is
saved as JSON lines there and `nanostrain catalog recover` puts it in later. Live
analyses publish derived runs through the same writer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluesky import RunEngine
from bluesky_tiled_plugins import TiledWriter

from .beamline import make_devices
from .callbacks.derived import AnalysisCallback
from .callbacks.registry import default_analyses
from .catalog import CatalogSettings, EmbeddedCatalog, connect
from .plans import registry as plan_registry
from .replay import replay

logger = logging.getLogger(__name__)

Document = dict[str, Any]


class GuardedCallback:
    """Runs a live analysis so that its failure never stops the experiment.

    An exception is logged and kept in ``errors``; the analysis skips the rest of that
    run (its derived run is closed as failed by the analysis itself where possible).
    """

    def __init__(self, callback: Callable[[str, Document], Any]):
        self.callback = callback
        self.errors: list[BaseException] = []
        self._failed_run = False

    def __call__(self, name: str, doc: Document) -> None:
        if name == "start":
            self._failed_run = False
        if self._failed_run:
            return
        try:
            self.callback(name, doc)
        except Exception as error:
            self._failed_run = True
            self.errors.append(error)
            logger.exception("Live analysis %r failed on a %s document; it skips the rest of this run.", self.callback, name)


@dataclass
class Session:
    """What a beamline session holds; the profile puts these names in the namespace."""

    RE: RunEngine
    catalog: Any
    settings: CatalogSettings
    writer: TiledWriter
    devices: dict[str, Any]
    plans: dict[str, Callable]
    analyses: list[AnalysisCallback]
    server: EmbeddedCatalog | None = None
    guards: list[GuardedCallback] = field(default_factory=list)

    def derived_runs(self, uid: str) -> list:
        """Derived runs (catalog clients) whose start document names raw run ``uid``."""
        from tiled.queries import Key

        results = self.catalog.search(Key("start.derived_from") == uid)
        return [results[key] for key in results]

    def replay(self, uid: str, write: bool = False) -> list[tuple[str, Document]]:
        """Re-run the live analyses on a stored run; ``write`` stores the new derived runs."""
        published = replay(self.catalog[uid], default_analyses())
        if write:
            for name, doc in published:
                self.writer(name, doc)
        return published

    def close(self) -> None:
        """Write persisted metadata now and stop the embedded catalog (if any)."""
        finalizer = getattr(self.RE.md, "_finalizer", None)  # bluesky PersistentDict
        if finalizer is not None:
            finalizer()  # a weakref.finalize: writes to disk once, then never again
        if self.server is not None:
            self.server.close()
            self.server = None


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
) -> Session:
    """Build a beamline session.

    catalog_uri: URL of a running catalog server (``nanostrain serve``); if omitted, an
        embedded catalog server is started on ``data_dir`` (default ``./nanostrain-data``).
    data_dir: where detector files, backups, persisted metadata (and the embedded
        catalog) live. Detector files must be readable by the catalog server.
    sim: simulated devices (default) or real EPICS devices from ``beamline_config``.
    best_effort: subscribe bluesky's BestEffortCallback (tables and plots).
    persist_metadata: keep ``RE.md`` (proposal, sample, ...) between sessions.
    live_analysis: subscribe the live analyses (their derived runs go to the catalog).
    live_plots: draw the live figures (operando XRD) as the analyses publish.
    """
    settings = CatalogSettings(data_dir=Path(data_dir or "nanostrain-data"), **({"api_key": api_key} if api_key else {}))
    server = None
    if catalog_uri is None:
        server = EmbeddedCatalog(settings)
        client = server.client()
    else:
        client = connect(catalog_uri, api_key=settings.api_key)

    md: Any = {}
    if persist_metadata:
        from bluesky.utils import PersistentDict

        md = PersistentDict(str(settings.data_dir / "runengine-metadata"))
    RE = RunEngine(md)
    writer = TiledWriter(client, backup_directory=str(settings.backup_dir))
    RE.subscribe(writer)

    analyses: list[AnalysisCallback] = []
    guards: list[GuardedCallback] = []
    if live_analysis:
        analyses = default_analyses()
        for analysis in analyses:
            analysis.subscribe(writer)
            guard = GuardedCallback(analysis)
            guards.append(guard)
            RE.subscribe(guard)
    if live_plots:
        from .callbacks.xrd_plots import XrdLivePlot

        for analysis in analyses:
            if analysis.analysis == "xrd_reduction":
                analysis.subscribe(XrdLivePlot())
    if best_effort:
        from bluesky.callbacks.best_effort import BestEffortCallback

        RE.subscribe(BestEffortCallback())

    devices = make_devices(sim=sim, detector_dir=settings.detector_dir, config=beamline_config)
    return Session(
        RE=RE,
        catalog=client,
        settings=settings,
        writer=writer,
        devices=devices,
        plans=plan_registry(),
        analyses=analyses,
        server=server,
        guards=guards,
    )
