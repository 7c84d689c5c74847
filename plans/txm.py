"""TXM-XANES plans (SCIENCE.md section 4): 2D XANES maps, 3D XANES tomography and the
energy calibration on a Ni foil.

The plans drive a microscope ``txm`` (`devices.txm.EpicsTxm` or `SimTxm`: ``energy``,
``rotation``, ``sample``, ``shutter``, ``camera``, ``frame_type``). Every frame goes to the
``primary`` stream with the energy (and the zone-plate and camera z that followed it),
the rotation angle, the sample position, the shutter status and ``frame_type``
("projection", "flat" with the sample moved out, "dark" with the shutter closed), the
NXtomo way of keeping flats and darks beside the projections of one detector file.

A XANES scan takes ``n_darks`` darks first, then at each energy (increasing; the zone
plate and camera follow): ``n_flats`` flats every ``flat_every`` energies (the first one
included), then the projections: a step scan over ``angles_deg`` (reversed at every other
energy, so the stage never rewinds 180 deg), or one projection at ``angle_deg`` for a 2D
map. Step rotation only: each projection is taken at rest. The start document carries
everything the live analysis needs (``technique="txm"``, ``image_key``, ``txm_mode``,
``energies_eV``, ``angles_deg``, ``pixel_size_um``, ``txm_keys``, flat/dark counts), so a
replay needs nothing but the catalog. Units: eV, degrees, seconds, um.

Pauses and beam dumps (README "Beam dumps and pauses"): a checkpoint before every frame
(dark, flat, projection; every energy of `energy_calibration`); a pause or suspension
rewinds to it and retakes that frame.
"""

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Stageable
from bluesky.utils import MsgGenerator
from ophyd_async.core import TriggerInfo

from ..analysis.txm_reduction import MIN_ENERGIES
from ..analysis.xanes import foil_edge_energy
from ..devices.txm import FrameType, ShutterState
from ..schema.start import TXM, TXM_ENERGY_CALIBRATION, start_metadata
from .metadata import plan_args
from .progress import report_progress
from .validation import (
    DeviceRole,
    PlanArgumentError,
    require_bool,
    require_count,
    require_device,
    require_metadata,
    require_numbers,
    require_positive,
    require_range,
)

#: Ni K-edge XANES of the study: 8340-8360 eV in 1 eV steps.
DEFAULT_ENERGIES_EV = tuple(np.arange(8340.0, 8360.5, 1.0).tolist())
#: 0-180 deg inclusive in 3 deg steps (61 projections per energy).
DEFAULT_ANGLES_DEG = tuple(np.linspace(0.0, 180.0, 61).tolist())
#: Ni metal K edge (first inflection), eV.
NI_K_EDGE_EV = 8333.0
#: Energy calibration scan: 8318-8348 eV in 0.5 eV steps around the Ni K edge (finer steps
#: add noise to the derivative faster than they remove the parabola's bias).
DEFAULT_CALIBRATION_ENERGIES_EV = tuple(np.arange(8318.0, 8348.1, 0.5).tolist())
#: Fewest projections accepted for a tomogram.
MIN_ANGLES = 8
#: Most projections accepted per energy.
MAX_ANGLES = 10_000
#: Most energies accepted in a scan.
MAX_ENERGIES = 1000
#: Fewest energies of an energy calibration: the edge with >= 3 energies each side.
MIN_CALIBRATION_ENERGIES = 7
#: Most frames (darks, flats, projections) accepted in one scan.
MAX_FRAMES = 1_000_000
#: Most flats or darks per set.
MAX_FLATS = 1000
#: A transmission X-ray microscope (`devices.txm`): energy with its DCM range, rotation
#: with its limits, sample stage, shutter, camera, frame type.
TXM_DEVICE = DeviceRole(
    "a transmission X-ray microscope", (Stageable,),
    children=("energy.limits_eV", "energy.offset_eV", "rotation", "rotation_limits_deg", "sample.x",
              "sample.out_offset_mm", "shutter", "camera.stats.total", "camera.frame_shape",
              "camera.bytes_per_pixel", "frame_type", "data_directory", "pixel_size_um"),
)
#: Longest exposure accepted, s.
MAX_EXPOSURE_S = 60.0
#: Room kept free on the detector disk beyond the scan's frames, bytes.
DISK_MARGIN_BYTES = 1 << 30


