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
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Movable, Readable, Triggerable
from bluesky.utils import MsgGenerator

from ..analysis.xas import ETOK_EV_A2, NI_FOIL_EDGE_EV, STUDY_E0_EV
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


@dataclass(frozen=True)
class XasPoints:
    """A validated scan: energies (eV, increasing) and the dwell time at each (s)."""

    energies_eV: np.ndarray
    dwell_s: np.ndarray


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
    low, high = dcm.limits_eV
    e0_eV = require_range("e0_eV", e0_eV, low, high, "eV")
    require_range("reference_edge_eV", reference_edge_eV, low, high, "eV")
    if isinstance(regions, str | bytes | Mapping) or not isinstance(regions, Sequence):
        raise PlanArgumentError(f"regions must be a list of region dicts, got {regions!r}.")
    require_count("len(regions)", len(regions), 1, MAX_REGIONS)
    parts = [region_points(index, region, e0_eV) for index, region in enumerate(regions)]
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
        require_range("regions", float(value), low, high, "eV (the DCM range)")
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
