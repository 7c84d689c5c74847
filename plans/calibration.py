"""XRD detector calibration on a calibrant (CeO2, SRM 674b)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp

from .validation import PlanArgumentError, require_positive

KNOWN_CALIBRANTS = ("CeO2", "LaB6", "Si", "Al2O3")


def calibrate_xrd(
    detector,
    poni_path: str | os.PathLike,
    *,
    exposure_s: float = 1.0,
    calibrant: str = "CeO2",
    geometry: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
):
    """Take one frame of the calibrant; the live calibration analysis refines the
    detector geometry (distance, beam centre) from its rings and writes ``poni_path``;
    the detector then records that geometry for every later run.

    geometry: starting geometry (pyFAI config dict; default the detector's current one);
    it must be within a few percent of the truth for the rings to be found.
    Raises PlanArgumentError before anything moves for a bad exposure, an unknown
    calibrant or an unwritable folder; RuntimeError if no geometry came out (the
    analysis log says why: too few rings, beam off).
    """
    require_positive("exposure_s", exposure_s)
    if calibrant not in KNOWN_CALIBRANTS:
        raise PlanArgumentError(f"calibrant must be one of {KNOWN_CALIBRANTS}, got {calibrant!r}.")
    poni_path = Path(poni_path).resolve()
    if not poni_path.parent.is_dir() or not os.access(poni_path.parent, os.W_OK):
        raise PlanArgumentError(f"Cannot write the PONI file in {poni_path.parent}.")
    if geometry is None:
        if not hasattr(detector, "geometry_config"):
            raise PlanArgumentError("No starting geometry: pass geometry=ai.get_config().")
        geometry = detector.geometry_config()
    metadata = {
        "technique": "xrd_calibration",
        "plan_name": "calibrate_xrd",
        "image_key": detector.name,
        "xrd_geometry": geometry,
        "calibrant": calibrant,
        "poni_path": str(poni_path),
        "exposure_s": exposure_s,
        **(md or {}),
    }
    from ophyd_async.core import TriggerInfo

    poni_path.unlink(missing_ok=True)
    yield from bps.prepare(detector, TriggerInfo(livetime=exposure_s), wait=True)
    uid = yield from bp.count([detector], md=metadata)
    if not poni_path.exists():
        raise RuntimeError(f"The calibration analysis wrote no geometry to {poni_path}; see the session log.")
    detector.set_geometry(poni_path)
    return uid
