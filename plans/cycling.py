"""In situ cycling plans: a cycling protocol runs while XRD frames are taken.

`operando_xrd` drives the cycler through a protocol (`plans.protocols`) and, while each
step runs, records the electrochemistry in the ``echem`` stream at every poll and an XRD
frame (with the cycler's readings) in the ``primary`` stream at a cadence in time or in
specific capacity. A live value published by an analysis (an ophyd-async signal, e.g. the
XRD callback's ``phase_separation_A``) can densify frames near a transition. With a beam
monitor, frames are skipped while the beam is off and the cycling goes on (the gap is in
the data, the electrochemistry is not). `gitt` is the same machinery without a detector.
"""

from dataclasses import dataclass
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Movable, Readable
from bluesky.utils import MsgGenerator

from ..schema.cycler import CyclerState, CyclerStep
from ..schema.start import ELECTROCHEMISTRY, XRD, start_metadata
from .metadata import plan_args
from .protocols import Protocol, ProtocolSpec, ProtocolStep, gitt as gitt_protocol, resolve_protocol
from .validation import PlanArgumentError, require_positive, require_range

#: Active mass accepted by the plans: 0.01 mg to 100 mg.
ACTIVE_MASS_RANGE_G = (1e-5, 0.1)


@dataclass(frozen=True)
class Cadence:
    """When to take a frame: every ``every`` units of ``quantity`` ("time_s" of the
    step, or "capacity_mAh_g" passed in the step), ``dense_factor`` x more often while the
    feedback signal is at or above ``threshold``."""

    quantity: str
    every: float
    dense_factor: float = 1.0
    threshold: float | None = None


def _validate(protocol: ProtocolSpec, active_mass_g: float, poll_s: float) -> Protocol:
    """The resolved protocol, after the checks every cycling plan runs first."""
    steps = resolve_protocol(protocol)
    require_range("active_mass_g", active_mass_g, *ACTIVE_MASS_RANGE_G, unit="g")
    require_positive("poll_s", poll_s)
    return steps


def _readable(name: str, device: Any) -> None:
    """``device`` is an object (a queue item names it; the queue server resolves the name)."""
    if isinstance(device, str) or not isinstance(device, Readable):
        raise PlanArgumentError(
            f"{name} must be a readable device or signal, got {device!r} (a queue item gives its name; "
            "the queue server passes the object)."
        )


def _cadence(cadence_s, cadence_mAh_g, feedback, feedback_threshold, dense_factor) -> Cadence:
    if (cadence_s is None) == (cadence_mAh_g is None):
        raise PlanArgumentError("Give exactly one of cadence_s (frames every N s) or cadence_mAh_g (every N mAh/g).")
    if (feedback is None) != (feedback_threshold is None):
        raise PlanArgumentError("feedback and feedback_threshold go together.")
    if feedback is not None:
        _readable("feedback", feedback)
    if dense_factor < 1:
        raise PlanArgumentError(f"dense_factor must be >= 1, got {dense_factor}.")
    if cadence_s is not None:
        return Cadence("time_s", require_positive("cadence_s", cadence_s), dense_factor, feedback_threshold)
    return Cadence("capacity_mAh_g", require_positive("cadence_mAh_g", cadence_mAh_g), dense_factor, feedback_threshold)


def echem_keys(cycler) -> dict[str, str]:
    """Data keys of the cycler's readings, recorded in the start document so analyses
    find them without knowing the device's name."""
    return {
        "potential_V": cycler.potential.name,
        "current_mA": cycler.current.name,
        "step_time_s": cycler.step_time.name,
        "capacity_mAh": cycler.total_charge.name,
        "step_index": cycler.step_index.name,
        "cycle_index": cycler.cycle_index.name,
    }


def cycler_step(step: ProtocolStep, active_mass_g: float) -> CyclerStep:
    """The cycler's absolute step (mA) for a protocol step in mA/g."""
    return CyclerStep(
        mode=step.mode,
        current_mA=step.rate_mA_g * active_mass_g,  # mA/g x g
        v_min=step.v_min,
        v_max=step.v_max,
        duration_s=step.duration_s,
    )


def _protocol_md(protocol: Protocol) -> list[dict[str, Any]]:
    return [vars(step).copy() for step in protocol]


def _run_protocol(cycler, protocol, active_mass_g, poll_s, take_frame, stop_when_pulse_hits_limit):
    """Run each step; while it runs: echem reading every poll, ``take_frame(progress)``."""
    for index, step in enumerate(protocol):
        status = yield from bps.abs_set(cycler, cycler_step(step, active_mass_g))
        yield from take_frame(index, None)
        while not status.done:
            yield from bps.trigger_and_read([cycler], name="echem")
            yield from take_frame(index, step)
            yield from bps.sleep(poll_s)
        yield from bps.trigger_and_read([cycler], name="echem")
        if stop_when_pulse_hits_limit and step.duration_s > 0 and step.mode != "REST":
            state = yield from bps.rd(cycler.state)
            if state == CyclerState.LIMIT_REACHED:
                return index + 1
    return len(protocol)


