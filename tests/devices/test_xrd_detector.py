"""XRD area detectors in a RunEngine: the simulated twin (frames from the cathode
simulation) and the real PerkinElmer class against a soft areaDetector IOC over CA.

Everything the PerkinElmer class does is served by the IOC (`tests/iocs/ad_ioc.py`),
busy-record semantics included; no part runs in ophyd-async mock mode. The IOC listens
on the default CA port on 127.0.0.1: a unicast search reaches only one of several IOCs
sharing that port, so two IOC tests running at the same moment in different processes
on one machine can miss each other's PVs (sequential runs, as in CI, are unaffected).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import h5py
import numpy as np
import pyFAI
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop
from ophyd_async.core import wait_for_value
from ophyd_async.epics.adcore import ADImageMode, ADState
from ophyd_async.epics.core import stop_busy_record

from nanostrain.analysis.xrd import Integrator, fit_reflection, geometry_config, perkinelmer_geometry, poni_text
from nanostrain.beamline import connect_devices, detector_path_provider, real_devices
from nanostrain.devices.beam import SimBeamMonitor
from nanostrain.devices.xrd import CALIBRANT, PerkinElmerDetector, PerkinElmerTriggerMode, SimXrdDetector
from nanostrain.sim.cathode import CathodeParticle
from ..conftest import running_ioc

IOC_SCRIPT = Path(__file__).resolve().parents[1] / "iocs" / "ad_ioc.py"


def run_collect(RE, plan) -> list[tuple[str, dict]]:
    docs: list[tuple[str, dict]] = []
    RE(plan, lambda name, doc: docs.append((name, doc)))
    return docs


def of(docs, name: str) -> list[dict]:
    return [doc for n, doc in docs if n == name]


def frames_of(docs) -> np.ndarray:
    """The frames a run's (single) StreamResource points to, read from the HDF5 file."""
    (resource,) = of(docs, "stream_resource")
    with h5py.File(urlparse(resource["uri"]).path, "r", swmr=True) as handle:
        return handle[resource["parameters"]["dataset"]][()]


def c_from_frame(geometry, frame) -> float:
    """c = 3 d(003) from the integrated frame (A)."""
    q, intensity = Integrator(geometry, npt=500, q_range=(1.0, 2.0))(frame)
    return 3 * fit_reflection(q, intensity, (1.22, 1.46)).d[0]


