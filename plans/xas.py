"""Ex situ XAS plans (SCIENCE.md section 5): Ni K-edge XANES/EXAFS in transmission.

`xas_scan` steps a DCM (`devices.dcm.DcmEnergy`) through regions in energy (eV relative
to ``e0_eV``) and in photoelectron wavenumber k (1/A), counting the three ion chambers
(`devices.xas.IonChambers`: I0, It, Iref) at every point for a dwell time that may grow
with k (k-weighted dwell: the EXAFS signal falls as k grows, so counting longer there
evens out the noise of k^w chi(k)):

    E(k) = e0 + hbar^2 k^2 / (2 m_e) = e0 + 3.80998 eV A^2 k^2,
    dwell(k) = dwell_s (k / k_start)^k_weight.

A region is a dict: ``{"space": "E", "start": -150, "stop": -20, "step": 10,
"dwell_s": 0.1}`` (eV relative to e0) or ``{"space": "k", "start": 2.8, "stop": 14,
"step": 0.05, "dwell_s": 0.1, "k_weight": 2}`` (1/A); ``stop`` is included when it falls
on the grid. The regions must follow one another in increasing energy. Every point goes to the
``primary`` stream with the energy readback and the three counts; the start document
records the planned energies, ``e0_eV``, the reference foil's tabulated edge
``reference_edge_eV`` (Ni metal, 8333 eV: the analysis aligns the energy scale on it)
and the data keys (``xas_keys``), so a replay needs nothing but the catalog. Step mode:
each point is counted at rest.

`xas_fly_scan` is the continuous-energy (fly) mode: the DCM sweeps each segment at a set
energy speed (`devices.dcm.DcmEnergy.prepare`/``kickoff``/``complete``, the Bragg motor
record's VELO) while `devices.xas.XasFlySampler` counts the chambers back to back for
``interval_s`` each; a sample's energy is the mean of the DCM energy at the start and end
of its count (both recorded). A segment is a dict ``{"space": "E", "start": -150,
"stop": -20, "velocity_eV_s": 10}`` (eV relative to e0) or ``{"space": "k", "start":
2.8, "stop": 14, "velocity_eV_s": 20}`` (1/A); segments follow one another in
increasing energy. Each sample spans w = velocity x interval eV, which blurs mu(E) over
w (a box average: physics, not an error); the checks keep w small enough for the
analysis (`FLY_EDGE_WINDOW_EV`, `MAX_EDGE_SAMPLE_EV`, `MAX_K_SAMPLE`). Sampling of a
segment stops when the next sample would end past its stop (the run-down is not
sampled; the prediction leaves out the dead time between counts, so the last sample may
end up to velocity x dead time past the stop), so segments hardly overlap; the gap at a
segment's end is under one sample width. A pause or a
suspension rewinds to the start of the current segment, which is flown again; the
samples of the interrupted pass stay in the run.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Flyable, Movable, Preparable, Readable, Triggerable
from bluesky.utils import MsgGenerator

from ..analysis.xas import ETOK_EV_A2, NI_FOIL_EDGE_EV, STUDY_E0_EV
from ..devices.dcm import EnergyFlyInfo
from ..schema.start import XAS, start_metadata
from .metadata import plan_args
from .progress import report_progress
from .validation import (
    POSITIONER,
    DeviceRole,
    PlanArgumentError,
    require_choice,
    require_count,
    require_device,
    require_mapping,
    require_metadata,
    require_positive,
    require_range,
)

#: The default Ni K-edge scan: pre-edge (10 eV steps), XANES (0.5 eV), EXAFS to k = 14 1/A
#: (0.05 1/A, dwell growing as k^2): 338 points.
DEFAULT_REGIONS = (
    {"space": "E", "start": -150.0, "stop": -20.0, "step": 10.0, "dwell_s": 0.1},
    {"space": "E", "start": -19.5, "stop": 30.0, "step": 0.5, "dwell_s": 0.1},
    {"space": "k", "start": 2.85, "stop": 14.0, "step": 0.05, "dwell_s": 0.1, "k_weight": 2.0},
)
#: Most regions in a scan.
MAX_REGIONS = 20
#: Most points in a scan.
MAX_POINTS = 10_000
#: Longest dwell per point, s.
MAX_DWELL_S = 60.0
#: Highest k of a region, 1/A (E - e0 = 3.81 keV).
MAX_K = 32.0
#: Widest energy span of a region relative to e0, eV.
MAX_RELATIVE_EV = 2000.0
#: Highest k-weight of the dwell time.
MAX_K_WEIGHT = 3.0
#: The DCM: a positioner in eV with its range and calibration offset.
DCM_DEVICE = POSITIONER.requiring("limits_eV", "offset_eV")
#: Three ion chambers counted together (`devices.xas.IonChambers`).
ION_CHAMBERS = DeviceRole("ion chambers (I0, It, Iref)", (Readable, Triggerable),
                          children=("i0", "it", "iref", "count_time"))

#: The default fly scan over the default step scan's range: pre-edge at 20 eV/s, the edge
#: at 2 eV/s (0.2 eV per 0.1 s sample), EXAFS from k = 2.81 1/A (E0 + 30 eV) at 8 eV/s to
#: k = 6 1/A and at 20 eV/s to k = 14 1/A (<= 0.05 1/A a sample): 75 s of sweeping,
#: about 580 samples of 0.1 s.
DEFAULT_FLY_SEGMENTS = (
    {"space": "E", "start": -150.0, "stop": -20.0, "velocity_eV_s": 20.0},
    {"space": "E", "start": -20.0, "stop": 30.0, "velocity_eV_s": 2.0},
    {"space": "k", "start": 2.81, "stop": 6.0, "velocity_eV_s": 8.0},
    {"space": "k", "start": 6.0, "stop": 14.0, "velocity_eV_s": 20.0},
)
#: Fastest energy sweep, eV/s (a Si(111) DCM at 8-9 keV: about 1 deg/s of Bragg angle).
MAX_FLY_VELOCITY_EV_S = 100.0
#: Shortest and longest count of a fly sample, s.
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.01, 10.0
#: Longest sweep of a fly scan, s.
MAX_FLY_DURATION_S = 7200.0
#: The edge (eV relative to e0) where a fly sample may span at most MAX_EDGE_SAMPLE_EV
#: (>= 4 samples per eV, >= 2.5 with the dead time between counts: the edge energy is
#: fitted over +-0.5 eV, `analysis.xas.edge_energy`; 0.5 eV samples moved it by 0.2 eV).
FLY_EDGE_WINDOW_EV = (-20.0, 30.0)
MAX_EDGE_SAMPLE_EV = 0.25
#: Widest sample in k above the edge window, 1/A (the EXAFS grid of the fit is 0.05 1/A;
#: a box of 0.1 1/A damps the Ni-O oscillation, sin(2kR) with R = 2 A, by 0.7 %).
MAX_K_SAMPLE = 0.1
#: Widest sample below the edge window, eV (the pre-edge line).
MAX_PRE_EDGE_SAMPLE_EV = 10.0
#: The DCM for a fly scan: a flyable positioner with a Bragg motor whose speed is set.
FLY_DCM_DEVICE = DeviceRole("a DCM energy that flies", (Movable, Preparable, Flyable),
                            children=("limits_eV", "offset_eV", "readback", "bragg.velocity"))
#: The fly sampler (`devices.xas.XasFlySampler`): counts once per trigger, records energies.
FLY_SAMPLER = DeviceRole("a fly sampler (ion chambers + DCM energy)", (Readable, Triggerable),
                         children=("energy", "energy_start", "energy_end", "dcm", "chambers.i0", "chambers.it",
                                   "chambers.iref", "chambers.count_time"))


@dataclass(frozen=True)
class XasPoints:
    """A validated scan: energies (eV, increasing) and the dwell time at each (s)."""

    energies_eV: np.ndarray
    dwell_s: np.ndarray


def _edges_in_range(dcm, e0_eV: float, reference_edge_eV: float) -> float:
    """``e0_eV`` (returned) and ``reference_edge_eV`` checked, in that order, to lie in the
    DCM's energy range (eV): the checks `xas_scan` and `xas_fly_scan` share."""
    low, high = dcm.limits_eV
    e0_eV = require_range("e0_eV", e0_eV, low, high, "eV")
    require_range("reference_edge_eV", reference_edge_eV, low, high, "eV")
    return e0_eV


