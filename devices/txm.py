"""Transmission X-ray microscope (TXM) for Ni K-edge XANES tomography (NSLS-II 18-ID FXI).

The microscope as plans see it: one `EpicsTxm` (real, EPICS) or `SimTxm` (simulated) with
the same children, signal names and protocols, so a plan cannot tell them apart:

* ``energy`` (`TxmEnergy`): the DCM photon energy in eV, a pseudo-positioner over the DCM
  Bragg motor, the zone-plate z and the camera z, which follow the energy by a
  `FocusCalibration` so that the image stays in focus at every energy;
* ``rotation``: the tomography rotation stage (motor, degrees);
* ``sample`` (`SampleStage`): sample x, y, z (mm) and the x offset that takes the sample
  out of the field of view for flat fields;
* ``shutter`` (`TxmShutter`): the photon shutter (open/close command PVs, status PV);
* ``camera``: an ADAndor camera writing HDF5 (`TxmCamera`), or `SimTxmCamera`; both also
  read the areaDetector statistics plugin's frame total (``camera.stats.total``);
* ``frame_type``: a soft signal (no PV) holding what the plan is taking,
  `FrameType` "projection", "flat" or "dark", read into every event beside the frame
  (the NXtomo ``image_key`` idea). Flats and darks live in the same stream as the
  projections: an areaDetector HDF5 file is one StreamResource, and bluesky-tiled-plugins'
  TiledWriter files all frames of a resource under the first stream that uses it.

Optics (units: eV, mm, degrees). DCM Si(111): E = hc / (2 d sin theta), hc = 12398.42 eV A,
d = 3.13560 A. A Fresnel zone plate of diameter D and outermost zone width dr focuses at

    f(E) = D dr / lambda = D dr E / hc,

and images the sample with magnification M when the zone plate sits p = f (1 + 1/M)
downstream of the sample and the camera L = p + q = f (1 + M)^2 / M from it. Both are
linear in E, so keeping the magnification and the focus means moving the zone plate by
(1 + 1/M) D dr / hc and the camera by (1 + M)^2 / M D dr / hc per eV: for FXI's zone
plate (D = 244 um, dr = 30 nm, M = 40) 6.05 um/eV and 0.248 mm/eV. `FocusCalibration`
holds the measured table (energy, zone-plate z, camera z) that beamline staff record by
focusing at a few energies; positions in between and beyond follow its least-squares
lines. `FocusCalibration.from_zone_plate` builds the table from the formula.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from bluesky.protocols import Movable
from ophyd_async.core import (
    AsyncStatus,
    DetectorDataLogic,
    Device,
    EnableDisable,
    MovableLogic,
    PathProvider,
    SignalDataProvider,
    SignalR,
    StandardMovable,
    StandardReadable,
    StrictEnum,
    TimeoutCalculator,
    derived_signal_r,
    soft_signal_r_and_setter,
    soft_signal_rw,
    wait_for_value,
)
from ophyd_async.core import StandardReadableFormat as Format
from ophyd_async.epics.adandor import AndorDetector
from ophyd_async.epics.adcore import ADWriterFactory, NDStatsIO, PluginSignalDataLogic
from ophyd_async.epics.core import epics_signal_r, epics_signal_rw
from ophyd_async.epics.motor import Motor
from ophyd_async.sim import SimMotor

from nanostrain.analysis.units import HC_EV_A
from nanostrain.schema.sample import SampleRecord

from .dcm import DCM_RANGE_EV, SI111_D_A, bragg_angle_deg, calibrated_energy_eV, energy_from_bragg_eV
from .sample import mounted_sample_signal
from .sim_area_detector import SimAreaDetector

#: The simulated TXM's default sample: a single-crystal NM91 charged at 200 mA/g to 4.3 V.
SIM_TXM_SAMPLE = SampleRecord(name="SC-NM91", material="NM91", morphology="SC", charge_V=4.3, current_mA_g=200.0)

if TYPE_CHECKING:  # the simulator is imported where a simulated twin is built, never here
    from nanostrain.sim.txm import Specimen, TxmImaging

__all__ = [
    "SI111_D_A",
    "SIM_TXM_SAMPLE",
    "EpicsTxm",
    "FocusCalibration",
    "FrameType",
    "SampleStage",
    "ShutterState",
    "SimShutter",
    "SimTxm",
    "SimTxmCamera",
    "TxmCamera",
    "TxmEnergy",
    "TxmShutter",
    "bragg_angle_deg",
    "energy_from_bragg_eV",
]

# ------------------------------------------------------------------ focus calibration


@dataclass(frozen=True)
class FocusCalibration:
    """Zone-plate and camera positions (mm) that keep the image in focus, linear in E (eV).

    energies_eV, zone_plate_mm, detector_mm : the calibration table, >= 2 rows (positions
    found by focusing at each energy); each position follows the least-squares line
    z(E) = a + b E through its column.
    """

    energies_eV: tuple[float, ...]
    zone_plate_mm: tuple[float, ...]
    detector_mm: tuple[float, ...]
    _lines: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        energies = np.asarray(self.energies_eV, dtype=float)
        if energies.ndim != 1 or energies.size < 2 or np.ptp(energies) <= 0:
            raise ValueError("a focus calibration needs >= 2 distinct energies")
        if not len(self.zone_plate_mm) == len(self.detector_mm) == energies.size:
            raise ValueError("energies_eV, zone_plate_mm and detector_mm must have one length")
        lines = tuple(np.polyfit(energies, column, 1) for column in (self.zone_plate_mm, self.detector_mm))
        object.__setattr__(self, "_lines", lines)

    @classmethod
    def from_zone_plate(
        cls,
        energy_eV: float = 8350.0,
        zone_plate_mm: float = 0.0,
        detector_mm: float = 0.0,
        *,
        diameter_um: float = 244.0,
        outer_zone_nm: float = 30.0,
        magnification: float = 40.0,
        span_eV: float = 100.0,
    ) -> FocusCalibration:
        """The table the lens equation gives: positions at ``energy_eV`` (where the
        microscope was focused) and at +-``span_eV``, from f = D dr E / hc,
        p = f (1 + 1/M), L = f (1 + M)^2 / M."""
        energies = np.array([energy_eV - span_eV, energy_eV, energy_eV + span_eV])
        focal_mm = diameter_um * outer_zone_nm * 1e-3 * energies / (HC_EV_A * 1e-4) * 1e-3
        p = focal_mm * (1.0 + 1.0 / magnification)
        distance = focal_mm * (1.0 + magnification) ** 2 / magnification
        return cls(
            tuple(energies),
            tuple(zone_plate_mm + p - p[1]),
            tuple(detector_mm + distance - distance[1]),
        )

    def zone_plate_z(self, energy_eV: float) -> float:
        """Zone-plate z in focus at ``energy_eV``, mm."""
        return float(np.polyval(self._lines[0], energy_eV))

    def detector_z(self, energy_eV: float) -> float:
        """Camera z at ``energy_eV`` (same magnification), mm."""
        return float(np.polyval(self._lines[1], energy_eV))


def _motor(prefix: str | None, units: str, initial_value: float = 0.0) -> Motor | SimMotor:
    """An EPICS motor record, or (prefix None) a simulated motor that moves instantly."""
    return SimMotor(units=units, initial_value=initial_value) if prefix is None else Motor(prefix)


# ------------------------------------------------------------------ energy


@dataclass
class _EnergyLogic(MovableLogic[float]):
    """Moves the DCM to E - offset (its own energy scale) and the zone plate and camera
    to their calibrated positions for E, all at once."""

    bragg: Movable
    zone_plate_z: Movable
    detector_z: Movable
    offset_eV: SignalR[float]
    calibration: FocusCalibration
    limits_eV: tuple[float, float]

    async def check_move(self, new_position: float) -> None:
        low, high = self.limits_eV
        if not low <= new_position <= high:
            raise ValueError(f"energy {new_position} eV is outside the DCM range {low}-{high} eV")

    async def move(self, new_position: float, timeout: TimeoutCalculator) -> None:
        await self.setpoint.set(new_position)
        offset = await self.offset_eV.get_value()
        await asyncio.gather(
            self.bragg.set(bragg_angle_deg(new_position - offset)),
            self.zone_plate_z.set(self.calibration.zone_plate_z(new_position)),
            self.detector_z.set(self.calibration.detector_z(new_position)),
        )

    async def stop(self) -> None:
        await asyncio.gather(self.bragg.stop(), self.zone_plate_z.stop(), self.detector_z.stop())


class TxmEnergy(StandardReadable, StandardMovable[float]):
    """Photon energy (eV) with the focus following: a pseudo-positioner over three motors.

    ``set(E)`` moves, concurrently, the DCM Bragg motor ``bragg`` (degrees) to
    asin(hc / (2 d (E - offset))), the zone plate ``zone_plate_z`` and the camera
    ``detector_z`` (mm) to ``calibration``'s positions for E. The readback (named like the
    device) is E = hc / (2 d sin theta_readback) + offset. ``offset_eV`` (a configuration
    soft signal) is the energy calibration: true energy minus the DCM's own scale, as
    `plans.txm.energy_calibration` measures it on a Ni foil.

    Prefixes: the three motor records' PV names (None: simulated motors, as `SimTxm` uses).
    limits_eV: the DCM range, checked before any motion.
    """

    def __init__(
        self,
        bragg_prefix: str | None = None,
        zone_plate_prefix: str | None = None,
        detector_prefix: str | None = None,
        calibration: FocusCalibration | None = None,
        limits_eV: tuple[float, float] = DCM_RANGE_EV,
        name: str = "",
    ) -> None:
        self.calibration = calibration or FocusCalibration.from_zone_plate()
        self.limits_eV = (float(limits_eV[0]), float(limits_eV[1]))
        parked_eV = float(np.mean(self.calibration.energies_eV))  # where simulated motors start
        with self.add_children_as_readables():
            self.bragg = _motor(bragg_prefix, "deg", bragg_angle_deg(parked_eV))
            self.zone_plate_z = _motor(zone_plate_prefix, "mm", self.calibration.zone_plate_z(parked_eV))
            self.detector_z = _motor(detector_prefix, "mm", self.calibration.detector_z(parked_eV))
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.offset_eV = soft_signal_rw(float, 0.0, units="eV")
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.readback = derived_signal_r(
                calibrated_energy_eV, derived_units="eV", bragg_deg=self.bragg.user_readback, offset_eV=self.offset_eV
            )
        self.setpoint = soft_signal_rw(float, 0.0, units="eV")
        super().__init__(name=name)

    @cached_property
    def movable_logic(self) -> _EnergyLogic:
        return _EnergyLogic(
            setpoint=self.setpoint,
            readback=self.readback,
            bragg=self.bragg,
            zone_plate_z=self.zone_plate_z,
            detector_z=self.detector_z,
            offset_eV=self.offset_eV,
            calibration=self.calibration,
            limits_eV=self.limits_eV,
        )


# ------------------------------------------------------------------ sample stage


class SampleStage(StandardReadable):
    """Sample x, y, z motors (mm; x across the beam, y up, z along the beam) below the
    rotation stage; ``out_offset_mm``: how far x moves to take the sample out of the field
    of view for flat fields (`plans.txm.take_flats`).

    prefix: motor records ``prefix + "X"``, ``"Y"``, ``"Z"`` (None: simulated motors).
    """

    def __init__(self, prefix: str | None = None, out_offset_mm: float = 0.5, name: str = "") -> None:
        self.out_offset_mm = float(out_offset_mm)
        with self.add_children_as_readables():
            self.x, self.y, self.z = (_motor(None if prefix is None else prefix + axis, "mm") for axis in "XYZ")
        super().__init__(name=name)


# ------------------------------------------------------------------ shutter


class ShutterState(StrictEnum):
    """Shutter status strings of the NSLS-II photon shutters (``Pos-Sts``)."""

    OPEN = "Open"
    CLOSED = "Not Open"


class TxmShutter(StandardReadable, Movable[ShutterState]):
    """Photon shutter: ``set(ShutterState.OPEN)`` writes 1 to ``{prefix}Cmd:Opn-Cmd``,
    ``set(ShutterState.CLOSED)`` to ``{prefix}Cmd:Cls-Cmd``; both wait (``timeout`` s) for
    ``{prefix}Pos-Sts`` to report the state."""

    def __init__(self, prefix: str, timeout: float = 10.0, name: str = "") -> None:
        self.timeout = timeout
        self.open_cmd = epics_signal_rw(int, prefix + "Cmd:Opn-Cmd")
        self.close_cmd = epics_signal_rw(int, prefix + "Cmd:Cls-Cmd")
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.status = epics_signal_r(ShutterState, prefix + "Pos-Sts")
        super().__init__(name=name)

    async def _command(self, value: ShutterState) -> None:
        await (self.open_cmd if value == ShutterState.OPEN else self.close_cmd).set(1)

    @AsyncStatus.wrap
    async def set(self, value: ShutterState) -> None:
        value = ShutterState(value)
        await self._command(value)
        await wait_for_value(self.status, value, timeout=self.timeout)


class SimShutter(TxmShutter):
    """Simulated shutter: the same signals, soft; the status follows the command at once."""

    def __init__(self, timeout: float = 10.0, name: str = "") -> None:
        self.timeout = timeout
        self.open_cmd = soft_signal_rw(int)
        self.close_cmd = soft_signal_rw(int)
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.status, self._set_status = soft_signal_r_and_setter(ShutterState, ShutterState.CLOSED)
        StandardReadable.__init__(self, name=name)

    async def _command(self, value: ShutterState) -> None:
        await super()._command(value)
        self._set_status(value)


# ------------------------------------------------------------------ camera


class FrameType(StrictEnum):
    """What a frame shows: the sample, the beam without it, or no beam."""

    PROJECTION = "projection"
    FLAT = "flat"
    DARK = "dark"


class TxmCamera(AndorDetector):
    """The TXM camera through ADAndor: driver ``cam1:``, HDF5 plugin ``HDF1:``, statistics
    plugin ``Stats1:`` whose frame total is read with every frame (``stats.total``).

    frame_shape, bytes_per_pixel: what one frame weighs on disk (plans check the space).
    """

    needs_path_provider = True

    def __init__(
        self,
        prefix: str,
        path_provider: PathProvider,
        name: str = "",
        *,
        frame_shape: tuple[int, int] = (2160, 2560),
        bytes_per_pixel: int = 2,
        driver_suffix: str = "cam1:",
        hdf_suffix: str = "HDF1:",
        stats_suffix: str = "Stats1:",
    ) -> None:
        self.frame_shape, self.bytes_per_pixel = tuple(frame_shape), bytes_per_pixel
        self.path_provider = path_provider
        stats = NDStatsIO(prefix + stats_suffix)
        super().__init__(
            prefix,
            ADWriterFactory.hdf(path_provider, writer_suffix=hdf_suffix),
            driver_suffix=driver_suffix,
            plugins={"stats": stats},
            name=name,
        )
        self.add_detector_logics(_StatsTotal(self.driver, self.stats.total, stats=self.stats))


@dataclass
class _StatsTotal(PluginSignalDataLogic):
    """Reads the NDStats frame total with every frame, after enabling the plugin's
    callbacks and statistics."""

    stats: NDStatsIO | None = None

    async def prepare_single(self, datakey_name: str) -> SignalDataProvider:
        await asyncio.gather(
            self.stats.enable_callbacks.set(EnableDisable.ENABLE), self.stats.compute_statistics.set(True)
        )
        return await super().prepare_single(datakey_name)


@dataclass
class _SoftSignalData(DetectorDataLogic):
    """Reads one soft signal with every frame (the simulated statistics plugin)."""

    signal: SignalR

    async def prepare_single(self, datakey_name: str) -> SignalDataProvider:
        return SignalDataProvider(self.signal)


class _SoftStats(Device):
    """The statistics plugin's frame total, set by the simulated camera."""

    def __init__(self, name: str = "") -> None:
        self.total, self.set_total = soft_signal_r_and_setter(float, 0.0)
        super().__init__(name=name)


