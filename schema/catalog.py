"""The catalog's layout, which the catalog service, replay and the session agree on.

The root of the catalog holds two nodes with the spec ``CatalogOfBlueskyRuns`` (version
3.0: bluesky-tiled-plugins' SQL catalog), so a Tiled client of either is a
``CatalogOfBlueskyRuns``:

* ``raw`` (`RAW_NODE`): the runs the RunEngine took; ``raw[-1]`` is the newest of them;
* ``derived`` (`DERIVED_NODE`): the runs live analyses published, each naming its raw run
  in ``start.derived_from`` (`nanostrain.schema.start.DERIVED_KEYS`); `derived_runs`
  finds them.
"""

from __future__ import annotations

from collections.abc import Callable

RAW_NODE = "raw"
DERIVED_NODE = "derived"
RUNS_SPEC = ("CatalogOfBlueskyRuns", "3.0")


def derived_runs(derived, raw_uid: str) -> list:
    """The derived runs (clients) in the ``derived`` node whose start document names raw
    run ``raw_uid`` (``Key("start.derived_from") == raw_uid``), oldest first."""
    from tiled.queries import Key

    return list(derived.search(Key("start.derived_from") == raw_uid).values())


def derived_node_of(run):
    """The ``derived`` node beside the ``raw`` node that holds ``run`` (a raw run client)."""
    return run.parent.parent[DERIVED_NODE]


def derived_identity(start: dict) -> tuple[str, str, str, str]:
    """What makes two derived runs the same computation: raw run, analysis, analysis
    version and parameters (as JSON with sorted keys)."""
    import json

    return (start.get("derived_from", ""), start.get("analysis", ""), str(start.get("analysis_version", "")),
            json.dumps(start.get("parameters") or {}, sort_keys=True))


class SupersedingWriter:
    """Writes derived runs through ``writer`` (a TiledWriter into ``derived``, or the
    session's journal-backed recorder) so that there is one per computation: when a
    derived run ends successfully, every other derived run of the same `derived_identity`
    (an earlier computation, or a partial or failed one) is deleted from ``derived`` (the
    node, or a function that returns it). A failed derived run deletes nothing, so a
    failed recomputation never takes a good result away. The deletion runs on a thread of
    its own, so a catalog that is slow or down never holds the caller (the RunEngine);
    `flush` waits for it. If the catalog cannot be asked, the older runs stay and a
    warning says so. ``superseded`` lists the deleted uids.

    ``on_deleted`` is called with each uid once the catalog has deleted that run, e.g. to
    remove its array files (`nanostrain.derived_files.remove_run_folder`; this layer does
    no file I/O). Files go after the catalog entry, so the catalog never names a missing
    file; if ``on_deleted`` fails, a warning says so and the other runs still go."""

    def __init__(self, writer, derived, on_deleted: Callable[[str], object] | None = None) -> None:
        self.writer = writer
        self._derived = derived if callable(derived) else (lambda: derived)
        self._on_deleted = on_deleted
        self._starts: dict[str, dict] = {}
        self._threads: list = []
        self.superseded: list[str] = []

    def __call__(self, name: str, doc: dict) -> None:
        import threading

        self.writer(name, doc)
        if name == "start":
            self._starts[doc["uid"]] = doc
        elif name == "stop":
            start = self._starts.pop(doc["run_start"], None)
            if start is not None and doc.get("exit_status") == "success":
                thread = threading.Thread(target=self._supersede_logged, args=(start,), daemon=True,
                                          name=f"nanostrain-supersede-{start['uid'][:8]}")
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
                thread.start()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the deletions asked for so far are done (or ``timeout`` s each)."""
        for thread in list(self._threads):
            thread.join(timeout)

    def _supersede_logged(self, start: dict) -> None:
        try:
            self._supersede(start)
        except Exception as error:  # noqa: BLE001 - the new run is recorded; only the clean-up waits
            import logging

            logging.getLogger(__name__).warning(
                "Derived run %s: older runs of the same computation not replaced (%s).", start["uid"], error)

    def _supersede(self, start: dict) -> None:
        derived = self._derived()
        same = derived_identity(start)
        older = [run.metadata["start"]["uid"] for run in derived_runs(derived, start["derived_from"])
                 if run.metadata["start"]["uid"] != start["uid"] and derived_identity(run.metadata["start"]) == same]
        for uid in older:
            derived.delete_contents(uid, recursive=True, external_only=False)
            self.superseded.append(uid)
            if self._on_deleted is not None:
                self._notify_deleted(uid)

    def _notify_deleted(self, uid: str) -> None:
        """Call ``on_deleted`` with ``uid``; a failure is logged, never raised."""
        try:
            self._on_deleted(uid)
        except Exception as error:  # noqa: BLE001 - the run is gone from the catalog; only its clean-up failed
            import logging

            logging.getLogger(__name__).warning("Superseded derived run %s: clean-up failed (%s).", uid, error)
