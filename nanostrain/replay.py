"""Replay: push a stored run's documents through callbacks, frames read through Tiled.

A replay sees the documents ``run.documents()`` serves (the catalog's own export of the
run, StreamResource/StreamDatum included) and reads detector frames through the catalog,
so it needs no access to the beamline's files. Analysis callbacks are built to give the
same derived results in replay as live (see `nanostrain.callbacks.derived`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .callbacks.derived import AnalysisCallback
from .callbacks.frames import TiledFrameSource
from .callbacks.registry import default_analyses

Document = dict[str, Any]


def run_documents(run) -> list[tuple[str, Document]]:
    """All documents of a catalog run, in the order the catalog exports them."""
    return [(name, doc) for name, doc in run.documents()]


def replay(
    run,
    callbacks: Iterable[Callable[[str, Document], Any]] | None = None,
    catalog=None,
) -> list[tuple[str, Document]]:
    """Push the documents of ``run`` (a BlueskyRun client, or a uid with ``catalog``)
    through ``callbacks`` (default: fresh instances of every live analysis).

    Returns the documents the analysis callbacks published (their derived runs), so the
    caller can compare them with the live ones or write them with a TiledWriter.
    """
    if isinstance(run, str):
        if catalog is None:
            raise ValueError("Replay by uid needs the catalog client: replay(uid, catalog=...).")
        run = catalog[run]
    callbacks = list(default_analyses() if callbacks is None else callbacks)
    published: list[tuple[str, Document]] = []
    frames = TiledFrameSource(run)
    for callback in callbacks:
        if isinstance(callback, AnalysisCallback):
            callback.frame_source = frames
            callback.subscribe(lambda name, doc: published.append((name, doc)))
    for name, doc in run_documents(run):
        for callback in callbacks:
            callback(name, doc)
    return published
