"""XRD detector calibration on a calibrant (CeO2, SRM 674b).

One channel: the live calibration analysis (`callbacks.xrd_calibration`) refines the
geometry and publishes it as documents and as a live value (a str signal holding the
pyFAI config and the raw run's uid); this plan waits for the value of its own run,
writes the PONI file and sets the detector. Nothing else writes the PONI file, so a
replay of the run cannot touch it. Pauses: a checkpoint before the frame and at every
poll for the answer (a deferred pause lands after the frame; resuming reads the answer).
"""

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.preprocessors import contingency_wrapper, stage_wrapper
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator, RunEngineControlException
from ophyd_async.core import SignalR, TriggerInfo
from pyFAI.geometry import Geometry

from ..analysis.xrd import poni_text, pyfai_geometry
from ..schema.start import XRD_CALIBRATION, start_metadata
from .metadata import plan_args
from .validation import (
    AREA_DETECTOR,
    READABLE,
    PlanArgumentError,
    require_choice,
    require_device,
    require_metadata,
    require_path,
    require_positive,
    require_pyfai_config,
)

KNOWN_CALIBRANTS = ("CeO2", "LaB6", "Si", "Al2O3")
POLL_S = 0.1
#: Longest calibrant exposure, s.
MAX_EXPOSURE_S = 3600.0
#: Longest wait for the calibration analysis, s.
MAX_TIMEOUT_S = 3600.0
#: An XRD detector the plan can set: an area detector with ``set_geometry``.
XRD_DETECTOR = AREA_DETECTOR.requiring("set_geometry")


class CalibrationError(RuntimeError):
    """No refined geometry came for the calibration run (analysis failed, or timeout)."""


def write_poni_atomically(geometry: Geometry, path: str | os.PathLike) -> Path:
    """Write ``geometry`` as a PONI file at ``path`` so that readers see either the old
    file or the complete new one: the text goes to a temporary file in the same folder,
    which then replaces ``path`` (``os.replace``, atomic on one filesystem)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(poni_text(geometry))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def wait_for_geometry(refined_geometry: SignalR[str], raw_uid: str, timeout_s: float) -> MsgGenerator[dict[str, Any]]:
    """Read ``refined_geometry`` until it holds the analysis's answer for run ``raw_uid``;
    return its pyFAI config. Raises `CalibrationError` with the analysis's reason if the
    refinement failed, or if no answer came within ``timeout_s`` (s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        yield from bps.checkpoint()  # a pause lands here, after the frame; resuming reads the answer
        text = yield from bps.rd(refined_geometry)
        message = json.loads(text) if text else {}
        if message.get("raw_uid") == raw_uid:
            if "error" in message:
                raise CalibrationError(f"the calibration analysis failed: {message['error']}")
            return message["pyfai_config"]
        if time.monotonic() > deadline:
            raise CalibrationError(
                f"no refined geometry for run {raw_uid} within {timeout_s} s: is the xrd_calibration "
                "analysis subscribed (live analysis on, or its worker running)?"
            )
        yield from bps.sleep(POLL_S)


def calibrate_xrd(
    detector: Readable,
    poni_path: str,
    refined_geometry: Readable,
    *,
    exposure_s: float = 1.0,
    calibrant: str = "CeO2",
    start_geometry: dict[str, Any] | None = None,
    timeout_s: float = 120.0,
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Take one frame of the calibrant; the live calibration analysis refines the detector
    geometry (distance, beam centre, tilt) from its rings and publishes it on
    ``refined_geometry`` (the analysis's ``geometry`` signal,
    ``session.live_signals["xrd_calibration_geometry"]``); the plan then writes
    ``poni_path`` (atomically; an existing file is replaced only by a new geometry) and the
    detector records that geometry for every later run. Returns the raw run's uid.

    exposure_s: frame exposure (s). start_geometry: pyFAI config dict to start from
    (default the detector's current one); the beam centre may be tens of pixels off and
    the distance a few percent. timeout_s: how long to wait for the analysis (s).
    poni_path: a path (a str; any os.PathLike from Python). refined_geometry: the live
    signal itself (a queue item names it, the queue server passes the signal). sample:
    metadata of the calibrant specimen; the start document records it and ``plan_args``.
    Raises PlanArgumentError before the first message for a detector that is not an area
    detector with ``set_geometry``, a refined_geometry that is not readable, exposure_s
    outside (0, MAX_EXPOSURE_S] s or timeout_s outside (0, MAX_TIMEOUT_S] s, an unknown
    calibrant, a poni_path that is not a path or is in an unwritable folder, no starting
    geometry or one pyFAI cannot build, sample or md not dicts. If no geometry comes
    (too few rings, beam off, analysis not running, timeout) the run is closed with
    exit_status "fail" and the reason, `CalibrationError` is raised, and the PONI file and
    the detector's geometry are left as they were.
    """
    arguments = plan_args(locals())
    require_device("detector", detector, XRD_DETECTOR)
    require_device("refined_geometry", refined_geometry, READABLE)
    require_positive("exposure_s", exposure_s, MAX_EXPOSURE_S, "s")
    require_positive("timeout_s", timeout_s, MAX_TIMEOUT_S, "s")
    require_choice("calibrant", calibrant, KNOWN_CALIBRANTS)
    require_metadata(sample, md)
    poni_path = Path(require_path("poni_path", poni_path)).resolve()
    if not poni_path.parent.is_dir() or not os.access(poni_path.parent, os.W_OK):
        raise PlanArgumentError(f"poni_path: cannot write the PONI file in {poni_path.parent}.")
    if poni_path.is_dir():
        raise PlanArgumentError(f"poni_path {poni_path} is a folder, not a PONI file.")
    if poni_path.exists() and not os.access(poni_path, os.W_OK):
        raise PlanArgumentError(f"poni_path: cannot replace the PONI file {poni_path}.")
    if start_geometry is None:
        if not hasattr(detector, "geometry_config"):
            raise PlanArgumentError(f"detector {detector.name!r} has no geometry_config: pass start_geometry=ai.get_config().")
        start_geometry = detector.geometry_config()
    start_geometry = require_pyfai_config("start_geometry", start_geometry)
    metadata = start_metadata(
        XRD_CALIBRATION, "calibrate_xrd", md,
        image_key=detector.name, xrd_geometry=start_geometry, calibrant=calibrant,
        poni_path=str(poni_path), exposure_s=exposure_s, detectors=[detector.name], num_points=1,
        plan_args=arguments, **({"sample": sample} if sample else {}),
    )

    def calibrate(raw_uid: str) -> MsgGenerator[None]:
        yield from bps.checkpoint()
        yield from bps.trigger_and_read([detector])
        config = yield from wait_for_geometry(refined_geometry, raw_uid, timeout_s)
        write_poni_atomically(pyfai_geometry(config), poni_path)
        detector.set_geometry(poni_path)

    def run() -> MsgGenerator[str]:
        yield from bps.prepare(detector, TriggerInfo(livetime=exposure_s), wait=True)
        raw_uid = yield from bps.open_run(md=metadata)

        def close_failed(error: Exception) -> MsgGenerator[None]:
            if isinstance(error, RunEngineControlException):
                yield from bps.close_run(exit_status=error.exit_status)
            else:
                yield from bps.close_run(exit_status="fail", reason=f"{type(error).__name__}: {error}")

        yield from contingency_wrapper(calibrate(raw_uid), except_plan=close_failed, else_plan=bps.close_run)
        return raw_uid

    return (yield from stage_wrapper(run(), [detector]))