def _dict_list(name: str, value: Any) -> Sequence[Mapping[str, Any]]:
    """``value`` if it is a list of 1 to MAX_REGIONS items (regions or segments, each
    checked by its own function), else PlanArgumentError naming ``name``."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise PlanArgumentError(f"{name} must be a list of {name.removesuffix('s')} dicts, got {value!r}.")
    require_count(f"len({name})", len(value), 1, MAX_REGIONS)
    return value


def _grid(name: str, start: float, stop: float, step: float) -> np.ndarray:
    """start, start + step, ... up to stop (included within step/1000)."""
    if stop < start:
        raise PlanArgumentError(f"{name}: stop ({stop}) must not lie below start ({start}).")
    count = int(np.floor((stop - start) / step + 1e-3)) + 1
    if count > MAX_POINTS:
        raise PlanArgumentError(f"{name} would hold {count} points, more than {MAX_POINTS}.")
    return start + step * np.arange(count)


def region_points(index: int, region: Mapping[str, Any], e0_eV: float) -> XasPoints:
    """The energies (eV) and dwell times (s) of one region (module docstring); raises
    `PlanArgumentError` naming ``regions[index]`` and the bad key."""
    name = f"regions[{index}]"
    region = require_mapping(name, region)
    if region is None:
        raise PlanArgumentError(f"{name} must be a dict, got None.")
    space = require_choice(f"{name}['space']", region.get("space"), ("E", "k"))
    allowed = {"space", "start", "stop", "step", "dwell_s"} | ({"k_weight"} if space == "k" else set())
    unknown = sorted(set(region) - allowed)
    if unknown:
        raise PlanArgumentError(f"{name} has unknown keys {unknown}; a {space} region takes {sorted(allowed)}.")
    missing = sorted({"start", "stop", "step", "dwell_s"} - set(region))
    if missing:
        raise PlanArgumentError(f"{name} lacks {missing}.")
    dwell = require_positive(f"{name}['dwell_s']", region["dwell_s"], MAX_DWELL_S, "s")
    if space == "E":
        start = require_range(f"{name}['start']", region["start"], -MAX_RELATIVE_EV, MAX_RELATIVE_EV, "eV")
        stop = require_range(f"{name}['stop']", region["stop"], -MAX_RELATIVE_EV, MAX_RELATIVE_EV, "eV")
        step = require_positive(f"{name}['step']", region["step"], MAX_RELATIVE_EV, "eV")
        relative = _grid(name, start, stop, step)
        return XasPoints(e0_eV + relative, np.full(relative.size, dwell))
    start = require_range(f"{name}['start']", region["start"], 0.0, MAX_K, "1/A")
    stop = require_range(f"{name}['stop']", region["stop"], 0.0, MAX_K, "1/A")
    step = require_positive(f"{name}['step']", region["step"], MAX_K, "1/A")
    k_weight = require_range(f"{name}['k_weight']", region.get("k_weight", 0.0), 0.0, MAX_K_WEIGHT)
    if start <= 0:
        raise PlanArgumentError(f"{name}['start'] must be > 0 1/A for a k region, got {start}.")
    k = _grid(name, start, stop, step)
    return XasPoints(e0_eV + ETOK_EV_A2 * k**2, dwell * (k / start) ** k_weight)


def validate_xas_scan(dcm, chambers, regions: Sequence[Mapping[str, Any]], e0_eV: float,
                      reference_edge_eV: float) -> XasPoints:
    """Check an XAS scan before anything moves: ``dcm`` a positioner with ``limits_eV``
    and ``offset_eV``; ``chambers`` ion chambers (`ION_CHAMBERS`); e0_eV and
    reference_edge_eV inside the DCM range; 1 to MAX_REGIONS regions (`region_points`),
    following one another in increasing energy, at most MAX_POINTS points, all inside
    the DCM range. Returns the points."""
    require_device("dcm", dcm, DCM_DEVICE)
    require_device("chambers", chambers, ION_CHAMBERS)
    e0_eV = _edges_in_range(dcm, e0_eV, reference_edge_eV)
    parts = [region_points(index, region, e0_eV) for index, region in enumerate(_dict_list("regions", regions))]
    for index in range(1, len(parts)):
        if parts[index].energies_eV[0] <= parts[index - 1].energies_eV[-1]:
            raise PlanArgumentError(
                f"regions[{index}] starts at {parts[index].energies_eV[0]:.2f} eV, not above the end of "
                f"regions[{index - 1}] ({parts[index - 1].energies_eV[-1]:.2f} eV): regions must follow in energy."
            )
    energies = np.concatenate([part.energies_eV for part in parts])
    if energies.size > MAX_POINTS:
        raise PlanArgumentError(f"regions hold {energies.size} points, more than {MAX_POINTS}.")
    for value in (energies[0], energies[-1]):
        require_range("regions", float(value), *dcm.limits_eV, "eV (the DCM range)")
    return XasPoints(energies, np.concatenate([part.dwell_s for part in parts]))


def xas_scan(
    dcm: Movable,
    chambers: Readable,
    regions: Sequence[dict[str, Any]] = DEFAULT_REGIONS,
    *,
    e0_eV: float = STUDY_E0_EV,
    reference_edge_eV: float = NI_FOIL_EDGE_EV,
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Step XAS scan through ``regions`` (module docstring) around ``e0_eV`` (eV; default
    8350 eV, the study's E0 for the Ni K edge), counting ``chambers`` (I0, It, Iref) for
    each point's dwell time. ``reference_edge_eV``: the reference foil's tabulated edge
    (default Ni metal 8333 eV), recorded for the energy alignment. ``sample`` (the
    electrode) and ``plan_args`` are recorded. Checked before the first message
    (`validate_xas_scan`). Returns the run uid."""
    arguments = plan_args(locals())
    require_metadata(sample, md)
    points = validate_xas_scan(dcm, chambers, regions, e0_eV, reference_edge_eV)
    metadata = start_metadata(
        XAS,
        "xas_scan",
        md,
        e0_eV=float(e0_eV),
        reference_edge_eV=float(reference_edge_eV),
        energies_eV=points.energies_eV.tolist(),
        xas_mode="step",
        xas_keys={"energy": dcm.name, "i0": chambers.i0.name, "it": chambers.it.name, "iref": chambers.iref.name},
        num_points=int(points.energies_eV.size),
        plan_args=arguments,
        **({"sample": sample} if sample else {}),
    )

    @bpp.run_decorator(md=metadata)
    def inner():
        dwell_now = None
        total = points.energies_eV.size
        for index, (energy, dwell) in enumerate(zip(points.energies_eV, points.dwell_s, strict=True)):
            yield from bps.checkpoint()
            if dwell != dwell_now:
                yield from bps.mv(chambers.count_time, float(dwell))
                dwell_now = dwell
            yield from bps.mv(dcm, float(energy))
            yield from bps.trigger_and_read([chambers, dcm])
            if (index + 1) % 50 == 0 or index + 1 == total:
                report_progress(f"xas_scan: {index + 1}/{total} points ({energy:.1f} eV)")

    return (yield from inner())