class SimTxmCamera(SimAreaDetector):
    """Simulated TXM camera: frames from ``render`` (uint16, HDF5), and ``stats.total``."""

    def __init__(self, path_provider: PathProvider, render, shape: tuple[int, int], name: str = "") -> None:
        self.frame_shape, self.bytes_per_pixel = tuple(shape), 2
        self.path_provider = path_provider
        self.stats = _SoftStats()
        super().__init__(path_provider, self._render_with_stats(render), shape, dtype="uint16", name=name)
        self.add_detector_logics(_SoftSignalData(self.stats.total))

    def _render_with_stats(self, render):
        async def frame(exposure_s: float) -> np.ndarray:
            image = await render(exposure_s)
            self.stats.set_total(float(image.sum(dtype=np.float64)))
            return image

        return frame


# ------------------------------------------------------------------ the microscope


class _Txm(Device):
    """What plans use: energy, rotation, sample, shutter, camera, frame_type; plus
    ``pixel_size_um`` (effective pixel at the sample), ``rotation_limits_deg``."""

    energy: TxmEnergy
    rotation: Motor | SimMotor
    sample: SampleStage
    shutter: TxmShutter
    camera: TxmCamera | SimTxmCamera

    def _finish(
        self,
        pixel_size_um: float,
        rotation_limits_deg: tuple[float, float],
        name: str,
        mount: Callable[[SampleRecord], None] | None = None,
        mounted: Callable[[], SampleRecord | None] | None = None,
    ) -> None:
        if pixel_size_um <= 0:
            raise ValueError(f"pixel_size_um must be > 0, got {pixel_size_um}")
        self.pixel_size_um = float(pixel_size_um)
        self.rotation_limits_deg = (float(rotation_limits_deg[0]), float(rotation_limits_deg[1]))
        self.frame_type = soft_signal_rw(FrameType, FrameType.PROJECTION)
        self.mounted_sample = mounted_sample_signal(mount, mounted)  # what is mounted (devices.sample)
        Device.__init__(self, name=name)

    # bluesky stages a device's root ancestor: staging the microscope stages its camera
    @AsyncStatus.wrap
    async def stage(self) -> None:
        await self.camera.stage()

    @AsyncStatus.wrap
    async def unstage(self) -> None:
        await self.camera.unstage()

    def data_directory(self) -> Path:
        """Folder the camera writes its HDF5 files to (for the disk-space check)."""
        return Path(self.camera.path_provider(self.camera.name).directory_path)