@dataclass(frozen=True)
class XanesScan:
    """A validated XANES scan: energies (eV), angles (deg), exposure (s), flat/dark cadence."""

    energies_eV: np.ndarray
    angles_deg: np.ndarray
    exposure_s: float
    n_flats: int
    n_darks: int
    flat_every: int

    @property
    def n_flat_sets(self) -> int:
        return math.ceil(len(self.energies_eV) / self.flat_every)

    @property
    def n_frames(self) -> int:
        """Frames the scan takes: darks, flats, projections."""
        return self.n_darks + self.n_flats * self.n_flat_sets + len(self.energies_eV) * len(self.angles_deg)


def _energies(name: str, values: Sequence[float], txm, minimum: int) -> np.ndarray:
    """``minimum`` to MAX_ENERGIES finite energies (eV), strictly increasing, inside the DCM range."""
    energies = require_numbers(name, values, minimum, MAX_ENERGIES, "eV")
    if np.any(np.diff(energies) <= 0):
        raise PlanArgumentError(f"{name} must increase strictly (eV), got {values!r}.")
    low, high = txm.energy.limits_eV
    for value in (energies[0], energies[-1]):
        require_range(name, float(value), low, high, "eV")
    return energies


def _closest_to_half_turn(angles: np.ndarray) -> float:
    """Smallest |a_j - a_i - 180| over pairs of the increasing ``angles`` (deg), in
    O(n log n) time and O(n) memory."""
    targets = angles + 180.0
    index = np.clip(np.searchsorted(angles, targets), 1, angles.size - 1)
    return float(np.min(np.minimum(np.abs(angles[index] - targets), np.abs(angles[index - 1] - targets))))


def _angles(name: str, angles_deg: Sequence[float], txm, tomography: bool) -> np.ndarray:
    """Rotation angles (deg) inside the rotation limits; for a tomogram MIN_ANGLES to
    MAX_ANGLES of them, increasing, with a pair 180 deg apart (within half a step)."""
    angles = require_numbers(name, angles_deg, MIN_ANGLES if tomography else 1, MAX_ANGLES, "deg")
    if tomography:
        if np.any(np.diff(angles) <= 0):
            raise PlanArgumentError(f"{name} must increase strictly (deg).")
        step = float(np.median(np.diff(angles)))
        gap = _closest_to_half_turn(angles)
        if gap > 0.5 * step + 1e-9:
            raise PlanArgumentError(
                f"angles_deg must hold two projections 180 deg apart (a 0-180 deg scan, both ends"
                f" included) for the rotation centre; the closest pair misses by {gap:.3g} deg."
            )
    low, high = txm.rotation_limits_deg
    for value in (angles.min(), angles.max()):
        require_range(name, float(value), low, high, "deg")
    return angles


def _existing_folder(path: Path) -> Path | None:
    """``path``, or its parent if the camera has not created it yet; None if neither is
    visible from this computer (an IOC writing to a disk not mounted here)."""
    return next((folder for folder in (path, path.parent) if folder.is_dir()), None)


def require_disk_space(txm, n_frames: int) -> None:
    """The camera's folder has room for ``n_frames`` frames plus DISK_MARGIN_BYTES.

    Skipped (nothing to check) when neither the folder nor its parent is visible from
    this computer.
    """
    rows, cols = txm.camera.frame_shape
    needed = n_frames * rows * cols * txm.camera.bytes_per_pixel + DISK_MARGIN_BYTES
    folder = _existing_folder(txm.data_directory())
    if folder is None:
        return
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise PlanArgumentError(
            f"{n_frames} frames of {rows} x {cols} need {needed / 1e9:.2f} GB with margin, but "
            f"{folder} has {free / 1e9:.2f} GB free."
        )


