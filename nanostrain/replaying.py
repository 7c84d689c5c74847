"""Replay: push a stored run's documents through analyses, frames read in large blocks.

A replay sees the documents ``run.documents()`` serves (the catalog's own export of the
run, StreamResource/StreamDatum included) and reads detector frames in 64 MiB blocks
(`TiledFrameSource`): from the detector file where this machine sees it, else through the
catalog, so it needs no access to the beamline's files; it writes none. The analyses are
rebuilt from the ``parameters`` their derived runs of that raw run recorded
(`recorded_analyses`; the catalog's ``derived`` node holds them and
`nanostrain.schema.catalog.derived_runs` finds them), so a replay repeats the live computation
rather than the defaults of today; results equal the live ones (see
`nanostrain.callbacks.derived`). Frames are verified as they are read (`TiledFrameSource`):
a detector file the catalog cannot read (deleted, truncated) or that holds too few frames
fails the derived runs that need it, with a reason naming the file; `failures` lists
them, and ``nanostrain replay`` exits with status 1 if there are any.

A replay of many frames shows a progress bar on standard error (tqdm: frames read,
frames/s, time left), on a terminal by default (`replay`'s ``progress``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from .callbacks.derived import AnalysisCallback, GuardedCallback
from .callbacks.frames import FrameSource, TiledFrameSource
from .callbacks.registry import ANALYSES
from .schema.catalog import derived_node_of, derived_runs

logger = logging.getLogger(__name__)

Document = dict[str, Any]
Callback = Callable[[str, Document], Any]


def run_documents(run) -> list[tuple[str, Document]]:
    """All documents of a catalog run, in the order the catalog exports them."""
    return [(name, doc) for name, doc in run.documents()]


def recorded_analyses(run, derived=None) -> list[AnalysisCallback]:
    """The live analyses of raw ``run`` rebuilt as they ran: one per distinct
    (analysis, parameters) recorded by a derived run of ``run`` in the ``derived`` node
    (default: the one beside the run's ``raw`` node), through
    `AnalysisCallback.from_parameters`; an analysis that made no derived run of it comes
    with its defaults. Derived runs of analyses this version does not know are left out
    (logged)."""
    derived = derived_node_of(run) if derived is None else derived
    uid = run.metadata["start"]["uid"]
    recorded: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in ANALYSES}
    for derived_run in derived_runs(derived, uid):
        start = derived_run.metadata["start"]
        name, parameters = start.get("analysis"), dict(start.get("parameters") or {})
        if name not in ANALYSES:
            logger.info("Derived run %s of %s: analysis %r is unknown here; not replayed.", start["uid"], uid, name)
            continue
        recorded[name].setdefault(json.dumps(parameters, sort_keys=True), parameters)
    analyses: list[AnalysisCallback] = []
    for name, cls in ANALYSES.items():
        analyses += [cls.from_parameters(p) for p in recorded[name].values()] if recorded[name] else [cls()]
    return analyses


class ReplayProgress:
    """A progress bar over a replay: the run's detector frames (its StreamDatum
    documents), or its events when it has no frames; tqdm shows the rate and time left.

    A frame counts once, when the first analysis reads it (through `counting`) or, if
    none reads it, once its StreamDatum has been handed to every analysis (`dispatched`):
    the bar moves within a long StreamDatum (a fly-scan row) and reaches the total
    whatever the analyses read. ``enabled``: True draws, False does not, None draws only
    if ``file`` (default standard error) is a terminal.
    """

    def __init__(self, documents: list[tuple[str, Document]], enabled: bool | None = None, file: TextIO | None = None):
        frames = sum(_frames_of(name, doc) for name, doc in documents)
        events = sum(_events_of(name, doc) for name, doc in documents)
        self.unit, total = ("frame", frames) if frames else ("event", events)
        self.bar = tqdm(total=total, unit=self.unit, desc="replay", file=file or sys.stderr,
                        disable=None if enabled is None else not enabled, mininterval=0.5, dynamic_ncols=True)
        self._seen: set[tuple[str, int]] = set()

    def counting(self, source: FrameSource) -> FrameSource:
        """``source``, counting the frames it yields."""
        return _CountingFrames(source, self)

    def dispatched(self, name: str, doc: Document) -> None:
        """Every analysis has had document ``name``: its frames (or events) are done."""
        if self.unit == "event":
            self.bar.update(_events_of(name, doc))
        elif name == "stream_datum":
            for index in range(doc["indices"]["start"], doc["indices"]["stop"]):
                self.count(doc["stream_resource"], index)

    def count(self, resource_uid: str, index: int) -> None:
        """Frame ``index`` of StreamResource ``resource_uid`` is done (once each)."""
        if self.unit == "frame" and (resource_uid, index) not in self._seen:
            self._seen.add((resource_uid, index))
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class _CountingFrames:
    """A frame source that tells a `ReplayProgress` of every frame it yields."""

    def __init__(self, source: FrameSource, progress: ReplayProgress):
        self.source, self.progress = source, progress

    def iter_frames(self, stream: str, resource: Document, datum: Document) -> Iterator[tuple[int, np.ndarray]]:
        start = datum["indices"]["start"]
        for offset, (seq_num, frame) in enumerate(self.source.iter_frames(stream, resource, datum)):
            self.progress.count(datum["stream_resource"], start + offset)
            yield seq_num, frame

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


def _frames_of(name: str, doc: Document) -> int:
    return doc["indices"]["stop"] - doc["indices"]["start"] if name == "stream_datum" else 0


def _events_of(name: str, doc: Document) -> int:
    if name == "event_page":
        return len(doc["seq_num"])
    return 1 if name == "event" else 0


def replay(
    run,
    callbacks: Iterable[Callback] | None = None,
    catalog=None,
    writer: Callback | None = None,
    derived=None,
    progress: bool | None = None,
    frame_source: FrameSource | None = None,
) -> list[tuple[str, Document]]:
    """Push the documents of ``run`` (a BlueskyRun client, or a uid with ``catalog``: the
    ``raw`` node) through ``callbacks`` (default: the run's analyses as recorded in the
    ``derived`` node, `recorded_analyses`).

    Returns the documents the analysis callbacks published (their derived runs), so the
    caller can compare them with the live ones; ``writer`` (e.g. a TiledWriter) gets
    each of them too, as it is published. An analysis that fails closes its derived run
    as failed, as live; the error is logged and the other analyses go on.

    ``progress``: a progress bar on standard error (`ReplayProgress`): True always,
    False never (library use), None (default) only on a terminal.

    ``frame_source``: where the analyses read frames (default `TiledFrameSource` of the
    run: large blocks, from the detector file where this machine sees it, else through
    the catalog).
    """
    if isinstance(run, str):
        if catalog is None:
            raise ValueError("Replay by uid needs the catalog's raw node: replay(uid, catalog=raw).")
        run = catalog[run]
    callbacks = list(recorded_analyses(run, derived) if callbacks is None else callbacks)
    published: list[tuple[str, Document]] = []

    def publish(name: str, doc: Document) -> None:
        published.append((name, doc))
        if writer is not None:
            writer(name, doc)

    documents = run_documents(run)
    bar = ReplayProgress(documents, progress)
    # a missing or damaged detector file fails the analyses reading it
    frames = bar.counting(TiledFrameSource(run) if frame_source is None else frame_source)
    for callback in callbacks:
        if isinstance(callback, AnalysisCallback):
            callback.frame_source = frames
            callback.subscribe(publish)
    guards = [GuardedCallback(callback) for callback in callbacks]
    try:
        for name, doc in documents:
            for guard in guards:
                guard(name, doc)
            bar.dispatched(name, doc)
    finally:
        frames.close()
        bar.close()
    return published


def failures(published: Iterable[tuple[str, Document]]) -> list[str]:
    """One line per derived run among ``published`` that did not succeed: its analysis,
    uid and the reason its stop document gives (e.g. the detector file it could not read)."""
    analyses = {doc["uid"]: doc.get("analysis", "?") for name, doc in published if name == "start"}
    return [
        f"{analyses.get(doc['run_start'], '?')} (derived run {doc['run_start']}): {doc['exit_status']}: {doc.get('reason', '')}"
        for name, doc in published
        if name == "stop" and doc.get("exit_status") != "success"
    ]