class EpicsTxm(_Txm):
    """The FXI microscope over EPICS; each part's PV prefix is an argument.

    bragg_prefix, zone_plate_prefix, detector_prefix: motor records of the DCM Bragg axis
    and the zone-plate and camera z stages; rotation_prefix: rotation motor record;
    sample_prefix: sample stage (``X``, ``Y``, ``Z`` motor records); shutter_prefix:
    photon shutter; camera_prefix: ADAndor IOC. calibration: focus calibration
    (default: from FXI's zone plate at 8350 eV); pixel_size_um: effective pixel size at
    the sample; frame_shape: camera frame (rows, cols).
    """

    needs_path_provider = True

    def __init__(
        self,
        path_provider: PathProvider,
        bragg_prefix: str,
        zone_plate_prefix: str,
        detector_prefix: str,
        rotation_prefix: str,
        sample_prefix: str,
        shutter_prefix: str,
        camera_prefix: str,
        *,
        calibration: FocusCalibration | None = None,
        pixel_size_um: float = 0.04,
        frame_shape: tuple[int, int] = (2160, 2560),
        out_offset_mm: float = 0.5,
        energy_limits_eV: tuple[float, float] = DCM_RANGE_EV,
        rotation_limits_deg: tuple[float, float] = (-360.0, 360.0),
        name: str = "",
    ) -> None:
        self.energy = TxmEnergy(bragg_prefix, zone_plate_prefix, detector_prefix, calibration, energy_limits_eV)
        self.rotation = Motor(rotation_prefix)
        self.sample = SampleStage(sample_prefix, out_offset_mm)
        self.shutter = TxmShutter(shutter_prefix)
        self.camera = TxmCamera(camera_prefix, path_provider, frame_shape=frame_shape)
        self._finish(pixel_size_um, rotation_limits_deg, name)