def operando_xrd(
    cycler: Movable,
    detector: Readable,
    protocol: ProtocolSpec,
    *,
    active_mass_g: float,
    geometry: dict[str, Any] | None = None,
    cadence_s: float | None = None,
    cadence_mAh_g: float | None = None,
    exposure_s: float = 1.0,
    monitor: Readable | None = None,
    min_flux: float = 0.0,
    feedback: Readable | None = None,
    feedback_threshold: float | None = None,
    dense_factor: float = 4.0,
    poll_s: float = 0.05,
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """In situ XRD during galvanostatic cycling.

    cycler: `EpicsCycler` or `SimCycler`; detector: an XRD area detector (frames in the
    ``primary`` stream with the cycler's readings); protocol: `plans.protocols` steps,
    or their JSON form (`plans.protocols.resolve_protocol`: a list of step dicts, or
    ``{"name": "galvanostatic", "args": {...}}``).
    active_mass_g: cathode active mass (g; e.g. 4 mg/cm2 x 1.54 cm2 = 6.16e-3) turning
    mA/g into mA. geometry: the pyFAI geometry config of the detector (``ai.get_config()``;
    default ``detector.geometry_config()``), recorded for the live analysis.
    cadence_s / cadence_mAh_g: a frame every N seconds of step time or N mAh/g passed
    (exactly one), plus one at the start of every step; ``dense_factor`` x more often
    while ``feedback`` (a readable signal, e.g. the live value
    ``xrd_reduction_lattice_change_A`` of `Session.live_signals`; a queue item names it
    and the queue server passes the signal) is >= ``feedback_threshold``.
    exposure_s: detector exposure (s). monitor, min_flux: skip frames while the monitor
    reads below ``min_flux`` (beam off); cycling and echem recording go on.
    poll_s: wall-clock seconds between echem readings.
    md: extra start metadata; it may not replace what the contract
    (`nanostrain.schema.start`) records for the live analyses.
    sample: metadata of the cell (recorded as ``sample``). The start document also
    records ``plan_args``. All arguments are checked before the cycler is touched
    (`plans.validate` runs the same checks without running). Returns the run uid.
    """
    arguments = plan_args(locals())
    protocol = _validate(protocol, active_mass_g, poll_s)
    cadence = _cadence(cadence_s, cadence_mAh_g, feedback, feedback_threshold, dense_factor)
    require_positive("exposure_s", exposure_s)
    if monitor is not None:
        _readable("monitor", monitor)
    if geometry is None:
        if not hasattr(detector, "geometry_config"):
            raise PlanArgumentError("No detector geometry: pass geometry=ai.get_config() (from the PONI calibration).")
        geometry = detector.geometry_config()
    readers = [detector, cycler] + ([monitor] if monitor is not None else [])
    metadata = start_metadata(
        XRD, "operando_xrd", md,
        image_key=detector.name,
        xrd_geometry=geometry,
        active_mass_g=active_mass_g,
        echem_keys=echem_keys(cycler),
        protocol=_protocol_md(protocol),
        cadence=vars(cadence),
        exposure_s=exposure_s,
        plan_args=arguments,
        **({"sample": sample} if sample else {}),
    )
    state = {"next": 0.0, "step": -1, "frames": 0, "skipped": 0}

    def take_frame(index: int, step: ProtocolStep | None):
        if step is None or index != state["step"]:  # a new step: frame now, reset the clock
            state["step"], state["next"] = index, 0.0
        progress = 0.0
        if step is not None:
            if cadence.quantity == "time_s":
                progress = yield from bps.rd(cycler.step_time)
            else:
                progress = abs((yield from bps.rd(cycler.step_capacity))) / active_mass_g  # mAh -> mAh/g
        if progress < state["next"]:
            return
        every = cadence.every
        if feedback is not None and (yield from bps.rd(feedback)) >= cadence.threshold:
            every /= cadence.dense_factor
        state["next"] = progress + every
        if monitor is not None and (yield from bps.rd(monitor)) < min_flux:
            state["skipped"] += 1
            return
        yield from bps.trigger_and_read(readers)
        state["frames"] += 1

    @bpp.stage_decorator([detector])
    @bpp.run_decorator(md=metadata)
    def inner():
        from ophyd_async.core import TriggerInfo

        yield from bps.prepare(detector, TriggerInfo(livetime=exposure_s), wait=True)
        yield from _run_protocol(cycler, protocol, active_mass_g, poll_s, take_frame, stop_when_pulse_hits_limit=False)

    return (yield from inner())


def gitt(
    cycler: Movable,
    *,
    active_mass_g: float,
    protocol: ProtocolSpec | None = None,
    poll_s: float = 0.02,
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Galvanostatic intermittent titration (SCIENCE.md eq. 2): pulses and rests
    (default `protocols.gitt()`: 20 min at 20 mA/g, 140 min rest, 2.8-4.5 V) until a pulse
    reaches the voltage limit; the ``echem`` stream holds the transient for the analysis.
    ``protocol`` as in `operando_xrd` (steps or their JSON form). The start document
    follows the electrochemistry contract of `nanostrain.schema.start` and records
    ``plan_args`` and ``sample``. Returns the run uid."""
    arguments = plan_args(locals())
    protocol = _validate(gitt_protocol() if protocol is None else protocol, active_mass_g, poll_s)
    metadata = start_metadata(
        ELECTROCHEMISTRY, "gitt", md,
        active_mass_g=active_mass_g,
        echem_keys=echem_keys(cycler),
        protocol=_protocol_md(protocol),
        plan_args=arguments,
        **({"sample": sample} if sample else {}),
    )

    def no_frames(index, step):
        return
        yield  # a generator that takes no frame

    @bpp.run_decorator(md=metadata)
    def inner():
        yield from _run_protocol(cycler, protocol, active_mass_g, poll_s, no_frames, stop_when_pulse_hits_limit=True)

    return (yield from inner())