def validate_xanes_scan(
    txm,
    energies_eV: Sequence[float],
    angles_deg: Sequence[float],
    *,
    tomography: bool,
    exposure_s: float,
    n_flats: int,
    n_darks: int,
    flat_every: int,
) -> XanesScan:
    """Check a XANES scan before anything moves; raise `PlanArgumentError` naming the
    argument. txm: a microscope (`TXM_DEVICE`). Energies: MIN_ENERGIES (what the
    white-line analysis needs) to MAX_ENERGIES, increasing, inside the DCM range. Angles
    (tomography): MIN_ANGLES to MAX_ANGLES, increasing, with a pair 180 deg apart (within
    half a step), inside the rotation limits. Exposure (0, MAX_EXPOSURE_S] s; 1 to
    MAX_FLATS flats and darks; flat_every 1 to MAX_ENERGIES; at most MAX_FRAMES frames and
    disk space for every one."""
    require_device("txm", txm, TXM_DEVICE)
    scan = XanesScan(
        energies_eV=_energies("energies_eV", energies_eV, txm, MIN_ENERGIES),
        angles_deg=_angles("angles_deg" if tomography else "angle_deg", angles_deg, txm, tomography),
        exposure_s=require_positive("exposure_s", exposure_s, MAX_EXPOSURE_S, "s"),
        n_flats=require_count("n_flats", n_flats, 1, MAX_FLATS),
        n_darks=require_count("n_darks", n_darks, 1, MAX_FLATS),
        flat_every=require_count("flat_every", flat_every, 1, MAX_ENERGIES),
    )
    if scan.n_frames > MAX_FRAMES:
        raise PlanArgumentError(
            f"energies_eV, angles_deg: the scan would take {scan.n_frames} frames, more than {MAX_FRAMES}."
        )
    require_disk_space(txm, scan.n_frames)
    return scan


# ------------------------------------------------------------------ plan stubs


def _readers(txm) -> list:
    return [txm.camera, txm.energy, txm.rotation, txm.sample, txm.shutter, txm.frame_type]


def take_darks(txm, n: int):
    """Close the shutter, take ``n`` dark frames, open it again."""
    yield from bps.mv(txm.shutter, ShutterState.CLOSED, txm.frame_type, FrameType.DARK)
    for _ in range(n):
        yield from bps.checkpoint()
        yield from bps.trigger_and_read(_readers(txm))
    yield from bps.mv(txm.shutter, ShutterState.OPEN)


def take_flats(txm, n: int, sample_in_mm: float):
    """Move the sample out (x + ``out_offset_mm``), take ``n`` flat frames, move it back
    to ``sample_in_mm``."""
    yield from bps.mv(txm.sample.x, sample_in_mm + txm.sample.out_offset_mm, txm.frame_type, FrameType.FLAT)
    for _ in range(n):
        yield from bps.checkpoint()
        yield from bps.trigger_and_read(_readers(txm))
    yield from bps.mv(txm.sample.x, sample_in_mm)


def _xanes_scan(
    txm, scan: XanesScan, plan_name: str, sample: dict[str, Any] | None, md: dict[str, Any] | None,
    arguments: dict[str, Any],
) -> MsgGenerator[str]:
    tomography = plan_name == "txm_xanes_tomo"
    readers = _readers(txm)
    metadata = start_metadata(
        TXM,
        plan_name,
        md,
        image_key=txm.camera.name,
        txm_mode="tomo" if tomography else "2d",
        energies_eV=scan.energies_eV.tolist(),
        angles_deg=scan.angles_deg.tolist(),
        exposure_s=scan.exposure_s,
        n_flats=scan.n_flats,
        n_darks=scan.n_darks,
        flat_every=scan.flat_every,
        pixel_size_um=txm.pixel_size_um,
        txm_keys={"energy": txm.energy.name, "angle": txm.rotation.name, "frame_type": txm.frame_type.name},
        num_points=scan.n_frames,
        plan_args=arguments,
        **({"sample": sample} if sample else {}),
    )
    state = {"sample_in": None}

    def restore():
        if state["sample_in"] is not None:
            yield from bps.mv(txm.sample.x, state["sample_in"])
        yield from bps.mv(txm.shutter, ShutterState.CLOSED)

    @bpp.stage_decorator([txm.camera])
    @bpp.run_decorator(md=metadata)
    @bpp.finalize_decorator(restore)
    def inner():
        yield from bps.prepare(txm.camera, TriggerInfo(livetime=scan.exposure_s), wait=True)
        state["sample_in"] = yield from bps.rd(txm.sample.x)
        yield from take_darks(txm, scan.n_darks)
        frames = scan.n_darks
        for index, energy in enumerate(scan.energies_eV):
            yield from bps.mv(txm.energy, float(energy))
            if index % scan.flat_every == 0:
                yield from take_flats(txm, scan.n_flats, state["sample_in"])
                frames += scan.n_flats
            yield from bps.mv(txm.frame_type, FrameType.PROJECTION)
            angles = scan.angles_deg if index % 2 == 0 else scan.angles_deg[::-1]
            for angle in angles:
                yield from bps.checkpoint()
                yield from bps.mv(txm.rotation, float(angle))
                yield from bps.trigger_and_read(readers)
            frames += len(angles)
            report_progress(f"{plan_name}: energy {index + 1}/{len(scan.energies_eV)} ({energy:.2f} eV) done, {frames} frames")

    return (yield from inner())