@dataclass(frozen=True)
class FlySegment:
    """One validated sweep: absolute energies (eV) and speed (eV/s)."""

    start_eV: float
    stop_eV: float
    velocity_eV_s: float

    def sample_centres_eV(self, interval_s: float) -> np.ndarray:
        """The nominal sample energies (eV): centres of intervals of velocity x interval_s."""
        width = self.velocity_eV_s * interval_s
        return self.start_eV + width * (0.5 + np.arange(max(1, int((self.stop_eV - self.start_eV) / width))))


def _edge_energy(index: int, segment: Mapping[str, Any], key: str, e0_eV: float) -> float:
    """The absolute energy (eV) of ``segment[key]`` in its space."""
    name = f"segments[{index}]['{key}']"
    if segment["space"] == "E":
        return e0_eV + require_range(name, segment[key], -MAX_RELATIVE_EV, MAX_RELATIVE_EV, "eV")
    k = require_range(name, segment[key], 0.0, MAX_K, "1/A")
    return e0_eV + ETOK_EV_A2 * k**2


def fly_segment(index: int, segment: Mapping[str, Any], e0_eV: float, interval_s: float) -> FlySegment:
    """One segment (module docstring) as absolute energies, checked: keys, range, speed
    and the width of its samples (velocity x interval_s) against the analysis's needs;
    raises `PlanArgumentError` naming ``segments[index]``."""
    name = f"segments[{index}]"
    segment = require_mapping(name, segment)
    if segment is None:
        raise PlanArgumentError(f"{name} must be a dict, got None.")
    require_choice(f"{name}['space']", segment.get("space"), ("E", "k"))
    allowed = {"space", "start", "stop", "velocity_eV_s"}
    unknown, missing = sorted(set(segment) - allowed), sorted(allowed - {"space"} - set(segment))
    if unknown or missing:
        raise PlanArgumentError(f"{name} has unknown keys {unknown} or lacks {missing}; a segment takes "
                                f"{sorted(allowed)}.")
    velocity = require_positive(f"{name}['velocity_eV_s']", segment["velocity_eV_s"], MAX_FLY_VELOCITY_EV_S, "eV/s")
    start, stop = (_edge_energy(index, segment, key, e0_eV) for key in ("start", "stop"))
    if stop <= start:
        raise PlanArgumentError(f"{name}: stop ({stop:.2f} eV) must lie above start ({start:.2f} eV).")
    width = velocity * interval_s
    if stop - start < 2 * width:
        raise PlanArgumentError(f"{name} spans {stop - start:.2f} eV, less than two samples of {width:.3g} eV "
                                f"(velocity_eV_s x interval_s).")
    edge_low, edge_high = (e0_eV + offset for offset in FLY_EDGE_WINDOW_EV)
    if start < edge_high and stop > edge_low and width > MAX_EDGE_SAMPLE_EV:
        raise PlanArgumentError(
            f"{name} crosses the edge ({FLY_EDGE_WINDOW_EV[0]:g} to {FLY_EDGE_WINDOW_EV[1]:g} eV from e0) with "
            f"samples of {width:.3g} eV (velocity_eV_s x interval_s); the edge needs <= {MAX_EDGE_SAMPLE_EV} eV: "
            f"lower velocity_eV_s to <= {MAX_EDGE_SAMPLE_EV / interval_s:.3g} eV/s.")
    if stop > edge_high:
        k_low = math.sqrt((max(start, edge_high) - e0_eV) / ETOK_EV_A2)
        dk = width / (2.0 * ETOK_EV_A2 * k_low)
        if dk > MAX_K_SAMPLE:
            raise PlanArgumentError(
                f"{name}: samples of {width:.3g} eV span {dk:.3g} 1/A at k = {k_low:.2f} 1/A, more than "
                f"{MAX_K_SAMPLE} 1/A the EXAFS needs: lower velocity_eV_s or interval_s.")
    if start < edge_low and width > MAX_PRE_EDGE_SAMPLE_EV:
        raise PlanArgumentError(f"{name}: pre-edge samples of {width:.3g} eV, more than {MAX_PRE_EDGE_SAMPLE_EV} eV.")
    return FlySegment(start, stop, velocity)


