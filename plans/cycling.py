"""In situ cycling plans: a cycling protocol runs while XRD frames are taken.

`operando_xrd` drives the cycler through a protocol (`plans.protocols`) and, while each
step runs, records the electrochemistry in the ``echem`` stream (every sample of the
channel's data log, read at each poll) and an XRD
frame (with the cycler's readings) in the ``primary`` stream at a cadence in time or in
specific capacity. A live value published by an analysis (an ophyd-async signal, e.g. the
XRD callback's ``phase_separation_A``) can densify frames near a transition. With a beam
monitor, frames are skipped while the beam is off and the cycling goes on (the gap is in
the data, the electrochemistry is not). `gitt` and `cycle_cell` are the same machinery
without a detector.

The protocol runs on the instrument: each step is set on the channel's
`devices.cycler.UnattendedChannel`, which the RunEngine does not stop when it pauses or
suspends (a beam dump, `nanostrain.plans.suspenders`), and the ``echem`` stream is read
from the channel's own data log (`devices.cycler.CyclerLog`, one event per logged
sample), so every point the channel logged while the plan was paused or suspended is
recorded when it goes on: none is lost, none duplicated (the plans are not rewindable:
they go on where they stopped). A deferred pause lands at a checkpoint between polls.
Aborting or stopping the plan stops the channel's step.
"""

from dataclasses import dataclass
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Movable, Readable
from bluesky.utils import MsgGenerator, short_uid

from ..devices.cycler import CyclerLog
from ..schema.cycler import CyclerState, CyclerStep
from ..schema.start import ELECTROCHEMISTRY, XRD, start_metadata
from .metadata import plan_args
from .protocols import Protocol, ProtocolSpec, ProtocolStep, gitt as gitt_protocol, resolve_protocol
from .validation import (
    AREA_DETECTOR,
    READABLE,
    DeviceRole,
    PlanArgumentError,
    require_device,
    require_finite,
    require_metadata,
    require_optional_device,
    require_positive,
    require_pyfai_config,
    require_range,
)

#: Active mass accepted by the plans: 0.01 mg to 100 mg.
ACTIVE_MASS_RANGE_G = (1e-5, 0.1)
#: Wall-clock seconds between echem readings: 1 ms to 1 min.
POLL_S_RANGE = (1e-3, 60.0)
#: Longest frame cadence in step time, s (a week).
MAX_CADENCE_S = 7 * 24 * 3600.0
#: Longest frame cadence in capacity, mAh/g (beyond any cathode's capacity).
MAX_CADENCE_MAH_G = 1000.0
#: How much denser frames may come while the feedback is above its threshold.
DENSE_FACTOR_RANGE = (1.0, 1000.0)
#: Largest magnitude of a feedback threshold (in the feedback signal's units).
MAX_FEEDBACK_THRESHOLD = 1e6
#: Largest beam-monitor threshold (the monitor's units, photons/s for an ion chamber).
MAX_FLUX = 1e16
#: Longest detector exposure, s.
MAX_EXPOSURE_S = 3600.0

#: The group of the cycler's running step (a plain ``wait()`` does not wait for it).
STEP_GROUP = "cycler-step"

#: A cycler channel: a `devices.cycler.Cycler` (movable to a step, with the readings the
#: plans record and the channel's current limit).
CYCLER = DeviceRole(
    "a cycler channel", (Readable, Movable),
    children=("current_limit", "potential", "current", "step_time", "step_capacity", "total_charge",
              "step_index", "cycle_index", "state"),
)


@dataclass(frozen=True)
class Cadence:
    """When to take a frame: every ``every`` units of ``quantity`` ("time_s" of the
    step, or "capacity_mAh_g" passed in the step), ``dense_factor`` x more often while the
    feedback signal is at or above ``threshold``."""

    quantity: str
    every: float
    dense_factor: float = 1.0
    threshold: float | None = None


def _validate(cycler: Any, protocol: ProtocolSpec, active_mass_g: float, poll_s: float) -> Protocol:
    """The resolved protocol, after the checks every cycling plan runs first."""
    require_device("cycler", cycler, CYCLER)
    steps = resolve_protocol(protocol)
    require_range("active_mass_g", active_mass_g, *ACTIVE_MASS_RANGE_G, unit="g")
    require_range("poll_s", poll_s, *POLL_S_RANGE, unit="s")
    return steps