class _TxmScene:
    """What the simulated camera sees when a frame is taken: the mounted specimen at the
    photon energy the DCM passes now (its energy scale + ``dcm_offset_eV``), the rotation
    angle, the sample position (plus a settling jitter drawn anew at every energy), blurred
    by the zone plate's distance from focus, or darkness when the shutter is closed."""

    def __init__(self, txm: SimTxm, imaging: TxmImaging, specimen: Specimen, *, dcm_offset_eV: float,
                 jitter_px: float, outer_zone_nm: float, seed: int | None) -> None:
        self.txm, self.imaging, self.specimen = txm, imaging, specimen
        self.dcm_offset_eV, self.jitter_px, self.outer_zone_nm = dcm_offset_eV, jitter_px, outer_zone_nm
        self.rng = np.random.default_rng(seed)
        self.jitter: dict[float, tuple[float, float]] = {}

    def settle(self, energy_eV: float) -> tuple[float, float]:
        """The sample's settling shift (rows, cols, pixels) at this energy, drawn once."""
        key = round(energy_eV, 3)
        if key not in self.jitter:
            self.jitter[key] = tuple(self.rng.normal(0.0, self.jitter_px, 2)) if self.jitter_px else (0.0, 0.0)
        return self.jitter[key]

    async def __call__(self, exposure_s: float) -> np.ndarray:
        txm = self.txm
        bragg, zone_plate, angle, x, y, shutter = await asyncio.gather(
            txm.energy.bragg.user_readback.get_value(),
            txm.energy.zone_plate_z.user_readback.get_value(),
            txm.rotation.user_readback.get_value(),
            txm.sample.x.user_readback.get_value(),
            txm.sample.y.user_readback.get_value(),
            txm.shutter.status.get_value(),
        )
        energy = energy_from_bragg_eV(bragg) + self.dcm_offset_eV
        pixel_mm = txm.pixel_size_um * 1e-3
        jitter = self.settle(energy)
        shift = (-y / pixel_mm + jitter[0], x / pixel_mm + jitter[1])
        # defocus blur: distance from focus x numerical aperture lambda / (2 dr)
        aperture = HC_EV_A / energy / (2.0 * self.outer_zone_nm * 10.0)
        blur = abs(zone_plate - txm.energy.calibration.zone_plate_z(energy)) * aperture / pixel_mm
        return await asyncio.to_thread(
            self.imaging.frame, self.specimen, energy, angle, exposure_s,
            beam=shutter == ShutterState.OPEN, shift_px=shift, blur_px=blur,
        )


