"""XRD area detectors: the PerkinElmer flat panel (EPICS areaDetector) and its simulated twin.

Both are ophyd-async `StandardDetector`s that write frames to HDF5 (``/entry/data/data``)
and emit StreamResource/StreamDatum, and both carry the same ``geometry`` child: the pyFAI
geometry the beamline believes (from the CeO2 calibration), recorded as configuration
signals so that every descriptor holds it and the analysis needs nothing but the catalog:

* ``<name>-geometry-pyfai_config``: pyFAI geometry config as JSON (``pyFAI.load(json.loads(...))``;
  the form the XRD analysis takes as ``xrd_geometry``),
* ``<name>-geometry-wavelength_A`` (angstrom) and ``<name>-geometry-distance_m`` (m).

``detector.geometry_config()`` returns it as a dict for the start document and
``detector.set_geometry(ai)`` records a new calibration.

`PerkinElmerDetector` drives ADPerkinElmer (driver ``cam1:``, HDF5 plugin ``HDF1:``):
the generic ophyd-async areaDetector pieces (ADBaseIO, `ADAcquireLogic`, HDF writer)
plus the PerkinElmer records it uses (trigger modes, sync mode, offset/dark frames).
`SimXrdDetector` is a `SimAreaDetector` whose frames `sim.powder.PowderRenderer` draws
from the state of a shared `CathodeParticle` at the moment each frame is taken; it imports
the simulator (`nanostrain.sim`) in its constructor, so importing this module, or using
the real detector, does not.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol
from typing import Annotated as A

import numpy as np
from ophyd_async.core import (
    AsyncStatus,
    DetectorTriggerLogic,
    Device,
    EnableDisable,
    PathProvider,
    SignalR,
    SignalRW,
    StrictEnum,
    TriggerInfo,
    non_zero,
    soft_signal_r_and_setter,
)
from ophyd_async.epics.adcore import (
    ADAcquireLogic,
    ADBaseIO,
    AreaDetector,
    NDPluginBaseIO,
    prepare_exposures,
    trigger_info_from_num_images,
)
from ophyd_async.epics.core import EpicsOptions, PvSuffix, wait_for_good_state
from pyFAI.geometry import Geometry

from nanostrain.analysis.units import M_PER_A
from nanostrain.analysis.xrd import PERKINELMER_SHAPE, geometry_config, load_geometry, perkinelmer_geometry
from nanostrain.schema.sample import SampleRecord, sample_record

from .hdf5_compression import DEFAULT_COMPRESSION, hdf_writer
from .sample import mounted_sample_signal, particle_record
from .sim_area_detector import SimAreaDetector

if TYPE_CHECKING:  # the simulator is imported where a simulated detector is built
    from nanostrain.sim.cathode import CathodeParticle
    from nanostrain.sim.powder import PowderRenderer

__all__ = [
    "CALIBRANT",
    "PerkinElmerDetector",
    "PerkinElmerDriverIO",
    "PerkinElmerSyncMode",
    "PerkinElmerTriggerLogic",
    "PerkinElmerTriggerMode",
    "SimXrdDetector",
    "XrdGeometry",
]

#: What `SimXrdDetector.set_sample` takes to mount the CeO2 calibrant (NIST SRM 674b).
CALIBRANT = "CeO2"


# --------------------------------------------------------------------------------------
# Geometry shared by the real and the simulated detector
# --------------------------------------------------------------------------------------
class XrdGeometry(Device):
    """The detector geometry the beamline believes, as configuration signals.

    geometry: a pyFAI geometry, a PONI file path, or None (not calibrated yet: empty
    config, NaN wavelength and distance). Signals: ``pyfai_config`` (JSON),
    ``wavelength_A`` (angstrom), ``distance_m`` (m, sample to PONI).
    """

    def __init__(self, geometry: Geometry | str | os.PathLike | None = None, name: str = "") -> None:
        self.pyfai_config, self._set_config = soft_signal_r_and_setter(str, "")
        self.wavelength_A, self._set_wavelength = soft_signal_r_and_setter(float, math.nan, units="A")
        self.distance_m, self._set_distance = soft_signal_r_and_setter(float, math.nan, units="m")
        self._config: dict | None = None
        super().__init__(name=name)
        if geometry is not None:
            self.update(geometry)

    @property
    def signals(self) -> tuple[SignalR, ...]:
        """The configuration signals, for ``add_config_signals``."""
        return (self.pyfai_config, self.wavelength_A, self.distance_m)

    def update(self, geometry: Geometry | str | os.PathLike) -> None:
        """Record a new geometry (pyFAI geometry or PONI file path)."""
        geometry = load_geometry(geometry)
        if geometry.wavelength is None:
            raise ValueError("The geometry has no wavelength: calibrate with a known energy.")
        self._config = geometry_config(geometry)
        self._set_config(json.dumps(self._config, sort_keys=True))
        self._set_wavelength(geometry.wavelength / M_PER_A)
        self._set_distance(float(geometry.dist))

    def config(self) -> dict:
        """The recorded pyFAI geometry config (a dict of JSON types)."""
        if self._config is None:
            raise RuntimeError(f"{self.name}: no geometry recorded; calibrate on CeO2 and set_geometry().")
        return dict(self._config)


class _HasGeometry:
    """`geometry_config` / `set_geometry` of a detector with an `XrdGeometry` child."""

    geometry: XrdGeometry

    def geometry_config(self) -> dict:
        """pyFAI geometry config of the recorded calibration (for ``xrd_geometry`` metadata)."""
        return self.geometry.config()

    def set_geometry(self, geometry: Geometry | str | os.PathLike) -> None:
        """Record a calibration (pyFAI geometry or PONI file) for the frames that follow."""
        self.geometry.update(geometry)


# --------------------------------------------------------------------------------------
# Real detector: ADPerkinElmer over EPICS
# --------------------------------------------------------------------------------------
class PerkinElmerTriggerMode(StrictEnum):
    """ADPerkinElmer TriggerMode: ADBase's Internal/External plus two PerkinElmer modes."""

    INTERNAL = "Internal"
    EXTERNAL = "External"
    FREE_RUNNING = "Free Running"
    SOFT_TRIGGER = "Soft Trigger"


