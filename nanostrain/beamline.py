"""The beamline's device instances: configuration as code, in one place.

`make_devices(sim=True)` builds the simulated beamline; `make_devices(sim=False,
config=...)` builds the real EPICS devices named in a beamline configuration file
(TOML), each entry naming its class and PV prefix::

    [devices.cycler]
    class = "nanostrain.devices.cycler:EpicsCycler"
    prefix = "XF:17BM-ES{Cycler:1}"

Plans and the profile get devices from here, never by constructing them themselves.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bluesky.run_engine import call_in_bluesky_event_loop
from ophyd_async.core import PathProvider, StaticPathProvider, UUIDFilenameProvider

from .devices.alignment import make_alignment_bench
from .devices.cycler import SimCycler
from .devices.nanoprobe import make_sim_nanoprobe
from .devices.txm import SimTxm
from .devices.xrd import SimXrdDetector
from .sim.cathode import CathodeParticle
from .sim.cycler_engine import CyclerEngine
from .sim.materials import material


def detector_path_provider(detector_dir: Path) -> PathProvider:
    """File names (uuid) for detector HDF5 files in ``detector_dir``."""
    Path(detector_dir).mkdir(parents=True, exist_ok=True)
    return StaticPathProvider(UUIDFilenameProvider(), Path(detector_dir).resolve())


#: Frame shape of the simulated XRD panel: the PerkinElmer 2048 x 2048 binned 2 x 2
#: (0.01 1/A per pixel at 1.5 m and 0.1665 A: H2/H3 (003) splittings of >= 0.25 A resolve).
SIM_XRD_SHAPE = (1024, 1024)


#: The coin cell mounted on the simulated beamline from the start (material, morphology):
#: a single-crystal LiNi0.9Co0.1O2 cathode, until `mount_cell` puts another.
SIM_CELL = ("NC91", "SC")

#: Simulated seconds per wall second of the simulated cycler's clock (the ``time_scale``
#: signal; change it at any time): 10 simulated minutes per wall second, so that at
#: 200 mA/g (C/1) a cycle takes ~12 wall s and frames taken every >= 10 mAh/g (3 min,
#: 0.3 wall s, about what one frame and its live reduction cost) keep their cadence.
SIM_TIME_SCALE = 600.0


def simulated_devices(path_provider: PathProvider) -> dict[str, Any]:
    """Every simulated device of the nanostrain beamline, by name, ready for its plans.

    One coin cell (`SIM_CELL`, until `mount_cell` puts another) is cycled by ``cycler``
    on the clock `SIM_TIME_SCALE` and seen by ``xrd``, so the pattern follows the
    electrochemistry.
    """
    devices = make_alignment_bench(path_provider)
    name, morphology = SIM_CELL
    cell = CathodeParticle(material(name), morphology)
    devices["cycler"] = SimCycler(CyclerEngine(cell), time_scale=SIM_TIME_SCALE, name="cycler")
    devices["xrd"] = SimXrdDetector(path_provider, cell, monitor=devices["i0"], shape=SIM_XRD_SHAPE, name="xrd")
    devices.update(make_sim_nanoprobe(path_provider))
    devices["txm"] = SimTxm(path_provider, name="txm")
    return devices


def mount_cell(devices: Mapping[str, Any], particle: CathodeParticle) -> None:
    """Put a new coin cell (its cathode particle) on the simulated beamline: the cycler
    drives it and the XRD detector sees it from the next frame on."""
    devices["cycler"].engine.particle = particle
    devices["xrd"].set_sample(particle)


def load_config(path: Path | str) -> dict[str, Any]:
    """Read a beamline configuration file; raise a clear error if it is malformed."""
    with open(path, "rb") as handle:
        config = tomllib.load(handle)
    for name, entry in config.get("devices", {}).items():
        if "class" not in entry:
            raise ValueError(f"{path}: device {name!r} has no 'class' (module:Class).")
    return config


def real_devices(config: Mapping[str, Any], path_provider: PathProvider) -> dict[str, Any]:
    """EPICS devices listed in ``config["devices"]``: ``class``, ``prefix`` and extra
    keyword arguments; area detectors also get the ``path_provider``."""
    devices = {}
    for name, entry in config.get("devices", {}).items():
        module_name, _, class_name = entry["class"].partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        kwargs = {k: v for k, v in entry.items() if k != "class"}
        if getattr(cls, "needs_path_provider", False):
            kwargs["path_provider"] = path_provider
        devices[name] = cls(name=name, **kwargs)
    return devices


def make_devices(
    sim: bool = True,
    detector_dir: Path | str = Path("nanostrain-data") / "detectors",
    config: Mapping[str, Any] | Path | str | None = None,
    connect: bool = True,
    mock: bool = False,
) -> dict[str, Any]:
    """Build (and connect) the beamline's devices.

    sim: simulated twins (default) or the real EPICS classes named in ``config``.
    detector_dir: folder for detector HDF5 files (must be readable by the catalog server).
    connect: connect ophyd-async devices (needs a RunEngine's event loop: create the
        RunEngine first). ``mock=True`` connects real classes in ophyd-async mock mode.
    """
    path_provider = detector_path_provider(Path(detector_dir))
    if sim:
        devices = simulated_devices(path_provider)
    else:
        if config is None:
            raise ValueError("Real devices need a beamline configuration (config=path to a TOML file).")
        if not isinstance(config, Mapping):
            config = load_config(config)
        devices = real_devices(config, path_provider)
    if connect:
        connect_devices(devices, mock=mock)
    return devices


def connect_devices(devices: Mapping[str, Any], mock: bool = False, timeout: float = 10.0) -> None:
    """Connect every ophyd-async device in ``devices`` on the RunEngine's event loop;
    raise one error naming every device that failed."""
    from ophyd_async.core import Device, wait_for_connection

    coros = {name: d.connect(mock=mock, timeout=timeout) for name, d in devices.items() if isinstance(d, Device)}
    call_in_bluesky_event_loop(wait_for_connection(**coros))