class SimTxm(_Txm):
    """The simulated microscope: same parts as `EpicsTxm`, motors that move instantly, a
    camera whose frames `sim.txm.TxmImaging` draws from the mounted specimen.

    Parameters
    ----------
    path_provider: where the camera's HDF5 files go.
    specimen: what is mounted (a `sim.txm.TxmSample` of ``(rows, cols, cols)`` voxels, a
        `sim.txm.NiFoil`); default `SIM_TXM_SAMPLE`, SC-NM91 charged at 200 mA/g to 4.3 V.
        Writing ``mounted_sample`` voxelises the cathode it names (`sim.txm.particle_sample`).
    shape: camera frame (rows, cols). pixel_size_um: pixel (= voxel) size at the sample;
        the default 80 nm (the study's 40 nm voxels binned 2x2) fits a 4 um single crystal
        in 64 pixels.
    dcm_offset_eV: true photon energy minus the DCM's scale (a miscalibration to find).
    jitter_px: RMS settling shift of the sample after each energy change (rows and cols).
    flux: flat-field counts per pixel per second (``imaging`` options: see `TxmImaging`).
    """

    def __init__(
        self,
        path_provider: PathProvider,
        specimen: Specimen | None = None,
        *,
        shape: tuple[int, int] = (64, 64),
        pixel_size_um: float = 0.08,
        calibration: FocusCalibration | None = None,
        dcm_offset_eV: float = 0.0,
        jitter_px: float = 0.5,
        flux: float = 2.0e5,
        outer_zone_nm: float = 30.0,
        out_offset_mm: float = 0.5,
        energy_limits_eV: tuple[float, float] = DCM_RANGE_EV,
        rotation_limits_deg: tuple[float, float] = (-360.0, 360.0),
        seed: int | None = 0,
        name: str = "",
    ) -> None:
        from nanostrain.sim.txm import TxmImaging, particle_sample

        from nanostrain.sim.samples import cathode_particle

        rows, cols = shape
        self.sample_record: SampleRecord | None = None  # what mount_sample mounted (None: a given specimen)
        if specimen is None:
            self.sample_record = SIM_TXM_SAMPLE
            specimen = particle_sample(cathode_particle(SIM_TXM_SAMPLE), (rows, cols, cols), pixel_size_um)
        self.energy = TxmEnergy(calibration=calibration, limits_eV=energy_limits_eV)
        self.rotation = SimMotor(units="deg")
        self.sample = SampleStage(None, out_offset_mm)
        self.shutter = SimShutter()
        self.scene = _TxmScene(
            self, TxmImaging(tuple(shape), flux=flux, seed=seed), specimen,
            dcm_offset_eV=dcm_offset_eV, jitter_px=jitter_px, outer_zone_nm=outer_zone_nm, seed=seed,
        )
        self.camera = SimTxmCamera(path_provider, self.scene, tuple(shape))
        self._finish(pixel_size_um, rotation_limits_deg, name, self._mount, lambda: self.sample_record)

    def _mount(self, record: SampleRecord) -> None:
        if record.is_calibrant:
            raise ValueError(f"{self.name}: the TXM takes a cathode particle, not {record.name}")
        from nanostrain.sim.samples import cathode_particle
        from nanostrain.sim.txm import particle_sample

        rows, cols = self.camera.frame_shape
        self.mount(particle_sample(cathode_particle(record), (rows, cols, cols), self.pixel_size_um))
        self.sample_record = record

    @property
    def specimen(self) -> Specimen:
        """What is mounted."""
        return self.scene.specimen

    def mount(self, specimen: Specimen) -> None:
        """Mount another specimen (a `TxmSample` of the camera's size, or a `NiFoil`)."""
        rows, cols = self.camera.frame_shape
        if specimen.shape[0] != rows or specimen.shape[2] != cols:
            raise ValueError(f"specimen {specimen.shape} does not fit the {rows} x {cols} camera")
        self.scene.specimen = specimen
        self.scene.jitter.clear()
        self.sample_record = None  # a specimen given as such; `mounted_sample` records it after
