"""What a listing of the catalog shows of each run: `nanostrain catalog ls` and the web view.

A `RunSummary` is read from a run's metadata alone (its start and stop documents), so a
listing costs one request per page of runs, however large the runs are. `list_runs`
pairs the newest raw runs with the derived runs that name them (``start.derived_from``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

RUNNING = "running"
"""The status of a run without a stop document (still taking data, or cut off)."""


@dataclass(frozen=True)
class RunSummary:
    """One line of a listing.

    time: the start document's ``time`` (s since the epoch, UTC).
    status: the stop document's ``exit_status`` ("success", "abort", "fail"), or
        `RUNNING` while there is no stop document.
    analysis: a derived run's analysis name ("" for a raw run).
    derived: the derived runs of a raw run, oldest first (empty for a derived run).
    """

    uid: str
    time: float
    scan_id: int | None
    plan: str
    sample: str
    technique: str
    status: str
    analysis: str = ""
    derived_from: str = ""
    derived: tuple[RunSummary, ...] = field(default_factory=tuple)

    @property
    def local_time(self) -> str:
        """``time`` as local ``YYYY-MM-DD HH:MM:SS``."""
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (with ``local_time``; derived runs nested likewise)."""
        out = asdict(self)
        out["local_time"] = self.local_time
        out["derived"] = [run.to_json() for run in self.derived]
        return out


def sample_name(start: Mapping[str, Any]) -> str:
    """The sample a start document names: ``sample.name`` (a dict), or ``sample`` (a
    string), or "" if it names none."""
    sample = start.get("sample")
    if isinstance(sample, Mapping):
        return str(sample.get("name") or sample.get("calibrant") or "")
    return "" if sample is None else str(sample)


def summarize(metadata: Mapping[str, Any], derived: tuple[RunSummary, ...] = ()) -> RunSummary:
    """The `RunSummary` of a run whose Tiled metadata (``{"start": ..., "stop": ...}``) is
    ``metadata``. A derived run's plan, sample and technique are its raw run's unless it
    records its own."""
    start = metadata.get("start")
    if not isinstance(start, Mapping) or "uid" not in start:
        raise ValueError(f"metadata: not a bluesky run's (no start document with a uid): {sorted(metadata)}")
    stop = metadata.get("stop") or {}
    return RunSummary(
        uid=start["uid"],
        time=float(start.get("time", 0.0)),
        scan_id=start.get("scan_id"),
        plan=str(start.get("plan_name", "")),
        sample=sample_name(start),
        technique=str(start.get("technique", "")),
        status=str(stop.get("exit_status", RUNNING)),
        analysis=str(start.get("analysis", "")),
        derived_from=str(start.get("derived_from", "")),
        derived=tuple(derived),
    )


def list_runs(raw, derived, limit: int = 50) -> list[RunSummary]:
    """The ``limit`` newest raw runs of ``raw`` (a ``CatalogOfBlueskyRuns`` client), newest
    first by start time, each with its derived runs from ``derived`` (oldest first)."""
    from tiled.queries import In

    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    newest = [run.metadata for run in raw.sort(("start.time", -1)).values().head(limit)]
    uids = [metadata["start"]["uid"] for metadata in newest]
    by_raw: dict[str, list[RunSummary]] = {uid: [] for uid in uids}
    if uids:
        for run in derived.search(In("start.derived_from", uids)).sort(("start.time", 1)).values():
            summary = summarize(run.metadata)
            by_raw[summary.derived_from].append(summary)
    return [summarize(metadata, tuple(by_raw[metadata["start"]["uid"]])) for metadata in newest]



TABLE_COLUMNS = ("time", "scan_id", "plan", "sample", "technique", "status", "uid")


def format_table(runs: list[RunSummary], uid_chars: int = 8) -> str:
    """``runs`` (from `list_runs`) as a plain-text table under a header: a line per raw
    run, then one per derived run, indented, with ``-> <analysis>`` as its plan; uids cut
    to ``uid_chars`` characters (the catalog takes partial uids)."""
    rows = [tuple(name.upper() for name in TABLE_COLUMNS)]
    for run in runs:
        rows.append((run.local_time, "" if run.scan_id is None else str(run.scan_id), run.plan, run.sample,
                     run.technique, run.status, run.uid[:uid_chars]))
        rows += [("  " + d.local_time, "", f"-> {d.analysis}", d.sample, d.technique, d.status, d.uid[:uid_chars])
                 for d in run.derived]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