class PerkinElmerSyncMode(StrictEnum):
    """PESyncMode: how the panel's frame readout is synchronised (CameraTriggerMode)."""

    DDD_CLEAR = "DDD Clear"
    DDD_NO_CLEAR = "DDD No Clear"
    LINEWISE = "Linewise"
    FRAMEWISE = "Framewise"
    AUTO_TRIGGER = "AutoTrigger"


class PerkinElmerDriverIO(ADBaseIO):
    """ADBase driver records plus the ADPerkinElmer records used here
    (ADPerkinElmer/perkinElmerApp/Db/PerkinElmer.template)."""

    trigger_mode: A[SignalRW[PerkinElmerTriggerMode], PvSuffix.rbv("TriggerMode")]
    sync_mode: A[SignalRW[PerkinElmerSyncMode], PvSuffix.rbv("PESyncMode")]
    # busy record: the put completes when the offset (dark) frames are acquired
    acquire_offset: A[SignalRW[bool], PvSuffix("PEAcquireOffset"), EpicsOptions(wait=non_zero)]
    num_offset_frames: A[SignalRW[int], PvSuffix("PENumOffsetFrames")]
    use_offset: A[SignalRW[EnableDisable], PvSuffix("PEUseOffset")]
    offset_available: A[SignalR[bool], PvSuffix("PEOffsetAvailable")]


@dataclass
class PerkinElmerTriggerLogic(DetectorTriggerLogic):
    """Internally triggered exposures: TriggerMode Internal, ImageMode Multiple
    (Continuous for num = 0), NumImages, AcquireTime = livetime and AcquirePeriod =
    livetime + deadtime."""

    driver: PerkinElmerDriverIO

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        await self.driver.trigger_mode.set(PerkinElmerTriggerMode.INTERNAL)
        await prepare_exposures(self.driver, num, livetime, deadtime)

    async def default_trigger_info(self) -> TriggerInfo:
        return await trigger_info_from_num_images(self.driver)