def _cadence(cadence_s, cadence_mAh_g, feedback, feedback_threshold, dense_factor) -> Cadence:
    if (cadence_s is None) == (cadence_mAh_g is None):
        raise PlanArgumentError("Give exactly one of cadence_s (frames every N s) or cadence_mAh_g (every N mAh/g).")
    if (feedback is None) != (feedback_threshold is None):
        raise PlanArgumentError("feedback and feedback_threshold go together.")
    require_optional_device("feedback", feedback, READABLE)
    if feedback_threshold is not None:
        feedback_threshold = require_range("feedback_threshold", feedback_threshold,
                                           -MAX_FEEDBACK_THRESHOLD, MAX_FEEDBACK_THRESHOLD)
    dense_factor = require_range("dense_factor", dense_factor, *DENSE_FACTOR_RANGE)
    if cadence_s is not None:
        return Cadence("time_s", require_positive("cadence_s", cadence_s, MAX_CADENCE_S, "s"), dense_factor,
                       feedback_threshold)
    every = require_positive("cadence_mAh_g", cadence_mAh_g, MAX_CADENCE_MAH_G, "mAh/g")
    return Cadence("capacity_mAh_g", every, dense_factor, feedback_threshold)


def _geometry(detector: Any, geometry: dict[str, Any] | None) -> dict[str, Any]:
    """The pyFAI geometry config to record: ``geometry`` if it builds a pyFAI geometry,
    else the detector's own."""
    if geometry is None:
        if not hasattr(detector, "geometry_config"):
            raise PlanArgumentError(
                f"detector {detector.name!r} has no geometry_config: pass geometry=ai.get_config() (from the PONI "
                "calibration)."
            )
        return detector.geometry_config()
    return require_pyfai_config("geometry", geometry)


def check_current_limit(cycler: Any, protocol: Protocol, active_mass_g: float) -> MsgGenerator[None]:
    """Plan stub: read the channel's ``current_limit`` (mA) and raise `PlanArgumentError`
    naming the first protocol step whose current (rate_mA_g x active_mass_g) exceeds it.
    Reads only; a cycling plan runs it first, before the cycler is touched or the run opens."""
    limit = yield from bps.rd(cycler.current_limit)
    for index, step in enumerate(protocol):
        current_mA = step.rate_mA_g * active_mass_g
        if current_mA > limit:
            raise PlanArgumentError(
                f"protocol step {index} ({step.label or step.mode}): {step.rate_mA_g:g} mA/g x active_mass_g "
                f"{active_mass_g:g} g = {current_mA:.4g} mA exceeds {cycler.name}'s current limit {limit:.4g} mA."
            )


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


def record_log(log: CyclerLog) -> MsgGenerator[int]:
    """Plan stub: record every sample the channel logged since the last call as an event
    of the ``echem`` stream; return how many."""
    yield from bps.trigger(log, group=short_uid("log"), wait=True)
    count = log.pending
    for _ in range(count):
        yield from bps.create("echem")
        yield from bps.read(log)
        yield from bps.save()
    return count


