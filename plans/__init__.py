"""Bluesky plans of nanostrain, one module per technique, plus shared stubs."""

from __future__ import annotations

from collections.abc import Callable


def registry() -> dict[str, Callable]:
    """Every public plan by name (what the profile puts in the session namespace)."""
    from .alignment import alignment_scan
    from .calibration import calibrate_xrd
    from .cycling import gitt, operando_xrd

    return {"alignment_scan": alignment_scan, "operando_xrd": operando_xrd, "gitt": gitt, "calibrate_xrd": calibrate_xrd}
