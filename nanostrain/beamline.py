"""The beamline's device instances: configuration as code, in one place, dodal style.

Every device is one factory function registered on a `DeviceManager`
(``@beamline.factory``); its parameters name what it needs (fixtures such as
``path_provider`` and ``coin_cell``, or other devices such as ``i0``), injected by name,
and it is built only when something asks for it. `SIM_BEAMLINE` is the simulated
beamline (blueapi can load this module as its ``deviceManager`` source).

`make_devices(sim=True)` builds the simulated beamline; `make_devices(sim=False,
config=...)` builds the real EPICS devices named in a beamline configuration file
(TOML), each entry naming its class and PV prefix; an entry may instead say ``sim =
true`` (that device's simulated twin) and ``mock = true`` (connect it in ophyd-async
mock mode)::

    [sim]
    time_scale = 600.0        # simulated s per wall s of the simulated cycler's clock

    [devices.cycler]
    class = "nanostrain.devices.cycler:EpicsCycler"
    prefix = "XF:17BM-ES{Cycler:1}"

Devices that fail to build or connect are reported together, in one
`DeviceBuildError` naming each. Plans and the profile get devices from here, never by
constructing them themselves.
"""

from __future__ import annotations

import importlib
import inspect
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluesky.run_engine import call_in_bluesky_event_loop
from ophyd_async.core import PathProvider, StaticPathProvider, UUIDFilenameProvider

from .devices.alignment import make_alignment_bench
from .devices.beam import SimBeamMonitor, SimRingCurrent, SimShutter
from .devices.cycler import SimCycler
from .devices.nanoprobe import ROCKING_TRAVEL_DEG, SimAxis, SimNanoprobeScanner, SimPixelDetector, SimXrfCounter
from .devices.dcm import DcmEnergy
from .devices.txm import SimTxm
from .devices.xas import SimIonChambers, XasFlySampler
from .devices.xrd import SimXrdDetector
from .schema.sample import SampleRecord
from .sim.cycler_engine import CyclerEngine
from .sim.nanoprobe import NanoprobeSimulation
from .sim.samples import cathode_particle


class DeviceBuildError(RuntimeError):
    """Devices failed to build or connect; ``errors`` maps each device's name to its full
    error. The message has one line per device (for a device that did not connect: how
    many PVs, and the first)."""

    def __init__(self, errors: Mapping[str, BaseException]) -> None:
        self.errors = dict(errors)
        lines = "\n".join(f"  {name}: {_summary(e)}" for name, e in self.errors.items())
        super().__init__(f"{len(self.errors)} device(s) failed (full errors in .errors):\n{lines}")


def _summary(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, _Failed):
        return text
    pvs = sorted(set(re.findall(r"\b[a-z]+://\S+", text)))
    if pvs:
        return f"{type(error).__name__}: {len(pvs)} PV(s) not connected, e.g. {pvs[0]}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first}"