def test_the_real_detector_module_does_not_import_the_simulator():
    """Importing devices/xrd (and building the real class) loads no nanostrain.sim module."""
    code = (
        "import sys;"
        "from nanostrain.devices.xrd import PerkinElmerDetector;"
        "from ophyd_async.core import StaticPathProvider, StaticFilenameProvider;"
        "PerkinElmerDetector('XF:TEST:', StaticPathProvider(StaticFilenameProvider('f'), '/tmp'), name='xrd');"
        "loaded = [m for m in sys.modules if m.startswith('nanostrain.sim')];"
        "sys.exit(str(loaded) if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------
# Simulated twin
# --------------------------------------------------------------------------------------
@pytest.fixture
def particle() -> CathodeParticle:
    return CathodeParticle("NM91", "SC")


@pytest.fixture
def sim_xrd(RE, tmp_path, particle):
    monitor = SimBeamMonitor(name="i0")
    detector = SimXrdDetector(detector_path_provider(tmp_path / "det"), particle, shape=(512, 512),
                              monitor=monitor, seed=1)
    connect_devices({"xrd": detector})
    return detector, monitor


def test_sim_count_writes_hdf5_frames_with_the_geometry_in_the_descriptor(RE, sim_xrd):
    detector, _ = sim_xrd

    docs = run_collect(RE, bp.count([detector], num=2))

    assert len(of(docs, "stream_datum")) == 2
    assert frames_of(docs).shape == (2, 512, 512)
    (descriptor,) = of(docs, "descriptor")
    assert descriptor["data_keys"]["xrd"]["shape"][-2:] == [512, 512]
    config = descriptor["configuration"]["xrd"]["data"]
    geometry = pyFAI.load(json.loads(config["xrd-geometry-pyfai_config"]))
    assert geometry.detector.shape == (512, 512)
    assert geometry.dist == pytest.approx(1.5)
    assert config["xrd-geometry-wavelength_A"] == pytest.approx(0.1665)
    assert config["xrd-geometry-distance_m"] == pytest.approx(1.5)
    assert config["xrd-sample"] == "NM91 SC"
    assert detector.geometry_config() == geometry_config(geometry)


def test_sim_frames_follow_the_particle_state(RE, sim_xrd, particle):
    detector, _ = sim_xrd
    geometry = pyFAI.load(detector.geometry_config())
    pristine = frames_of(run_collect(RE, bp.count([detector])))[0]
    for _ in range(40):  # charge at 20 mA/g for 40 x 5 min (H1 -> H2: c opens)
        particle.step(20.0, 300.0)

    charged = frames_of(run_collect(RE, bp.count([detector])))[0]

    assert c_from_frame(geometry, pristine) == pytest.approx(14.21, abs=0.005)
    assert c_from_frame(geometry, charged) == pytest.approx(particle.lattice().mean_c_A, abs=0.005)
    assert particle.lattice().mean_c_A - 14.21 > 0.05


def test_sim_beam_off_gives_dark_frames(RE, sim_xrd):
    detector, monitor = sim_xrd
    monitor.beam_on = False

    frame = frames_of(run_collect(RE, bp.count([detector])))[0]

    dark = detector.powder.dark_rate * 0.1  # default exposure 0.1 s
    assert frame.mean() == pytest.approx(dark, rel=0.01)


def test_sim_calibrant_mode_shows_ceo2_and_records_it(RE, sim_xrd):
    detector, _ = sim_xrd
    detector.set_sample(CALIBRANT)

    docs = run_collect(RE, bp.count([detector]))

    assert of(docs, "descriptor")[0]["configuration"]["xrd"]["data"]["xrd-sample"].startswith("CeO2")
    geometry = pyFAI.load(detector.geometry_config())
    q, intensity = Integrator(geometry, npt=600, q_range=(1.5, 2.8))(frames_of(docs)[0])
    d111 = 5.411651 / math.sqrt(3)
    assert fit_reflection(q, intensity, (2 * math.pi / d111 - 0.08, 2 * math.pi / d111 + 0.08)).d[0] == pytest.approx(
        d111, rel=3e-4
    )


def test_sim_set_geometry_records_a_calibration(RE, sim_xrd, tmp_path):
    detector, _ = sim_xrd
    calibrated = perkinelmer_geometry(1.48, 0.1665, binning=4, center_px=(255.2, 257.9))
    poni = tmp_path / "calib.poni"
    poni.write_text(poni_text(calibrated))
    detector.set_geometry(poni)

    docs = run_collect(RE, bp.count([detector]))

    config = of(docs, "descriptor")[0]["configuration"]["xrd"]["data"]
    assert config["xrd-geometry-distance_m"] == pytest.approx(1.48)
    assert json.loads(config["xrd-geometry-pyfai_config"]) == geometry_config(calibrated)


def test_sim_refuses_a_shape_that_does_not_match_the_geometry(tmp_path, particle):
    with pytest.raises(ValueError, match="shape"):
        SimXrdDetector(detector_path_provider(tmp_path), particle, perkinelmer_geometry(binning=4),
                       shape=(256, 256))


# --------------------------------------------------------------------------------------
# Real class against a soft IOC over Channel Access
# --------------------------------------------------------------------------------------
@pytest.fixture
def pe_ioc(tmp_path) -> str:
    """`tests/iocs/ad_ioc.py` on 127.0.0.1 with a unique prefix (128 x 128 frames)."""
    prefix = f"NSPE{secrets.token_hex(4)}:"
    with running_ioc([sys.executable, str(IOC_SCRIPT), prefix, "--binning", "16"], prefix, tmp_path / "ad_ioc.log"):
        yield prefix


@pytest.fixture
def perkinelmer(RE, pe_ioc, tmp_path):
    """A PerkinElmerDetector built the way the beamline registry builds real devices."""
    config = {"devices": {"xrd": {"class": "nanostrain.devices.xrd:PerkinElmerDetector", "prefix": pe_ioc}}}
    devices = real_devices(config, detector_path_provider(tmp_path / "det"))
    connect_devices(devices, timeout=30)  # ~100 PVs: a loaded machine takes more than the 10 s default
    return devices["xrd"]


@pytest.mark.ioc
def test_perkinelmer_count_over_ca_writes_two_frames(RE, perkinelmer):
    docs = run_collect(RE, bp.count([perkinelmer], num=2))

    (resource,) = of(docs, "stream_resource")
    assert resource["parameters"]["dataset"] == "/entry/data/data"
    assert [d["indices"] for d in of(docs, "stream_datum")] == [{"start": 0, "stop": 1}, {"start": 1, "stop": 2}]
    (descriptor,) = of(docs, "descriptor")
    assert descriptor["data_keys"]["xrd"]["shape"][-2:] == [128, 128]
    assert descriptor["data_keys"]["xrd"]["dtype_numpy"] == "<u2"
    assert descriptor["configuration"]["xrd"]["data"]["xrd-driver-trigger_mode"] == PerkinElmerTriggerMode.INTERNAL
    frames = frames_of(docs)
    assert frames.shape == (2, 128, 128) and frames.dtype == np.uint16
    assert frames.std() > 0 and not np.array_equal(frames[0], frames[1])  # powder rings + noise


@pytest.mark.ioc
def test_perkinelmer_acquire_offset_over_ca(RE, perkinelmer):
    driver = perkinelmer.driver

    def take_offset():
        yield from bps.mv(driver.acquire_time, 0.01)
        (done,) = yield from bps.wait_for([lambda: perkinelmer.acquire_offset(num_frames=3)])
        done.result()

    RE(take_offset())

    async def readings():
        signals = (driver.offset_available, driver.num_offset_frames, driver.use_offset)
        return [await signal.get_value() for signal in signals]

    assert call_in_bluesky_event_loop(readings()) == [True, 3, "Enable"]


@pytest.mark.ioc
def test_perkinelmer_stop_aborts_a_continuous_acquisition(RE, perkinelmer):
    """Acquire is a busy record: its put completes only when acquisition ends, and a
    put of 0 (ophyd-async's stop_busy_record, as in unstage) ends it."""
    driver = perkinelmer.driver

    async def start_and_stop():
        await driver.image_mode.set(ADImageMode.CONTINUOUS)
        await driver.acquire_time.set(0.01)
        await driver.acquire_period.set(0.02)
        acquiring = driver.acquire.set(True, timeout=10)
        await wait_for_value(driver.acquire, True, timeout=5)
        await asyncio.sleep(0.3)
        still_running = not acquiring.done
        await stop_busy_record(driver.acquire)
        await acquiring
        return still_running, await driver.detector_state.get_value(), await driver.array_counter.get_value()

    still_running, state, frames = call_in_bluesky_event_loop(start_and_stop())

    assert still_running
    assert state == ADState.ABORTED
    assert frames >= 3


@pytest.mark.ioc
def test_perkinelmer_records_a_poni_calibration(RE, pe_ioc, tmp_path):
    poni = tmp_path / "ceo2.poni"
    poni.write_text(poni_text(perkinelmer_geometry(1.2, 0.4520, binning=16)))
    detector = PerkinElmerDetector(pe_ioc, detector_path_provider(tmp_path / "det"), name="xrd", poni=poni)
    connect_devices({"xrd": detector})

    configuration = call_in_bluesky_event_loop(detector.read_configuration())

    assert configuration["xrd-geometry-wavelength_A"]["value"] == pytest.approx(0.4520)
    assert configuration["xrd-geometry-distance_m"]["value"] == pytest.approx(1.2)
    assert detector.geometry_config() == geometry_config(pyFAI.load(str(poni)))