def _run_protocol(cycler, protocol, active_mass_g, poll_s, take_frame, stop_when_pulse_hits_limit):
    """Run each step on the unattended channel; while it runs, every poll: the echem
    samples logged since the last poll, then ``take_frame(index, step)``. Not rewindable
    (the channel goes on by itself; a replay would start a step twice); a checkpoint
    before each step and each poll is where a deferred pause lands. If the plan ends
    early (abort, stop, an error), the running step is stopped."""
    log = CyclerLog(cycler)
    running = {"status": None}

    def steps():
        for index, step in enumerate(protocol):
            yield from bps.checkpoint()
            status = yield from bps.abs_set(cycler.unattended, cycler_step(step, active_mass_g), group=STEP_GROUP)
            running["status"] = status
            yield from take_frame(index, None)
            while not status.done:
                yield from record_log(log)
                yield from take_frame(index, step)
                yield from bps.checkpoint()
                yield from bps.sleep(poll_s)
            yield from record_log(log)
            if stop_when_pulse_hits_limit and step.duration_s > 0 and step.mode != "REST":
                state = yield from bps.rd(cycler.state)
                if state == CyclerState.LIMIT_REACHED:
                    return index + 1
        return len(protocol)

    def stop_unfinished_step():
        status = running["status"]
        if status is not None and not status.done:
            yield from bps.stop(cycler)

    plan = bpp.finalize_wrapper(bpp.stage_wrapper(steps(), [log]), stop_unfinished_step)
    return (yield from bpp.rewindable_wrapper(plan, False))


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
    records ``plan_args``. Returns the run uid.

    Limits (PlanArgumentError naming the argument, before the first message): cycler a
    cycler channel, detector an area detector, monitor and feedback readable;
    active_mass_g in ACTIVE_MASS_RANGE_G; cadence_s in (0, MAX_CADENCE_S] s or
    cadence_mAh_g in (0, MAX_CADENCE_MAH_G]; dense_factor in DENSE_FACTOR_RANGE;
    |feedback_threshold| <= MAX_FEEDBACK_THRESHOLD; min_flux in [0, MAX_FLUX];
    exposure_s in (0, MAX_EXPOSURE_S] s; poll_s in POLL_S_RANGE s; every number finite.
    Then, as the plan's first messages (reads only, before the cycler is touched or the
    run opens): every step's current (mA) within the channel's ``current_limit``.
    `plans.validate` runs the checks before the first message without running.

    Pauses and beam dumps (module docstring): the cycler keeps cycling; the ``echem``
    stream gets every sample the channel logged meanwhile, frames resume with the beam,
    the installed suspenders record the gap in ``beam_gaps``; aborting stops the step.
    """
    arguments = plan_args(locals())
    protocol = _validate(cycler, protocol, active_mass_g, poll_s)
    require_device("detector", detector, AREA_DETECTOR)
    cadence = _cadence(cadence_s, cadence_mAh_g, feedback, feedback_threshold, dense_factor)
    require_positive("exposure_s", exposure_s, MAX_EXPOSURE_S, "s")
    require_optional_device("monitor", monitor, READABLE)
    require_range("min_flux", min_flux, 0.0, MAX_FLUX)
    require_metadata(sample, md)
    geometry = _geometry(detector, geometry)
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
        if monitor is not None:
            yield from bps.trigger(monitor, group=short_uid("monitor"), wait=True)  # a fresh reading
            if (yield from bps.rd(monitor)) < min_flux:
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

    yield from check_current_limit(cycler, protocol, active_mass_g)
    return (yield from inner())


def _cycling_run(
    plan_name: str,
    cycler: Movable,
    protocol: Protocol,
    active_mass_g: float,
    poll_s: float,
    sample: dict[str, Any] | None,
    md: dict[str, Any] | None,
    arguments: dict[str, Any],
    stop_when_pulse_hits_limit: bool,
) -> MsgGenerator[str]:
    """A cycling run without a detector (`gitt`, `cycle_cell`): the checked ``protocol``
    on the channel, the ``echem`` stream only, under the electrochemistry contract of
    `nanostrain.schema.start`; the channel's current limit is checked first."""
    require_metadata(sample, md)
    metadata = start_metadata(
        ELECTROCHEMISTRY, plan_name, md,
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
        yield from _run_protocol(cycler, protocol, active_mass_g, poll_s, no_frames,
                                 stop_when_pulse_hits_limit=stop_when_pulse_hits_limit)

    yield from check_current_limit(cycler, protocol, active_mass_g)
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
    ``plan_args`` and ``sample``. Returns the run uid. Checks as `operando_xrd` (cycler,
    protocol, active_mass_g, poll_s, sample, md; then the channel's current limit).
    Pauses as `operando_xrd`: the titration goes on, every logged point is recorded."""
    arguments = plan_args(locals())
    protocol = _validate(cycler, gitt_protocol() if protocol is None else protocol, active_mass_g, poll_s)
    return (yield from _cycling_run("gitt", cycler, protocol, active_mass_g, poll_s, sample, md, arguments,
                                    stop_when_pulse_hits_limit=True))


def cycle_cell(
    cycler: Movable,
    protocol: ProtocolSpec,
    *,
    active_mass_g: float,
    poll_s: float = 0.05,
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Cycle the cell on ``cycler`` through ``protocol`` with no detector: e.g. one
    galvanostatic cycle at 100 mA/g to measure a cell's discharge capacity (mAh/g), or a
    formation and long cycling for its capacity retention. ``protocol`` as in
    `operando_xrd` (`plans.protocols` steps, or their JSON form, e.g. ``{"name":
    "galvanostatic", "args": {"rate_mA_g": 100, "cycles": 1}}``); active_mass_g (g)
    turns mA/g into mA; poll_s: wall-clock seconds between echem readings. Every step
    runs to its end (voltage limit or duration). The ``echem`` stream holds every sample
    the channel logged; the start document follows the electrochemistry contract of
    `nanostrain.schema.start` (the electrochemistry analysis derives capacities,
    coulombic efficiency and retention per cycle) and records ``plan_args`` and
    ``sample``. Returns the run uid. Checks as `gitt` (cycler, protocol, active_mass_g,
    poll_s, sample, md; then the channel's current limit). Pauses as `operando_xrd`: the
    cycling goes on, every logged point is recorded."""
    arguments = plan_args(locals())
    protocol = _validate(cycler, protocol, active_mass_g, poll_s)
    return (yield from _cycling_run("cycle_cell", cycler, protocol, active_mass_g, poll_s, sample, md, arguments,
                                    stop_when_pulse_hits_limit=False))
