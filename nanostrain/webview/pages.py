"""What the web view's pages show, read through Tiled clients of the catalog.

`runs_page` is the runs listing (`nanostrain.listing`); `run_page` is one raw run: its
summary, its start document, and each derived run's scalar results as tables (one per
stream: the columns whose per-event value is a scalar, e.g. the XRD reduction's a, c and
potential per frame), with a figure where the analysis has one (`nanostrain.webview.figures`).
Everything returned is JSON-ready.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..listing import list_runs, summarize
from ..schema.catalog import derived_runs
from .figures import has_figure

#: stream columns that are bookkeeping, not results
_BOOKKEEPING = ("seq_num",)
#: the raw event a derived row comes from: a table of nothing else is not shown
_RAW_SEQ_NUM = "raw_seq_num"


def runs_page(raw, derived, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` raw runs (newest first) with their derived runs, as JSON."""
    return [summary.to_json() for summary in list_runs(raw, derived, limit)]


def run_page(raw_run, derived) -> dict[str, Any]:
    """The page of ``raw_run`` (a raw run's client): ``run`` (its summary), ``metadata``
    (its start document as ``[key, value]`` pairs) and ``derived`` (each derived run's
    summary with ``tables``, ``figure`` (a relative URL or None) and ``version`` (rows so
    far: it grows as the analysis publishes, so a page can tell when to redraw))."""
    results = []
    for run in derived_runs(derived, raw_run.metadata["start"]["uid"]):
        summary = summarize(run.metadata).to_json()
        tables = [table for table in (scalar_table(run[name], name) for name in run)
                  if table["rows"] and set(table["columns"]) - {_RAW_SEQ_NUM}]
        summary.update(
            tables=tables,
            version=sum(len(table["rows"]) for table in tables),
            figure=f"../figure/{summary['uid']}.png" if has_figure(summary["analysis"]) else None,
        )
        results.append(summary)
    start = raw_run.metadata["start"]
    return {
        "run": summarize(raw_run.metadata).to_json(),
        "metadata": [[key, _json_value(start[key])] for key in sorted(start)],
        "derived": results,
    }


def scalar_table(stream, name: str) -> dict[str, Any]:
    """The scalar columns of an event stream client (data keys of shape ``[]``), one row
    per event: ``{"stream", "columns", "units", "rows"}``. Array columns (patterns,
    maps) are left to the figures."""
    data_keys: Mapping[str, Mapping[str, Any]] = stream.metadata.get("data_keys", {})
    columns = [key for key, spec in data_keys.items() if not spec.get("shape") and key not in _BOOKKEEPING]
    table = {"stream": name, "columns": columns, "units": {key: data_keys[key].get("units") or "" for key in columns}, "rows": []}
    if not columns:
        return table
    try:
        dataset = stream.read(variables=columns)
    except KeyError:  # the descriptor is there, no event yet
        return table
    if not all(key in dataset for key in columns):  # likewise
        return table
    values = [np.atleast_1d(np.asarray(dataset[key])) for key in columns]
    table["rows"] = [[_json_value(column[i]) for column in values] for i in range(min(map(len, values)))]
    return table


def _json_value(value: Any) -> Any:
    """``value`` as JSON-ready Python: numpy scalars unwrapped, NaN and inf as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return json.loads(json.dumps(value, default=str))