def validate_xas_fly_scan(dcm, sampler, segments: Sequence[Mapping[str, Any]], interval_s: float, e0_eV: float,
                          reference_edge_eV: float) -> list[FlySegment]:
    """Check a fly XAS scan before anything moves: ``dcm`` a flyable DCM (`FLY_DCM_DEVICE`),
    ``sampler`` a fly sampler of that DCM (`FLY_SAMPLER`); interval_s in [MIN_INTERVAL_S,
    MAX_INTERVAL_S] s; e0_eV and reference_edge_eV inside the DCM range; 1 to MAX_REGIONS
    segments (`fly_segment`) following one another in increasing energy, inside the DCM
    range, sweeping at most MAX_FLY_DURATION_S and MAX_POINTS samples. Returns the segments."""
    require_device("dcm", dcm, FLY_DCM_DEVICE)
    require_device("sampler", sampler, FLY_SAMPLER)
    if sampler.dcm is not dcm:
        raise PlanArgumentError(f"sampler {sampler.name!r} samples DCM {sampler.dcm.name!r}, not {dcm.name!r}.")
    interval_s = require_range("interval_s", interval_s, MIN_INTERVAL_S, MAX_INTERVAL_S, "s")
    e0_eV = _edges_in_range(dcm, e0_eV, reference_edge_eV)
    parts = [fly_segment(index, segment, e0_eV, interval_s)
             for index, segment in enumerate(_dict_list("segments", segments))]
    for index in range(1, len(parts)):
        if parts[index].start_eV < parts[index - 1].stop_eV:
            raise PlanArgumentError(
                f"segments[{index}] starts at {parts[index].start_eV:.2f} eV, below the end of segments[{index - 1}] "
                f"({parts[index - 1].stop_eV:.2f} eV): segments must follow in energy.")
    for value in (parts[0].start_eV, parts[-1].stop_eV):
        require_range("segments", value, *dcm.limits_eV, "eV (the DCM range)")
    duration = sum((part.stop_eV - part.start_eV) / part.velocity_eV_s for part in parts)
    if duration > MAX_FLY_DURATION_S:
        raise PlanArgumentError(f"segments would sweep for {duration:.0f} s, more than {MAX_FLY_DURATION_S:g} s.")
    samples = sum(part.sample_centres_eV(interval_s).size for part in parts)
    if samples > MAX_POINTS:
        raise PlanArgumentError(f"segments would take {samples} samples of {interval_s} s, more than {MAX_POINTS}.")
    return parts


