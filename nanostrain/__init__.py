"""nanostrain: Bluesky/Tiled plugins for strain and chemical heterogeneity in battery
cathode particles: devices, plans, live analysis, catalog and replay."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "make_session", "replay"]


def __getattr__(name: str):
    # Lazy: `import nanostrain.analysis` must not pull in bluesky, tiled or ophyd. The
    # replay function lives in `nanostrain.replaying` (a module named `replay` would
    # shadow the function here as soon as it is imported).
    if name == "replay":
        from .replaying import replay

        return replay
    if name == "make_session":
        from .session import make_session

        return make_session
    raise AttributeError(name)