class PerkinElmerDetector(AreaDetector[PerkinElmerDriverIO], _HasGeometry):
    """PerkinElmer flat panel (XRD 1621: 2048 x 2048, 200 um) through ADPerkinElmer,
    frames written by the areaDetector HDF5 plugin.

    prefix: the IOC's PV prefix (driver ``prefix + driver_suffix``, HDF5 plugin
    ``prefix + hdf_suffix``); path_provider: where the IOC writes files (a folder the
    catalog server can read); poni: the calibrated geometry (pyFAI geometry or PONI file),
    or None until calibrated (see `set_geometry`); compression: the HDF5 plugin's
    ``Compression`` (default ``"BSLZ4"``, lossless; `hdf5_compression.hdf_writer`).
    """

    #: The beamline registry passes its detector path provider to classes that need one.
    needs_path_provider = True

    def __init__(
        self,
        prefix: str,
        path_provider: PathProvider,
        name: str = "",
        poni: Geometry | str | os.PathLike | None = None,
        driver_suffix: str = "cam1:",
        hdf_suffix: str = "HDF1:",
        plugins: dict[str, NDPluginBaseIO] | None = None,
        config_sigs: Sequence[SignalR] = (),
        compression: str = DEFAULT_COMPRESSION,
    ) -> None:
        driver = PerkinElmerDriverIO(prefix + driver_suffix)
        self.geometry = XrdGeometry(poni)
        self.mounted_sample = mounted_sample_signal()  # recorded in every descriptor
        super().__init__(
            driver,
            prefix,
            hdf_writer(path_provider, writer_suffix=hdf_suffix, compression=compression),
            acquire_logic=ADAcquireLogic(driver),
            trigger_logic=PerkinElmerTriggerLogic(driver),
            plugins=plugins,
            config_sigs=(driver.trigger_mode, *self.geometry.signals, self.mounted_sample, *config_sigs),
            name=name,
        )

    @AsyncStatus.wrap
    async def acquire_offset(self, num_frames: int = 10, timeout: float = 120.0) -> None:
        """Acquire ``num_frames`` offset (dark) frames (PEAcquireOffset, a busy record)
        and correct the frames that follow with them (PEUseOffset). Close the shutter
        first: the panel records whatever reaches it. In a plan::

            (done,) = yield from bps.wait_for([lambda: detector.acquire_offset(10)])
            done.result()  # raises what went wrong
        """
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        await self.driver.num_offset_frames.set(num_frames)
        await self.driver.acquire_offset.set(True, timeout=timeout)
        await wait_for_good_state(self.driver.offset_available, {True})
        await self.driver.use_offset.set(EnableDisable.ENABLE)


# --------------------------------------------------------------------------------------
# Simulated twin
# --------------------------------------------------------------------------------------
class BeamMonitor(Protocol):
    """What the simulated detector needs from a beam monitor (e.g. `SimBeamMonitor`)."""

    nominal_flux: float

    def expected_flux(self) -> float: ...


def _sample_name(sample: CathodeParticle | Literal["CeO2"]) -> str:
    from nanostrain.sim.cathode import CathodeParticle

    if isinstance(sample, CathodeParticle):
        return f"{sample.material.name} {sample.morphology.name}"
    if sample == CALIBRANT:
        return "CeO2 (NIST SRM 674b)"
    raise ValueError(f"sample must be a CathodeParticle or {CALIBRANT!r}, got {sample!r}")


class _PowderScene:
    """What the simulated panel sees when a frame is taken: the mounted sample (its
    state now), in the beam the monitor reports now (no beam: dark counts only)."""

    def __init__(
        self,
        powder: PowderRenderer,
        sample: CathodeParticle | Literal["CeO2"],
        monitor: BeamMonitor | None,
        crystallite_size_A: float | None,
        seed: int | None,
    ) -> None:
        self.powder, self.sample, self.monitor = powder, sample, monitor
        self.crystallite_size_A = crystallite_size_A
        self.rng = np.random.default_rng(seed)

    async def __call__(self, exposure_s: float) -> np.ndarray:
        flux_scale = 1.0 if self.monitor is None else self.monitor.expected_flux() / self.monitor.nominal_flux
        sample = self.sample
        if sample == CALIBRANT:
            return await asyncio.to_thread(self.powder.render_calibrant, exposure_s, self.rng, flux_scale)
        # the particle's state is read here, in the event loop, at the moment of the frame;
        # the rendering (~0.1 s at 2048 x 2048) runs in a thread and leaves the loop free
        size_A = self.crystallite_size_A or 2.0 * sample.radius_um * 1e4  # grain diameter
        return await asyncio.to_thread(
            self.powder.render, sample.lattice(), sample.microstrain(), size_A, exposure_s, self.rng, flux_scale
        )


