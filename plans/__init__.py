"""Bluesky plans of nanostrain, one module per technique, plus shared stubs."""

from __future__ import annotations

from collections.abc import Callable


def registry() -> dict[str, Callable]:
    """Every public plan by name (what the profile puts in the session namespace)."""
    from .alignment import alignment_scan

    return {"alignment_scan": alignment_scan}