class DeviceManager:
    """Lazily built devices, one factory function each, dependencies injected by name.

    ``@manager.factory`` registers a device (its name: the function's); ``@manager.fixture``
    a shared non-device object (a path provider, the coin cell). A parameter of either
    names a fixture, a device of this manager, or a value passed to `build`; what a
    parameter does not find keeps its default, or is an error.
    """

    def __init__(self) -> None:
        self.factories: dict[str, Callable[..., Any]] = {}
        self.fixtures: dict[str, Callable[..., Any]] = {}

    def factory(self, func: Callable[..., Any]) -> Callable[..., Any]:
        self.factories[func.__name__] = func
        return func

    def fixture(self, func: Callable[..., Any]) -> Callable[..., Any]:
        self.fixtures[func.__name__] = func
        return func

    def build(
        self,
        names: list[str] | None = None,
        *,
        overrides: Mapping[str, Callable[..., Any]] | None = None,
        **values: Any,
    ) -> dict[str, Any]:
        """Build the devices ``names`` (default: every factory) and what they need.

        values: fixtures given directly (e.g. ``path_provider=...``). overrides: factories
        that replace (or add to) this manager's for this build (e.g. the real devices of a
        beamline config). Raises `DeviceBuildError` naming every device that failed.
        """
        devices, errors = self._build(names, overrides, values)
        if errors:
            raise DeviceBuildError(errors)
        return devices

    def build_and_connect(
        self,
        *,
        mock: bool = False,
        timeout: float | None = None,
        fixtures: Mapping[str, Any] | None = None,
        names: list[str] | None = None,
        overrides: Mapping[str, Callable[..., Any]] | None = None,
        mock_names: frozenset[str] = frozenset(),
    ) -> DeviceConnectResult:
        """Build the devices ``names`` (default every one) and connect the ophyd-async
        ones (in mock mode if ``mock`` or named in ``mock_names``; ``timeout`` s each,
        default 10); report failures per device instead of raising. blueapi's
        ``deviceManager`` interface, as dodal's DeviceManager has it; ``fixtures`` are
        values given directly (``path_provider``), ``overrides`` as for `build`."""
        built, build_errors = self._build(names, overrides, dict(fixtures or {}))
        connection_errors = connection_errors_of(built, mock=mock, timeout=timeout or 10.0, mock_names=mock_names)
        devices = {name: device for name, device in built.items() if name not in connection_errors}
        return DeviceConnectResult(devices, build_errors, connection_errors)

    def _build(
        self, names: list[str] | None, overrides: Mapping[str, Callable[..., Any]] | None, values: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, BaseException]]:
        """The devices ``names`` that could be built, and the errors of those that could not."""
        factories = {**self.factories, **(overrides or {})}
        built: dict[str, Any] = dict(values)
        errors: dict[str, BaseException] = {}
        building: list[str] = []

        def get(name: str) -> Any:
            if name in built:
                return built[name]
            if name in errors:
                raise _Failed(f"needs {name!r}, which failed")
            func = factories.get(name) or self.fixtures.get(name)
            if func is None:
                raise _Unprovided(name)
            if name in building:
                raise RecursionError(f"dependency cycle: {' -> '.join([*building, name])}")
            building.append(name)
            try:
                kwargs = {}
                for parameter in inspect.signature(func).parameters.values():
                    try:
                        kwargs[parameter.name] = get(parameter.name)
                    except _Unprovided:
                        if parameter.default is inspect.Parameter.empty:
                            raise TypeError(f"{name}: nothing provides {parameter.name!r}") from None
                built[name] = func(**kwargs)
            except Exception as error:  # noqa: BLE001 - recorded, reported together by build
                errors.setdefault(name, error)
                raise _Failed(f"needs {name!r}, which failed") from error
            finally:
                building.pop()
            return built[name]

        wanted = list(factories) if names is None else list(names)
        for name in wanted:
            if name not in factories:
                raise KeyError(f"no device {name!r}; known: {', '.join(factories)}")
            try:
                get(name)
            except _Failed:
                pass  # in errors
        return {name: built[name] for name in wanted if name in built}, {n: e for n, e in errors.items() if n in factories}


@dataclass(frozen=True)
class DeviceConnectResult:
    """What `DeviceManager.build_and_connect` built and connected (``devices``), and the
    errors of the devices that failed to build or to connect, by device name."""

    devices: dict[str, Any]
    build_errors: dict[str, BaseException]
    connection_errors: dict[str, BaseException]


class _Unprovided(LookupError):
    """No fixture, factory or value of that name."""


class _Failed(RuntimeError):
    """A factory (or one it needs) failed; its error is in the build's errors."""


def detector_path_provider(detector_dir: Path) -> PathProvider:
    """File names (uuid) for detector HDF5 files in ``detector_dir``."""
    Path(detector_dir).mkdir(parents=True, exist_ok=True)
    return StaticPathProvider(UUIDFilenameProvider(), Path(detector_dir).resolve())


#: Frame shape of the simulated XRD panel: the PerkinElmer 2048 x 2048 binned 2 x 2
#: (0.01 1/A per pixel at 1.5 m and 0.1665 A: H2/H3 (003) splittings of >= 0.25 A resolve).
SIM_XRD_SHAPE = (1024, 1024)

#: The coin cell mounted on the simulated beamline from the start, on the cycler and in
#: the XRD beam: a single-crystal LiNi0.9Co0.1O2 cathode, until `mount_sample` puts another.
SIM_CELL = SampleRecord(name="SC-NC91", material="NC91", morphology="SC")