def xas_fly_scan(
    dcm: Movable,
    sampler: Readable,
    segments: Sequence[dict[str, Any]] = DEFAULT_FLY_SEGMENTS,
    *,
    interval_s: float = 0.1,
    e0_eV: float = STUDY_E0_EV,
    reference_edge_eV: float = NI_FOIL_EDGE_EV,
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Continuous-energy (fly) XAS scan (module docstring): the DCM sweeps each of
    ``segments`` at its ``velocity_eV_s`` (eV/s) around ``e0_eV`` (eV) while ``sampler``
    (`devices.xas.XasFlySampler` of ``dcm``) counts I0, It, Iref back to back for
    ``interval_s`` (s) each, recording each count's start, end and mean energy (eV; the
    mean is the sample's energy). ``reference_edge_eV``: the reference foil's tabulated
    edge (eV). Checked before the first message (`validate_xas_fly_scan`); a checkpoint
    before each segment; the Bragg motor's speed is restored at the end, also after an
    abort. Returns the run uid."""
    arguments = plan_args(locals())
    require_metadata(sample, md)
    parts = validate_xas_fly_scan(dcm, sampler, segments, interval_s, e0_eV, reference_edge_eV)
    chambers = sampler.chambers
    metadata = start_metadata(
        XAS,
        "xas_fly_scan",
        md,
        e0_eV=float(e0_eV),
        reference_edge_eV=float(reference_edge_eV),
        energies_eV=np.concatenate([part.sample_centres_eV(interval_s) for part in parts]).tolist(),
        xas_mode="fly",
        fly={"segments_eV": [[part.start_eV, part.stop_eV, part.velocity_eV_s] for part in parts],
             "interval_s": float(interval_s),
             "energy": "mean of the DCM readback energy at the start and end of each count"},
        xas_keys={"energy": sampler.energy.name, "energy_start": sampler.energy_start.name,
                  "energy_end": sampler.energy_end.name, "i0": chambers.i0.name, "it": chambers.it.name,
                  "iref": chambers.iref.name},
        plan_args=arguments,
        **({"sample": sample} if sample else {}),
    )

    def fly(part: FlySegment) -> MsgGenerator[None]:
        yield from bps.checkpoint()
        yield from bps.prepare(dcm, EnergyFlyInfo(part.start_eV, part.stop_eV, part.velocity_eV_s), wait=True)
        yield from bps.kickoff(dcm, wait=True)
        width = part.velocity_eV_s * interval_s
        while True:  # until the next sample (width eV, after a dead time) would end past the stop
            reading = yield from bps.trigger_and_read([sampler])
            if reading[sampler.energy_end.name]["value"] + width > part.stop_eV:
                break
        yield from bps.complete(dcm, wait=True)
        report_progress(f"xas_fly_scan: {part.start_eV:.1f}-{part.stop_eV:.1f} eV flown")

    @bpp.run_decorator(md=metadata)
    def inner():
        speed = yield from bps.rd(dcm.bragg.velocity)

        def restore():
            yield from bps.stop(dcm)
            yield from bps.mv(dcm.bragg.velocity, speed)

        def body():
            yield from bps.mv(chambers.count_time, float(interval_s))
            for part in parts:
                yield from fly(part)

        yield from bpp.finalize_wrapper(body(), restore())

    return (yield from inner())
