"""Nanoprobe (SXDM) devices: the real EPICS classes and their simulated twins.

A scanning X-ray diffraction microscope (NSLS-II 3-ID HXN style) needs

* a sample scanner with x, y, z axes (piezo or stepper motor records; um) and a rocking
  rotation theta (a motor record; deg): `NanoprobeScanner` and ophyd-async's `Motor`;
* a pixel-array detector writing HDF5: `MerlinPixelDetector` (ADMerlin) and
  `EigerPixelDetector` (ADEiger), areaDetector drivers with the HDF5 plugin (``HDF1:``)
  and an NDStats plugin (``Stats1:``) whose total counts (``stats.total``) a rocking
  scan reads and fits; both carry the SXDM geometry (`SxdmGeometrySignals`) as
  configuration signals and return it from ``sxdm_geometry()``;
* a fluorescence ROI counter to find particles: `XrfRoiCounter` (an Xspress3-style ROI
  sum, ``C<n>_ROI<m>:Value_RBV``, acquired by a put-with-callback on ``Acquire``);
* an incident-flux monitor: `IonChamber` (``flux``, photons/s).

PV prefixes (and suffixes) are constructor arguments. The simulated twins, `SimAxis`,
`SimNanoprobeScanner`, `SimPixelDetector` and `SimXrfCounter`, have the same signal
names and bluesky protocols (the beam monitor twin is `devices.beam.SimBeamMonitor`);
what they see comes from `sim.nanoprobe.NanoprobeSimulation`, evaluated at the positions
of the simulated axes when each frame or count is taken. `make_sim_nanoprobe` builds the
simulated instrument. Importing this module (and building a real class) does not import
`nanostrain.sim`: only `make_sim_nanoprobe` imports it, when called.

`SCANNER_TRAVEL_UM` and `ROCKING_TRAVEL_DEG` are the instrument's travel: the simulated
axes' soft limits and the default limits the SXDM plans check arguments against.

Fly scans in the simulation: `SimAxis` moves instantly (``time_scale=0``) but records
each move as a constant-velocity `Trajectory`. When a detector prepared for N > 1 frames
takes frame k, every axis that started a move since that prepare is where its trajectory
puts it (k + 1/2) x period (exposure + deadtime) after the move started: the detector
starts with the motion, as one started by the motion controller does in a
position-synchronised fly line. One-frame acquisitions see the axes' readbacks.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any
from typing import Annotated as A

import numpy as np
from ophyd_async.core import (
    DEFAULT_TIMEOUT,
    AsyncStatus,
    DetectorTriggerLogic,
    Device,
    EnableDisable,
    MovableLogic,
    PathProvider,
    SignalDict,
    SignalR,
    SignalRW,
    StandardMovable,
    StandardReadable,
    SubsetEnum,
    TimeoutCalculator,
    TriggerInfo,
    soft_signal_r_and_setter,
    soft_signal_rw,
)
from ophyd_async.core import StandardReadableFormat as Format
from ophyd_async.epics.adcore import (
    ADAcquireLogic,
    ADBaseIO,
    AreaDetector,
    NDStatsIO,
    prepare_exposures,
    trigger_info_from_num_images,
)
from ophyd_async.epics.admerlin import MerlinDriverIO, MerlinTriggerLogic
from ophyd_async.epics.core import PvSuffix, epics_signal_r, epics_signal_rw
from ophyd_async.epics.motor import Motor

from nanostrain.analysis.sxdm_geometry import SxdmGeometry
from nanostrain.schema.sample import SampleRecord

from .beam import SimBeamMonitor
from .hdf5_compression import DEFAULT_COMPRESSION, hdf_writer
from .sample import mounted_sample_signal
from .sim_area_detector import SimAreaDetector

if TYPE_CHECKING:
    from nanostrain.sim.nanoprobe import NanoprobeSimulation

__all__ = [
    "EigerDriverIO",
    "EigerPixelDetector",
    "EigerTriggerMode",
    "IonChamber",
    "MerlinPixelDetector",
    "NanoprobeScanner",
    "ROCKING_TRAVEL_DEG",
    "SCANNER_TRAVEL_UM",
    "SimAxis",
    "SimNanoprobeScanner",
    "SimPixelDetector",
    "SimXrfCounter",
    "SxdmGeometrySignals",
    "Trajectory",
    "XrfRoiCounter",
    "make_sim_nanoprobe",
]

SCANNER_TRAVEL_UM = (-50.0, 50.0)
"""Travel of the sample scanner axes (um): the simulated axes' soft limits, the plans' default."""

ROCKING_TRAVEL_DEG = (-5.0, 60.0)
"""Travel of the rocking rotation (deg): the simulated axis's soft limits, the plans' default."""


def as_geometry(geometry: SxdmGeometry | dict[str, Any]) -> SxdmGeometry:
    """An `SxdmGeometry` from itself or from its record (`SxdmGeometry.from_metadata`: a
    beamline TOML table or a start document's ``sxdm_geometry``)."""
    return geometry if isinstance(geometry, SxdmGeometry) else SxdmGeometry.from_metadata(geometry)


# --------------------------------------------------------------------------------------
# Geometry, shared by the real and the simulated detectors
# --------------------------------------------------------------------------------------
class SxdmGeometrySignals(Device):
    """The detector geometry (`SxdmGeometry`) as configuration signals, so every
    descriptor records it: ``energy_eV``, ``distance_m``, ``pixel_m``, ``center_row``,
    ``center_col`` (px), ``two_theta_deg``, ``gamma_deg`` (deg); NaN until set."""

    FIELDS = ("energy_eV", "distance_m", "pixel_m", "center_row", "center_col", "two_theta_deg", "gamma_deg")

    def __init__(self, geometry: SxdmGeometry | dict[str, Any] | None = None, name: str = "") -> None:
        self._setters = {}
        for field_name in self.FIELDS:
            signal, self._setters[field_name] = soft_signal_r_and_setter(float, math.nan)
            setattr(self, field_name, signal)
        self._geometry: SxdmGeometry | None = None
        super().__init__(name=name)
        if geometry is not None:
            self.update(geometry)

    @property
    def signals(self) -> tuple[SignalR, ...]:
        """The configuration signals, for ``add_config_signals``."""
        return tuple(getattr(self, field_name) for field_name in self.FIELDS)

    def update(self, geometry: SxdmGeometry | dict[str, Any]) -> None:
        """Record a new geometry (an `SxdmGeometry` or its keyword arguments)."""
        geometry = as_geometry(geometry)
        values = (geometry.energy_eV, geometry.distance_m, geometry.pixel_m, *geometry.center_px,
                  geometry.two_theta_deg, geometry.gamma_deg)
        for field_name, value in zip(self.FIELDS, values, strict=True):
            self._setters[field_name](float(value))
        self._geometry = geometry

    def get(self) -> SxdmGeometry:
        """The recorded geometry; raises if none was given."""
        if self._geometry is None:
            raise RuntimeError(f"{self.name}: no SXDM geometry recorded; call set_geometry().")
        return self._geometry


class _HasSxdmGeometry:
    """``sxdm_geometry()`` / ``set_geometry()`` of a detector with a ``geometry`` child."""

    geometry: SxdmGeometrySignals

    def sxdm_geometry(self) -> SxdmGeometry:
        """The detector geometry the SXDM analysis uses (recorded in the start document)."""
        return self.geometry.get()

    def set_geometry(self, geometry: SxdmGeometry | dict[str, Any]) -> None:
        """Record the geometry for the frames that follow (e.g. after moving the arm)."""
        self.geometry.update(geometry)


# --------------------------------------------------------------------------------------
# Real EPICS classes
# --------------------------------------------------------------------------------------
class NanoprobeScanner(StandardReadable):
    """Sample scanner: three motor records ``prefix + x_suffix`` etc. (um), read hinted."""

    def __init__(self, prefix: str, x_suffix: str = "X", y_suffix: str = "Y", z_suffix: str = "Z", name: str = "") -> None:
        with self.add_children_as_readables():
            self.x = Motor(prefix + x_suffix)
            self.y = Motor(prefix + y_suffix)
            self.z = Motor(prefix + z_suffix)
        super().__init__(name=name)


class _StatsAfterEachFrame:
    """areaDetector classes with an NDStats plugin ``stats``: staging enables the plugin
    (callbacks, statistics) and sets WaitForPlugins, so an acquisition completes only once
    the plugins have processed its frames and ``stats.total`` read after a trigger belongs
    to that trigger's frame."""

    driver: ADBaseIO
    stats: NDStatsIO

    @AsyncStatus.wrap
    async def stage(self) -> None:
        await super().stage()
        await asyncio.gather(
            self.stats.enable_callbacks.set(EnableDisable.ENABLE),
            self.stats.compute_statistics.set(True),
            self.driver.wait_for_plugins.set(True),
        )


class _PixelDetector(_StatsAfterEachFrame, AreaDetector, _HasSxdmGeometry):
    """An areaDetector pixel-array detector for SXDM: driver ``prefix + driver_suffix``,
    HDF5 plugin ``prefix + hdf_suffix``, NDStats ``prefix + stats_suffix`` (``stats``),
    the geometry as configuration signals. Subclasses give the driver and its logic
    (`_driver_parts`).

    prefix: IOC prefix; path_provider: where the IOC writes HDF5 files (a folder the
    catalog server reads); geometry: `SxdmGeometry` (or its record, `SxdmGeometry.from_metadata`);
    compression: the HDF5 plugin's ``Compression`` (default ``"BSLZ4"``, lossless;
    `hdf5_compression.hdf_writer`).
    """

    needs_path_provider = True

    def __init__(
        self,
        prefix: str,
        path_provider: PathProvider,
        geometry: SxdmGeometry | dict[str, Any] | None = None,
        name: str = "",
        driver_suffix: str = "cam1:",
        hdf_suffix: str = "HDF1:",
        stats_suffix: str = "Stats1:",
        compression: str = DEFAULT_COMPRESSION,
    ) -> None:
        self.geometry = SxdmGeometrySignals(geometry)
        self.mounted_sample = mounted_sample_signal()  # recorded in every descriptor
        driver, acquire_logic, trigger_logic, driver_config = self._driver_parts(prefix + driver_suffix)
        super().__init__(
            driver,
            prefix,
            hdf_writer(path_provider, writer_suffix=hdf_suffix, compression=compression),
            acquire_logic=acquire_logic,
            trigger_logic=trigger_logic,
            plugins={"stats": NDStatsIO(prefix + stats_suffix)},
            config_sigs=(*driver_config, *self.geometry.signals, self.mounted_sample),
            name=name,
        )

    @staticmethod
    def _driver_parts(
        driver_prefix: str,
    ) -> tuple[ADBaseIO, ADAcquireLogic, DetectorTriggerLogic, tuple[SignalR, ...]]:
        """(driver, acquire logic, trigger logic, driver configuration signals)."""
        raise NotImplementedError


class MerlinPixelDetector(_PixelDetector):
    """Quantum Detectors Merlin (Medipix3, 55 um pixels) through ADMerlin (its driver and
    trigger logic); arguments as `_PixelDetector`."""

    @staticmethod
    def _driver_parts(driver_prefix: str):
        driver = MerlinDriverIO(driver_prefix)
        return driver, ADAcquireLogic(driver), MerlinTriggerLogic(driver), ()


class EigerTriggerMode(SubsetEnum):
    """ADEiger trigger modes (eiger.template ``TriggerMode``)."""

    INTERNAL_SERIES = "Internal Series"
    INTERNAL_ENABLE = "Internal Enable"
    EXTERNAL_SERIES = "External Series"
    EXTERNAL_ENABLE = "External Enable"


class EigerDriverIO(ADBaseIO):
    """ADEiger driver records used here (ADEiger/eigerApp/Db/eiger.template)."""

    trigger_mode: A[SignalRW[EigerTriggerMode], PvSuffix.rbv("TriggerMode")]
    num_triggers: A[SignalRW[int], PvSuffix.rbv("NumTriggers")]
    photon_energy: A[SignalRW[float], PvSuffix.rbv("PhotonEnergy")]
    armed: A[SignalR[bool], PvSuffix("Armed")]


EIGER_DEADTIME_S = 1e-4
"""Smallest gap between Eiger frames (s; EIGER2 readout, continuous counting)."""


@dataclass
class EigerTriggerLogic(DetectorTriggerLogic):
    """ADEiger triggering: a series of NumImages frames per trigger.

    internal: Internal Series, 1 trigger of ``num`` frames; edge: External Series, ``num``
    triggers of 1 frame each; level: External Enable (exposure = gate), ``num`` gates.
    """

    driver: EigerDriverIO

    def get_deadtime(self, config_values: SignalDict) -> float:
        return EIGER_DEADTIME_S

    async def _series(self, mode: EigerTriggerMode, triggers: int) -> None:
        await asyncio.gather(self.driver.trigger_mode.set(mode), self.driver.num_triggers.set(triggers))

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        await self._series(EigerTriggerMode.INTERNAL_SERIES, 1)
        await prepare_exposures(self.driver, num, livetime, deadtime)

    async def prepare_edge(self, num: int, livetime: float) -> None:
        await self._series(EigerTriggerMode.EXTERNAL_SERIES, num)
        await prepare_exposures(self.driver, 1, livetime)

    async def prepare_level(self, num: int) -> None:
        await self._series(EigerTriggerMode.EXTERNAL_ENABLE, num)
        await prepare_exposures(self.driver, 1)

    async def default_trigger_info(self) -> TriggerInfo:
        return await trigger_info_from_num_images(self.driver)


class EigerPixelDetector(_PixelDetector):
    """Dectris Eiger (75 um pixels) through ADEiger; arguments as `_PixelDetector`.

    Acquire completes when the series is over; ``Armed`` tells when triggers are accepted;
    the trigger mode is a configuration signal.
    """

    @staticmethod
    def _driver_parts(driver_prefix: str):
        driver = EigerDriverIO(driver_prefix)
        acquire_logic = ADAcquireLogic(driver, driver_armed_signal=driver.armed)
        return driver, acquire_logic, EigerTriggerLogic(driver), (driver.trigger_mode,)


class XrfRoiCounter(StandardReadable):
    """Fluorescence ROI counter (Xspress3-style): ``counts`` = ROI sum of the last
    acquisition (``prefix C<channel>_ROI<roi>:Value_RBV``), ``acquire_time`` (s).

    trigger() puts 1 to ``prefix Acquire`` and waits for the put callback, which the IOC
    completes when the acquisition is over.
    """

    def __init__(self, prefix: str, channel: int = 1, roi: int = 1, name: str = "") -> None:
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.counts = epics_signal_r(float, f"{prefix}C{channel}_ROI{roi}:Value_RBV")
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.acquire_time = epics_signal_rw(float, prefix + "AcquireTime")
        self.acquire = epics_signal_rw(bool, prefix + "Acquire")
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        exposure = await self.acquire_time.get_value()
        await self.acquire.set(True, timeout=exposure + DEFAULT_TIMEOUT)


class IonChamber(StandardReadable):
    """Incident-flux monitor: ``flux`` (photons/s) from ``prefix + flux_suffix`` (the
    name `devices.beam.SimBeamMonitor` uses, so plans read either)."""

    def __init__(self, prefix: str, flux_suffix: str = "Flux", name: str = "") -> None:
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.flux = epics_signal_r(float, prefix + flux_suffix)
        super().__init__(name=name)


# --------------------------------------------------------------------------------------
# Simulated twins
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trajectory:
    """A constant-velocity move of a simulated axis: ``start`` -> ``end`` (axis units) at
    ``speed`` (units/s; 0 = a jump); ``number`` counts the axis's moves."""

    start: float
    end: float
    speed: float
    number: int

    def position(self, t_s: float) -> float:
        """Position t_s seconds after the move started: start + sign(end - start) speed t,
        clipped at the end."""
        distance = self.end - self.start
        if self.speed <= 0.0:
            return self.end
        return self.start + math.copysign(min(abs(distance), self.speed * max(t_s, 0.0)), distance)


class SimAxisLimitError(ValueError):
    """A simulated axis was asked to move outside its soft limits."""


@dataclass
class _SimAxisLogic(MovableLogic[float]):
    axis: SimAxis

    async def check_move(self, new_position: float) -> None:
        low, high = await asyncio.gather(
            self.axis.low_limit_travel.get_value(), self.axis.high_limit_travel.get_value()
        )
        if not low <= new_position <= high:
            raise SimAxisLimitError(f"{self.axis.name}: {new_position} is outside the soft limits [{low}, {high}]")

    async def move(self, new_position: float, timeout: TimeoutCalculator) -> None:
        await self.axis.move_to(new_position)


class SimAxis(StandardReadable, StandardMovable[float]):
    """Simulated motor-record axis with the signal names of ophyd-async's `Motor`:
    ``user_readback`` (hinted), ``user_setpoint``, ``velocity``, ``max_velocity``,
    ``low_limit_travel``, ``high_limit_travel``, ``motor_done_move``, ``motor_egu``.

    Moves take |distance| / velocity simulated seconds, slept as ``time_scale`` x that
    in wall time (0 = instantly); each is kept as `trajectory` for the fly-scan emulation.
    """

    def __init__(
        self,
        units: str = "um",
        limits: tuple[float, float] = SCANNER_TRAVEL_UM,
        velocity: float = 100.0,
        max_velocity: float = 1000.0,
        initial: float = 0.0,
        time_scale: float = 0.0,
        name: str = "",
    ) -> None:
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.user_readback, self._set_readback = soft_signal_r_and_setter(float, initial, units=units)
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.velocity = soft_signal_rw(float, velocity, units=f"{units}/s")
            self.motor_egu = soft_signal_rw(str, units)
        self.user_setpoint = soft_signal_rw(float, initial, units=units)
        self.max_velocity = soft_signal_rw(float, max_velocity, units=f"{units}/s")
        self.low_limit_travel = soft_signal_rw(float, limits[0], units=units)
        self.high_limit_travel = soft_signal_rw(float, limits[1], units=units)
        self.motor_done_move, self._set_done = soft_signal_r_and_setter(int, 1)
        self.time_scale = time_scale
        self.trajectory = Trajectory(initial, initial, 0.0, 0)
        super().__init__(name=name)

    @cached_property
    def movable_logic(self) -> _SimAxisLogic:
        return _SimAxisLogic(setpoint=self.user_setpoint, readback=self.user_readback, axis=self)

    async def move_to(self, position: float) -> None:
        """Move at the current velocity (see the class docstring)."""
        start, speed = await asyncio.gather(self.user_readback.get_value(), self.velocity.get_value())
        await self.user_setpoint.set(position)
        self.trajectory = Trajectory(start, position, speed, self.trajectory.number + 1)
        self._set_done(0)
        if self.time_scale > 0 and speed > 0:
            await asyncio.sleep(self.time_scale * abs(position - start) / speed)
        self._set_readback(position)
        self._set_done(1)


class SimNanoprobeScanner(StandardReadable):
    """Simulated twin of `NanoprobeScanner`: x, y, z `SimAxis` (um)."""

    def __init__(self, limits: tuple[float, float] = SCANNER_TRAVEL_UM, time_scale: float = 0.0, name: str = "") -> None:
        with self.add_children_as_readables():
            self.x = SimAxis("um", limits, time_scale=time_scale)
            self.y = SimAxis("um", limits, time_scale=time_scale)
            self.z = SimAxis("um", limits, time_scale=time_scale)
        super().__init__(name=name)


class _BeamState:
    """Where the simulated beam is: the axes' positions and the flux, when a frame is taken."""

    def __init__(self, stage: SimNanoprobeScanner, theta: SimAxis, monitor: SimBeamMonitor | None) -> None:
        self.stage, self.theta, self.monitor = stage, theta, monitor

    def flux_scale(self) -> float:
        """Flux over the nominal flux (1 without a monitor)."""
        return 1.0 if self.monitor is None else self.monitor.expected_flux() / self.monitor.nominal_flux

    async def readbacks(self) -> tuple[float, float, float]:
        """(theta deg, y um, x um) readbacks."""
        return await asyncio.gather(
            self.theta.user_readback.get_value(),
            self.stage.y.user_readback.get_value(),
            self.stage.x.user_readback.get_value(),
        )


class _Stats(Device):
    """NDStats twin: ``total`` counts of the last frame."""

    def __init__(self, name: str = "") -> None:
        self.total, self.set_total = soft_signal_r_and_setter(float, 0.0)
        super().__init__(name=name)


class _NanoprobeScene:
    """The renderer of `SimPixelDetector`: the frame at the beam's position now, or at
    frame k's moment on a fly trajectory (module docstring)."""

    def __init__(self, simulation: NanoprobeSimulation, beam: _BeamState, stats: _Stats) -> None:
        self.simulation, self.beam, self.stats = simulation, beam, stats
        self.arm(TriggerInfo())

    def _axes(self) -> tuple[SimAxis, SimAxis, SimAxis]:
        return self.beam.theta, self.beam.stage.y, self.beam.stage.x

    def arm(self, trigger_info: TriggerInfo) -> None:
        """A new acquisition: frame period, frame count, and each axis's last move."""
        self._period = trigger_info.livetime + trigger_info.deadtime
        self._multi_frame = trigger_info.number_of_collections > 1
        self._moves_at_arm = [axis.trajectory.number for axis in self._axes()]
        self._frame = 0

    async def __call__(self, exposure_s: float) -> np.ndarray:
        positions = list(await self.beam.readbacks())
        if self._multi_frame:
            moment = (self._frame + 0.5) * (self._period or exposure_s)
            for i, (axis, moves) in enumerate(zip(self._axes(), self._moves_at_arm, strict=True)):
                if axis.trajectory.number != moves:
                    positions[i] = axis.trajectory.position(moment)
        self._frame += 1
        frame = self.simulation.frame(*positions, exposure_s, self.beam.flux_scale())
        self.stats.set_total(float(frame.sum(dtype=np.float64)))
        return frame


class SimPixelDetector(SimAreaDetector, _HasSxdmGeometry):
    """Simulated twin of `MerlinPixelDetector` / `EigerPixelDetector`: HDF5 frames of
    ``simulation`` at the positions of ``stage`` and ``theta``, ``stats.total`` read in
    step scans, the geometry as configuration signals (kept equal to the simulation's).

    monitor: frames scale with its flux (None: nominal flux); time_scale: see
    `SimAreaDetector`. sample: a cathode to mount now (see ``mounted_sample``; None:
    keep the simulation's crystal). Writing ``mounted_sample`` mounts its particle
    (`nanostrain.sim.samples.cathode_particle`, 50 nm voxels) centred at
    ``particle_centre_um`` (y, x) on the stage and moves the arm to its (003) 2theta.
    """

    def __init__(
        self,
        path_provider: PathProvider,
        simulation: NanoprobeSimulation,
        stage: SimNanoprobeScanner,
        theta: SimAxis,
        monitor: SimBeamMonitor | None = None,
        time_scale: float = 0.0,
        name: str = "",
        *,
        sample: SampleRecord | None = None,
        particle_centre_um: tuple[float, float] = (0.7, -0.4),
    ) -> None:
        self.simulation = simulation
        self.particle_centre_um = particle_centre_um
        self.sample_record: SampleRecord | None = None
        self.mounted_sample = mounted_sample_signal(self._mount, lambda: self.sample_record)
        self.stats = _Stats()
        self.geometry = SxdmGeometrySignals(simulation.geometry)
        self._scene = _NanoprobeScene(simulation, _BeamState(stage, theta, monitor), self.stats)
        super().__init__(
            path_provider,
            self._scene,
            simulation.frame_shape,
            dtype=np.dtype(simulation.dtype).str,
            time_scale=time_scale,
            config_sigs=(*self.geometry.signals, self.mounted_sample),
            name=name,
        )
        if sample is not None:
            self._mount(sample)

    def _mount(self, record: SampleRecord) -> None:
        if record.is_calibrant:
            raise ValueError(f"{self.name}: the nanoprobe takes a cathode particle, not {record.name}")
        from nanostrain.sim.nanoprobe import project_particle
        from nanostrain.sim.samples import cathode_particle

        particle = cathode_particle(record)
        self.simulation.mount(project_particle(particle, 0.05, centre_um=self.particle_centre_um))
        self.simulation.point_detector_at(particle.lattice().mean_c_A)
        self.sample_record = record
        self.geometry.update(self.simulation.geometry)

    def set_geometry(self, geometry: SxdmGeometry | dict[str, Any]) -> None:
        """Move the simulated detector (the simulation renders with the new geometry)."""
        geometry = as_geometry(geometry)
        self.simulation.geometry = geometry
        self.geometry.update(geometry)

    def point_at_003(self, c_A: float) -> None:
        """Move the arm to the (003) 2theta of a cell of axis c (A) (`point_detector_at`)."""
        self.simulation.point_detector_at(c_A)
        self.geometry.update(self.simulation.geometry)

    @AsyncStatus.wrap
    async def prepare(self, value: TriggerInfo) -> None:
        self._scene.arm(value)
        await super().prepare(value)


class SimXrfCounter(StandardReadable):
    """Simulated twin of `XrfRoiCounter`: ``counts`` of the particle footprint at the
    beam's position when triggered, for ``acquire_time`` seconds."""

    def __init__(
        self,
        simulation: NanoprobeSimulation,
        stage: SimNanoprobeScanner,
        theta: SimAxis,
        monitor: SimBeamMonitor | None = None,
        acquire_time: float = 0.01,
        name: str = "",
    ) -> None:
        self.simulation = simulation
        self._beam = _BeamState(stage, theta, monitor)
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.counts, self._set_counts = soft_signal_r_and_setter(float, 0.0)
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.acquire_time = soft_signal_rw(float, acquire_time, units="s")
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        theta, y, x = await self._beam.readbacks()
        exposure = await self.acquire_time.get_value()
        self._set_counts(self.simulation.xrf_counts(theta, y, x, exposure, self._beam.flux_scale()))


def make_sim_nanoprobe(
    path_provider: PathProvider,
    simulation: NanoprobeSimulation | None = None,
    time_scale: float = 0.0,
) -> dict[str, Any]:
    """The simulated nanoprobe: scanner ``np_stage`` (x, y, z), rotation ``np_theta``
    (at the nominal Bragg angle), pixel detector ``merlin``, fluorescence counter
    ``np_xrf`` and beam monitor ``np_i0`` (ophyd v1), sharing one `NanoprobeSimulation`
    (default: a new one; the simulator is imported here, not with the module)."""
    if simulation is None:
        from nanostrain.sim.nanoprobe import NanoprobeSimulation

        simulation = NanoprobeSimulation()
    stage = SimNanoprobeScanner(time_scale=time_scale, name="np_stage")
    theta = SimAxis("deg", ROCKING_TRAVEL_DEG, velocity=10.0, max_velocity=30.0,
                    initial=simulation.geometry.two_theta_deg / 2.0, time_scale=time_scale, name="np_theta")
    monitor = SimBeamMonitor(name="np_i0")
    detector = SimPixelDetector(path_provider, simulation, stage, theta, monitor, time_scale, name="merlin")
    xrf = SimXrfCounter(simulation, stage, theta, monitor, name="np_xrf")
    return {"np_stage": stage, "np_theta": theta, "merlin": detector, "np_xrf": xrf, "np_i0": monitor}