#: The particle in the simulated nanoprobe's beam from the start: a single-crystal NM91
#: charged at 100 mA/g to 4.3 V (an H3 shell over an H2 core, the SXDM comparison's sample).
SIM_NANOPROBE_SAMPLE = SampleRecord(name="SC-NM91", material="NM91", morphology="SC", charge_V=4.3, current_mA_g=100.0)

#: Simulated seconds per wall second of the simulated cycler's clock (the ``time_scale``
#: signal, also ``[sim] time_scale`` of a beamline config; change it at any time with
#: ``bps.mv(cycler.time_scale, ...)``): 10 simulated minutes per wall second, so that at
#: 200 mA/g (C/1) a cycle takes ~12 wall s and frames taken every >= 10 mAh/g (3 min,
#: 0.3 wall s, about what one frame and its live reduction cost) keep their cadence.
SIM_TIME_SCALE = 600.0

#: The simulated beamline, one factory per device (names are the session's device names).
SIM_BEAMLINE = DeviceManager()


@SIM_BEAMLINE.fixture
def coin_cell():
    """The cathode particle of the cell the cycler drives and the XRD detector sees."""
    return cathode_particle(SIM_CELL)


@SIM_BEAMLINE.fixture
def alignment_bench(path_provider: PathProvider) -> dict[str, Any]:
    return make_alignment_bench(path_provider)


@SIM_BEAMLINE.factory
def sx(alignment_bench):
    """Alignment stage (mm)."""
    return alignment_bench["sx"]


@SIM_BEAMLINE.factory
def ring_current() -> SimRingCurrent:
    """Storage ring current (mA); ``dump()`` / ``refill()`` rehearse a beam dump."""
    return SimRingCurrent(name="ring_current")


@SIM_BEAMLINE.factory
def shutter() -> SimShutter:
    """Beamline shutter (open status); ``close()`` / ``open()``."""
    return SimShutter(name="shutter")


def _beam_sources(*devices: Any) -> list[Any]:
    """The simulated ones of ``devices``: what a simulated monitor sees cut the beam."""
    return [device for device in devices if isinstance(device, SimRingCurrent | SimShutter)]


@SIM_BEAMLINE.factory
def i0(alignment_bench, ring_current, shutter) -> SimBeamMonitor:
    """Beam monitor (ophyd v1) of the XRD and alignment end station: no flux while the
    ring is dumped or the shutter closed."""
    monitor = alignment_bench["i0"]
    monitor.sources = _beam_sources(ring_current, shutter)
    return monitor


@SIM_BEAMLINE.factory
def cam(alignment_bench):
    """Alignment camera that sees the beam spot."""
    return alignment_bench["cam"]


@SIM_BEAMLINE.factory
def cycler(coin_cell, time_scale: float = SIM_TIME_SCALE) -> SimCycler:
    """Cycler channel driving ``coin_cell`` on a clock of ``time_scale`` simulated s per wall s."""
    return SimCycler(CyclerEngine(coin_cell), time_scale=time_scale, name="cycler", sample_record=SIM_CELL)


@SIM_BEAMLINE.factory
def xrd(path_provider: PathProvider, coin_cell, i0, cycler) -> SimXrdDetector:
    """XRD panel looking at ``coin_cell``; a cell mounted on a simulated ``cycler`` comes into its beam."""
    detector = SimXrdDetector(path_provider, coin_cell, monitor=i0, shape=SIM_XRD_SHAPE, name="xrd")
    if isinstance(cycler, SimCycler):
        cycler.cell_viewers.append(detector.view_cell)
    return detector


@SIM_BEAMLINE.fixture
def nanoprobe_simulation() -> NanoprobeSimulation:
    return NanoprobeSimulation()


@SIM_BEAMLINE.factory
def np_stage() -> SimNanoprobeScanner:
    """Nanoprobe sample scanner x, y, z (um)."""
    return SimNanoprobeScanner(name="np_stage")


@SIM_BEAMLINE.factory
def np_theta(nanoprobe_simulation) -> SimAxis:
    """Nanoprobe rocking rotation (deg), at the nominal Bragg angle."""
    return SimAxis("deg", ROCKING_TRAVEL_DEG, velocity=10.0, max_velocity=30.0,
                   initial=nanoprobe_simulation.geometry.two_theta_deg / 2.0, name="np_theta")


