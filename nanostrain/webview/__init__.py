"""The live web view that `nanostrain serve` mounts beside the catalog, at ``/view/``.

* ``/view/``: the raw runs, newest first (time, scan_id, plan, sample, technique, status)
  with their derived runs;
* ``/view/run/<uid>``: a raw run's metadata and its derived runs' results (scalar tables
  per stream, figures drawn by the callbacks' plotting functions as PNG);
* ``/view/api/runs``, ``/view/api/run/<uid>``: the same as JSON. The pages are static
  HTML and one script (package data, nothing from the internet) that render this JSON
  and poll it, so the page of a run in progress updates as frames are analysed.

The view reads through the catalog's own HTTP API (a Tiled client of the server it is
mounted in), as any other client does: it sees what the catalog holds, nothing else.
It is served only by a catalog with anonymous reads (the default): a ``--private``
catalog would otherwise show its runs to anyone through the view.
"""

from __future__ import annotations

from .routes import VIEW_PREFIX, mount_view

__all__ = ["VIEW_PREFIX", "mount_view"]