class SimXrdDetector(SimAreaDetector, _HasGeometry):
    """Simulated PerkinElmer panel looking at an operando coin cell (or the calibrant).

    Parameters
    ----------
    path_provider: where the HDF5 files go.
    particle: the `CathodeParticle` the cycler simulation drives; each frame shows its
        lattice (every radial shell, volume-weighted) and microstrain at that moment.
    geometry: the true pyFAI geometry the frames are rendered with; default a PerkinElmer
        at 1.5 m, 0.1665 A (11-ID-C), binned to ``shape``.
    name: device name (data key of the frames).
    monitor: beam monitor with ``expected_flux()`` and ``nominal_flux`` (frames scale
        with the flux; beam off = dark frames); None = beam always on.
    shape: (rows, cols) of a frame when ``geometry`` is None: (2048, 2048) or a binned
        readout such as (512, 512) (800 um pixels); must match ``geometry`` if both given.
    nominal_geometry: the geometry recorded in the configuration before any calibration
        (default: the true one); a different one rehearses a miscalibrated start.
    crystallite_size_A: coherent domain size D for Scherrer broadening (A); default the
        particle's diffusion-sphere diameter (the single crystal, or a primary grain).
    seed: counting-noise seed. time_scale: see `SimAreaDetector`.
    renderer_options: keyword arguments of `PowderRenderer` (scales, background...).
    """

    def __init__(
        self,
        path_provider: PathProvider,
        particle: CathodeParticle,
        geometry: Geometry | None = None,
        name: str = "xrd",
        monitor: BeamMonitor | None = None,
        shape: tuple[int, int] | None = None,
        *,
        nominal_geometry: Geometry | str | os.PathLike | None = None,
        crystallite_size_A: float | None = None,
        seed: int | None = None,
        time_scale: float = 0.0,
        **renderer_options,
    ) -> None:
        if geometry is None:
            rows, cols = shape or PERKINELMER_SHAPE
            if rows != cols or PERKINELMER_SHAPE[0] % rows:
                raise ValueError(f"shape must be square and divide {PERKINELMER_SHAPE}, got {shape}")
            geometry = perkinelmer_geometry(binning=PERKINELMER_SHAPE[0] // rows)
        elif shape is not None and tuple(shape) != tuple(geometry.detector.shape):
            raise ValueError(f"shape {shape} does not match the geometry's detector {geometry.detector.shape}")
        from nanostrain.sim.powder import PowderRenderer

        self.powder = PowderRenderer(geometry, **renderer_options)
        self._scene = _PowderScene(self.powder, particle, monitor, crystallite_size_A, seed)
        self.geometry = XrdGeometry(nominal_geometry if nominal_geometry is not None else geometry)
        self.sample, self._set_sample_name = soft_signal_r_and_setter(str, _sample_name(particle))
        self.sample_record: SampleRecord | None = particle_record(particle)
        self.mounted_sample = mounted_sample_signal(self._mount, lambda: self.sample_record)
        super().__init__(
            path_provider,
            self._scene,
            self.powder.shape,
            dtype="uint32",
            time_scale=time_scale,
            config_sigs=(*self.geometry.signals, self.sample, self.mounted_sample),
            name=name,
        )

    def set_sample(self, sample: CathodeParticle | Literal["CeO2"]) -> None:
        """Put another cathode particle, or the CeO2 calibrant (``CALIBRANT``), in the beam
        (``mounted_sample`` then reads the calibrant's record, or empty for a particle given
        as such)."""
        self._set_sample_name(_sample_name(sample))
        self._scene.sample = sample
        self.sample_record = sample_record(CALIBRANT) if sample == CALIBRANT else None

    def view_cell(self, particle: CathodeParticle, record: SampleRecord) -> None:
        """The cell ``record`` (its ``particle``, shared with the cycler twin) comes into the beam."""
        self.set_sample(particle)
        self.sample_record = record

    def _mount(self, record: SampleRecord) -> None:
        """``mounted_sample`` written: the calibrant, or an ex-situ cathode particle."""
        if record.is_calibrant:
            self.set_sample(record.calibrant)
        else:
            from nanostrain.sim.samples import cathode_particle

            self.set_sample(cathode_particle(record))
        self.sample_record = record