@SIM_BEAMLINE.factory
def np_i0(ring_current, shutter) -> SimBeamMonitor:
    """Nanoprobe beam monitor (ophyd v1): no flux while the ring is dumped or the shutter closed."""
    return SimBeamMonitor(name="np_i0", sources=_beam_sources(ring_current, shutter))


@SIM_BEAMLINE.factory
def merlin(path_provider: PathProvider, nanoprobe_simulation, np_stage, np_theta, np_i0) -> SimPixelDetector:
    """Nanoprobe pixel detector, `SIM_NANOPROBE_SAMPLE` in its beam."""
    return SimPixelDetector(path_provider, nanoprobe_simulation, np_stage, np_theta, np_i0,
                            sample=SIM_NANOPROBE_SAMPLE, name="merlin")


@SIM_BEAMLINE.factory
def np_xrf(nanoprobe_simulation, np_stage, np_theta, np_i0, merlin) -> SimXrfCounter:
    """Nanoprobe fluorescence counter: sees what ``merlin`` has mounted."""
    return SimXrfCounter(nanoprobe_simulation, np_stage, np_theta, np_i0, name="np_xrf")


@SIM_BEAMLINE.factory
def txm(path_provider: PathProvider) -> SimTxm:
    """Transmission X-ray microscope with `nanostrain.devices.txm.SIM_TXM_SAMPLE` mounted."""
    return SimTxm(path_provider, name="txm")


@SIM_BEAMLINE.factory
def dcm() -> DcmEnergy:
    """DCM photon energy (eV) of the XAS station, a simulated Bragg motor."""
    return DcmEnergy(name="dcm")


@SIM_BEAMLINE.factory
def xas_ic(dcm) -> SimIonChambers:
    """I0, It, Iref ion chambers of the XAS station, `nanostrain.devices.xas.SIM_XAS_SAMPLE`
    mounted, counting at ``dcm``'s energy."""
    return SimIonChambers(dcm, name="xas_ic")


@SIM_BEAMLINE.factory
def xas_fly(dcm, xas_ic) -> XasFlySampler:
    """The fly-scan sampler of the XAS station: counts ``xas_ic`` once per sample and
    records ``dcm``'s energy at the count's start and end (`plans.xas.xas_fly_scan`)."""
    return XasFlySampler(dcm, xas_ic, name="xas_fly")


def load_config(path: Path | str) -> dict[str, Any]:
    """Read a beamline configuration file; raise a clear error if it is malformed."""
    with open(path, "rb") as handle:
        config = tomllib.load(handle)
    check_config(config, str(path))
    return config


def check_config(config: Mapping[str, Any], source: str = "beamline config") -> None:
    """Raise ValueError if an entry names neither a class nor ``sim = true``, or names an
    unknown twin."""
    for name, entry in config.get("devices", {}).items():
        if entry.get("sim"):
            if name not in SIM_BEAMLINE.factories:
                raise ValueError(f"{source}: device {name!r} has no simulated twin; twins: {', '.join(SIM_BEAMLINE.factories)}")
        elif "class" not in entry:
            raise ValueError(f"{source}: device {name!r} has no 'class' (module:Class) and is not 'sim = true'.")


def _epics_factory(name: str, entry: Mapping[str, Any]) -> Callable[..., Any]:
    """A factory building ``entry``'s class (``module:Class``) with its other keys as
    keyword arguments; classes with ``needs_path_provider`` also get ``path_provider``."""
    module_name, _, class_name = entry["class"].partition(":")
    kwargs = {k: v for k, v in entry.items() if k not in ("class", "mock", "sim")}

    def build(path_provider: PathProvider):
        cls = getattr(importlib.import_module(module_name), class_name)
        extra = {"path_provider": path_provider} if getattr(cls, "needs_path_provider", False) else {}
        return cls(name=name, **kwargs, **extra)

    return build