def txm_xanes_tomo(
    txm: Stageable,
    energies_eV: Sequence[float] = DEFAULT_ENERGIES_EV,
    angles_deg: Sequence[float] = DEFAULT_ANGLES_DEG,
    *,
    exposure_s: float = 0.1,
    n_flats: int = 5,
    n_darks: int = 5,
    flat_every: int = 1,
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """3D XANES: a tomogram over ``angles_deg`` (degrees; 0-180 inclusive) at each of
    ``energies_eV`` (eV, increasing; default 8340-8360 eV in 1 eV steps).

    exposure_s: per frame (s). n_darks: dark frames at the start (shutter closed);
    n_flats: flat frames (sample out) every ``flat_every`` energies. sample: metadata of
    the specimen (recorded as ``sample``, beside ``plan_args``). All arguments are checked
    (`validate_xanes_scan`: DCM range, angle coverage, counts, exposure, disk space)
    before the first message. Returns the run uid.
    """
    arguments = plan_args(locals())
    require_metadata(sample, md)
    scan = validate_xanes_scan(txm, energies_eV, angles_deg, tomography=True, exposure_s=exposure_s,
                               n_flats=n_flats, n_darks=n_darks, flat_every=flat_every)
    return (yield from _xanes_scan(txm, scan, "txm_xanes_tomo", sample, md, arguments))


def txm_xanes_2d(
    txm: Stageable,
    energies_eV: Sequence[float] = DEFAULT_ENERGIES_EV,
    *,
    angle_deg: float = 0.0,
    exposure_s: float = 0.1,
    n_flats: int = 5,
    n_darks: int = 5,
    flat_every: int = 1,
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """2D XANES: one projection at ``angle_deg`` (degrees) at each of ``energies_eV`` (eV,
    increasing); per-pixel spectra of the projected particle. Other arguments as
    `txm_xanes_tomo`."""
    arguments = plan_args(locals())
    require_metadata(sample, md)
    scan = validate_xanes_scan(txm, energies_eV, [angle_deg], tomography=False, exposure_s=exposure_s,
                               n_flats=n_flats, n_darks=n_darks, flat_every=flat_every)
    return (yield from _xanes_scan(txm, scan, "txm_xanes_2d", sample, md, arguments))


# ------------------------------------------------------------------ energy calibration


def energy_calibration(
    txm: Stageable,
    energies_eV: Sequence[float] = DEFAULT_CALIBRATION_ENERGIES_EV,
    *,
    edge_eV: float = NI_K_EDGE_EV,
    exposure_s: float = 0.1,
    n_darks: int = 2,
    apply: bool = True,
    sample: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[float]:
    """Calibrate the DCM energy on a reference foil (default Ni, K edge 8333 eV).

    With the foil mounted as the sample, at each energy E_i (eV, increasing, the edge
    inside with >= 3 energies each side): one frame through the foil and one flat
    (sample out); the camera's statistics total gives the foil's absorbance

        mu(E_i) = -ln[(I_i - <D>) / (F_i - <D>)]

    (I, F, D: frame totals of the foil, flat and dark frames). The edge E0 is the
    energy of the largest d mu/dE (refined by a 3-point parabola,
    `analysis.xanes.foil_edge_energy`), and the calibration offset becomes
    offset + (edge_eV - E0): the DCM then reads true
    energies. With ``apply`` the new offset is written to ``txm.energy.offset_eV``; the
    ``calibration`` stream records the offset in force at the end (with ``apply=False``,
    the unchanged one: the raw frames still hold the measurement). ``sample`` (the foil)
    and ``plan_args`` are recorded. Returns the new offset (eV). Checked before the first
    message: txm a microscope, MIN_CALIBRATION_ENERGIES to MAX_ENERGIES energies (as
    `validate_xanes_scan`), edge_eV finite, exposure_s in (0, MAX_EXPOSURE_S] s, 1 to
    MAX_FLATS darks, apply a bool, disk space.
    """
    arguments = plan_args(locals())
    require_device("txm", txm, TXM_DEVICE)
    energies = _energies("energies_eV", energies_eV, txm, MIN_CALIBRATION_ENERGIES)
    edge_eV = require_range("edge_eV", edge_eV, *txm.energy.limits_eV, "eV")
    if np.sum(energies < edge_eV) < 3 or np.sum(energies > edge_eV) < 3:
        raise PlanArgumentError(
            f"edge_eV = {edge_eV} eV needs >= 3 energies each side in the scan "
            f"({energies[0]:.1f}-{energies[-1]:.1f} eV)."
        )
    require_positive("exposure_s", exposure_s, MAX_EXPOSURE_S, "s")
    require_count("n_darks", n_darks, 1, MAX_FLATS)
    apply = require_bool("apply", apply)
    require_metadata(sample, md)
    require_disk_space(txm, n_darks + 2 * len(energies))
    readers = _readers(txm)
    metadata = start_metadata(
        TXM_ENERGY_CALIBRATION,
        "energy_calibration",
        md,
        image_key=txm.camera.name,
        energies_eV=energies.tolist(),
        reference_edge_eV=edge_eV,
        exposure_s=exposure_s,
        plan_args=arguments,
        **({"sample": sample} if sample else {}),
    )

    def total():
        yield from bps.trigger_and_read(readers)
        return (yield from bps.rd(txm.camera.stats.total))

    result = {}

    @bpp.stage_decorator([txm.camera])
    @bpp.run_decorator(md=metadata)
    @bpp.finalize_decorator(lambda: bps.mv(txm.shutter, ShutterState.CLOSED))
    def inner():
        yield from bps.prepare(txm.camera, TriggerInfo(livetime=exposure_s), wait=True)
        sample_in = yield from bps.rd(txm.sample.x)
        yield from bps.mv(txm.shutter, ShutterState.CLOSED, txm.frame_type, FrameType.DARK)
        darks = []
        for _ in range(n_darks):
            yield from bps.checkpoint()
            darks.append((yield from total()))
        yield from bps.mv(txm.shutter, ShutterState.OPEN)
        foil, flat, measured = [], [], []
        for energy in energies:
            yield from bps.checkpoint()
            yield from bps.mv(txm.energy, float(energy), txm.frame_type, FrameType.PROJECTION)
            measured.append((yield from bps.rd(txm.energy)))
            foil.append((yield from total()))
            yield from bps.mv(txm.sample.x, sample_in + txm.sample.out_offset_mm, txm.frame_type, FrameType.FLAT)
            flat.append((yield from total()))
            yield from bps.mv(txm.sample.x, sample_in)
        edge = foil_edge_energy(foil, flat, darks, measured).e0_eV
        offset = (yield from bps.rd(txm.energy.offset_eV)) + edge_eV - edge
        report_progress(f"energy_calibration: edge found at {edge:.3f} eV (reference {edge_eV} eV); offset {offset:+.3f} eV")
        if apply:
            yield from bps.mv(txm.energy.offset_eV, offset)
        yield from bps.trigger_and_read([txm.energy.offset_eV], name="calibration")
        result["offset_eV"] = offset

    yield from inner()
    return result["offset_eV"]
