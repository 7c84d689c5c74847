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