def beamline_spec(sim: bool, config: Mapping[str, Any] | None) -> BeamlineSpec:
    """What to build: every twin (``sim``, with ``config``'s ``[sim]`` settings), or the
    devices listed in ``config["devices"]`` (EPICS classes by ``class``, ``prefix`` and
    extra keyword arguments, or a twin where ``sim = true``; ``mock = true`` connects
    that one in mock mode)."""
    values = _sim_settings(config)
    if sim:
        return BeamlineSpec(None, {}, values, frozenset())
    if config is None:
        raise ValueError("Real devices need a beamline configuration (config=path to a TOML file).")
    check_config(config)
    entries = config.get("devices", {})
    overrides = {name: _epics_factory(name, e) for name, e in entries.items() if not e.get("sim")}
    return BeamlineSpec(list(entries), overrides, values, frozenset(n for n, e in entries.items() if e.get("mock")))


def real_devices(config: Mapping[str, Any], path_provider: PathProvider) -> dict[str, Any]:
    """The devices listed in ``config["devices"]`` (not connected), `beamline_spec`'s real case."""
    spec = beamline_spec(False, config)
    return SIM_BEAMLINE.build(spec.names, overrides=spec.overrides, path_provider=path_provider, **spec.values)


@dataclass(frozen=True)
class BeamlineSpec:
    """Arguments of `DeviceManager.build` / `build_and_connect` for one beamline."""

    names: list[str] | None
    overrides: dict[str, Callable[..., Any]]
    values: dict[str, Any]
    mock_names: frozenset[str]


def _sim_settings(config: Mapping[str, Any] | None) -> dict[str, Any]:
    settings = dict((config or {}).get("sim", {}))
    unknown = set(settings) - {"time_scale"}
    if unknown:
        raise ValueError(f"beamline config [sim]: unknown keys {sorted(unknown)}; known: time_scale")
    return settings


def make_devices(
    sim: bool = True,
    detector_dir: Path | str = Path("nanostrain-data") / "detectors",
    config: Mapping[str, Any] | Path | str | None = None,
    connect: bool = True,
    mock: bool = False,
) -> dict[str, Any]:
    """Build (and connect) the beamline's devices.

    sim: every simulated twin (default; ``config`` may set ``[sim] time_scale``) or the
        devices named in ``config`` (real EPICS classes, or twins where ``sim = true``).
    detector_dir: folder for detector HDF5 files (must be readable by the catalog server).
    connect: connect ophyd-async devices (needs a RunEngine's event loop: create the
        RunEngine first). ``mock=True`` connects every device in ophyd-async mock mode;
        a config entry's ``mock = true`` that device only.
    Raises `DeviceBuildError` naming every device that failed to build or connect.
    """
    if config is not None and not isinstance(config, Mapping):
        config = load_config(config)
    spec = beamline_spec(sim, config)
    devices = SIM_BEAMLINE.build(spec.names, overrides=spec.overrides,
                                 path_provider=detector_path_provider(Path(detector_dir)), **spec.values)
    if connect:
        connect_devices(devices, mock=mock, mock_names=spec.mock_names)
    return devices


def connect_devices(
    devices: Mapping[str, Any], mock: bool = False, timeout: float = 10.0, mock_names: frozenset[str] = frozenset()
) -> None:
    """Connect every ophyd-async device in ``devices`` on the RunEngine's event loop (in
    mock mode if ``mock`` or its name is in ``mock_names``); raise one `DeviceBuildError`
    naming every device that failed."""
    errors = connection_errors_of(devices, mock=mock, timeout=timeout, mock_names=mock_names)
    if errors:
        raise DeviceBuildError(errors)


def connection_errors_of(
    devices: Mapping[str, Any], mock: bool = False, timeout: float = 10.0, mock_names: frozenset[str] = frozenset()
) -> dict[str, BaseException]:
    """Connect every ophyd-async device in ``devices`` on the RunEngine's event loop;
    return the errors of those that failed, by name."""
    import asyncio

    from ophyd_async.core import Device

    async def connect_all() -> dict[str, BaseException]:
        names = [name for name, d in devices.items() if isinstance(d, Device)]
        results = await asyncio.gather(
            *(devices[n].connect(mock=mock or n in mock_names, timeout=timeout) for n in names), return_exceptions=True
        )
        return {n: r for n, r in zip(names, results, strict=True) if isinstance(r, BaseException)}

    return call_in_bluesky_event_loop(connect_all())
