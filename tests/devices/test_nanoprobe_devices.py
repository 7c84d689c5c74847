"""Nanoprobe devices: the EPICS classes over Channel Access against soft IOCs on 127.0.0.1
(`tests/iocs/nanoprobe_ioc.py`: caproto motor records; pythonSoftIOC XRF counter, ion
chamber and Merlin/Eiger areaDetector ports writing HDF5), and the simulated twins.

Coverage: every EPICS class is connected and driven over CA. The Eiger's external
trigger modes (edge, level), which the soft IOC does not emulate, are checked in
ophyd-async mock mode (the PVs written), as is the limit logic of the twins.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop
from bluesky.utils import FailedStatus
from ophyd_async.core import DetectorTrigger
from ophyd_async.epics.admerlin import MerlinDriverIO

from nanostrain.analysis.sxdm_geometry import SxdmGeometry, bragg_peak_position, q_from_d_tilts
from nanostrain.beamline import connect_devices, detector_path_provider, real_devices
from nanostrain.callbacks.frames import resource_path
from nanostrain.devices.nanoprobe import (
    EigerDriverIO,
    EigerPixelDetector,
    EigerTriggerMode,
    IonChamber,
    MerlinPixelDetector,
    NanoprobeScanner,
    SimAxisLimitError,
    Trajectory,
    XrfRoiCounter,
    make_sim_nanoprobe,
)
from nanostrain.plans.sxdm import check_axis_limits
from nanostrain.plans.validation import PlanArgumentError
from nanostrain.sim.cathode import CathodeParticle
from nanostrain.sim.nanoprobe import NanoprobeSimulation, nanoprobe_geometry, project_particle

from ..conftest import running_ioc

IOC_SCRIPT = Path(__file__).resolve().parents[1] / "iocs" / "nanoprobe_ioc.py"
D_A = 4.7
THETA_XZ = 0.02
XRF_RATE = 2500.0
FLUX = 3.2e9


def start_ioc(server: str, log_dir: Path, *args: str):
    """Start one of the IOCs with a unique prefix; yield the prefix, stop it afterwards (it
    inherits the session's loopback CA setup, tests/conftest.py, and logs to a file)."""
    prefix = f"NSNP{secrets.token_hex(4)}:"
    with running_ioc([sys.executable, str(IOC_SCRIPT), server, prefix, *args], prefix, log_dir / f"{server}.log"):
        yield prefix


def value(signal):
    return call_in_bluesky_event_loop(signal.get_value())


# --------------------------------------------------------------------------------------
# Motor records (caproto). One IOC at a time: each class-scoped IOC fixture ends with the
# class that uses it
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="class")
def motors_prefix(tmp_path_factory):
    yield from start_ioc("motors", tmp_path_factory.mktemp("motors"))


@pytest.fixture(scope="class")
def softioc_prefix(tmp_path_factory):
    yield from start_ioc("softioc", tmp_path_factory.mktemp("softioc"), "--flux", str(FLUX),
                         "--xrf-rate", str(XRF_RATE), "--d-A", str(D_A), "--theta-xz", str(THETA_XZ))


@pytest.mark.ioc
class TestScannerOverCA:
    @pytest.fixture
    def scanner(self, RE, motors_prefix):
        config = {"devices": {
            "np_stage": {"class": "nanostrain.devices.nanoprobe:NanoprobeScanner", "prefix": motors_prefix},
            "np_theta": {"class": "ophyd_async.epics.motor:Motor", "prefix": motors_prefix + "TH"},
        }}
        devices = real_devices(config, detector_path_provider(Path("/tmp")))
        connect_devices(devices)
        return devices["np_stage"], devices["np_theta"]

    def test_axes_move_and_read_back_over_ca(self, RE, scanner):
        stage, theta = scanner
        RE(bps.mv(stage.x, 1.25, stage.y, -0.5, theta, 6.3))
        assert (value(stage.x.user_readback), value(stage.y.user_readback)) == (1.25, -0.5)
        assert value(theta.user_readback) == pytest.approx(6.3)
        reading = call_in_bluesky_event_loop(stage.read())
        assert reading["np_stage-x"]["value"] == 1.25 and reading["np_stage-z"]["value"] == 0.0

    def test_plan_limit_check_reads_the_records_soft_limits(self, RE, scanner):
        stage, theta = scanner
        RE(check_axis_limits([(stage.x, -49.0, 49.0), (theta, -4.0, 59.0)]))  # inside: passes
        with pytest.raises(PlanArgumentError, match="np_stage-y.*soft limits"):
            RE(check_axis_limits([(stage.y, -10.0, 50.5)]))
        with pytest.raises(PlanArgumentError, match="maximum speed"):
            RE(check_axis_limits([], [(stage.x, 2000.0)]))  # VMAX = 1000 um/s


# --------------------------------------------------------------------------------------
# Plain records and areaDetector ports (pythonSoftIOC)
# --------------------------------------------------------------------------------------
@pytest.mark.ioc
class TestDetectorsOverCA:
    @pytest.fixture
    def geometry(self) -> SxdmGeometry:
        return nanoprobe_geometry(c_A=3 * D_A)  # the IOC's detector

    @pytest.fixture
    def detectors(self, RE, softioc_prefix, geometry, tmp_path):
        fields = {"energy_eV": geometry.energy_eV, "distance_m": geometry.distance_m, "pixel_m": geometry.pixel_m,
                  "center_px": list(geometry.center_px), "two_theta_deg": geometry.two_theta_deg}
        config = {"devices": {
            "merlin": {"class": "nanostrain.devices.nanoprobe:MerlinPixelDetector",
                       "prefix": softioc_prefix + "MERLIN:", "geometry": fields},
            "eiger": {"class": "nanostrain.devices.nanoprobe:EigerPixelDetector",
                      "prefix": softioc_prefix + "EIGER:", "geometry": fields},
            "np_xrf": {"class": "nanostrain.devices.nanoprobe:XrfRoiCounter", "prefix": softioc_prefix + "XRF:"},
            "np_i0": {"class": "nanostrain.devices.nanoprobe:IonChamber", "prefix": softioc_prefix + "I0:"},
        }}
        devices = real_devices(config, detector_path_provider(tmp_path / "det"))
        connect_devices(devices)
        return devices

    def test_xrf_counter_acquires_for_its_time_and_reads_the_roi_sum(self, RE, detectors):
        xrf = detectors["np_xrf"]
        RE(bps.mv(xrf.acquire_time, 0.2))
        docs = []
        RE(bp.count([xrf, detectors["np_i0"]]), lambda name, doc: docs.append((name, doc)))
        (event,) = [doc for name, doc in docs if name == "event"]
        assert event["data"]["np_xrf-counts"] == pytest.approx(XRF_RATE * 0.2)
        assert event["data"]["np_i0-flux"] == pytest.approx(FLUX)

    @pytest.mark.parametrize("name, trigger_mode", [("merlin", "Internal"), ("eiger", EigerTriggerMode.INTERNAL_SERIES)])
    def test_pixel_detector_writes_hdf5_frames_of_the_bragg_peak(self, RE, detectors, geometry, name, trigger_mode):
        detector = detectors[name]
        docs = []
        RE(bps.mv(detector.driver.acquire_time, 0.05))
        RE(bp.count([detector], num=3), lambda n, doc: docs.append((n, doc)))
        (resource,) = [doc for n, doc in docs if n == "stream_resource"]
        descriptor = [doc for n, doc in docs if n == "descriptor"][0]
        assert descriptor["data_keys"][name]["shape"][-2:] == [64, 64]
        config = descriptor["configuration"][name]["data"]
        assert config[f"{name}-geometry-two_theta_deg"] == pytest.approx(geometry.two_theta_deg)
        assert value(detector.driver.trigger_mode) == trigger_mode
        with h5py.File(resource_path(resource), "r", swmr=True) as handle:
            frames = handle[resource["parameters"]["dataset"]][()]
        assert frames.shape == (3, 64, 64)
        # the IOC shows the crystal at its Bragg angle: the peak sits where the geometry puts Q
        _, row, col = bragg_peak_position(geometry, q_from_d_tilts(D_A, 0.0, THETA_XZ))
        rows, cols = np.indices((64, 64))
        signal = frames[-1].astype(float) - np.median(frames[-1])
        assert np.sum(signal * rows) / signal.sum() == pytest.approx(row, abs=0.3)
        assert np.sum(signal * cols) / signal.sum() == pytest.approx(col, abs=0.3)
        assert value(detector.stats.total) == frames[-1].sum()  # NDStats saw the last frame
        assert detector.sxdm_geometry() == geometry


# --------------------------------------------------------------------------------------
# Mock mode (the IOC does not emulate external triggers) and simulated twins
# --------------------------------------------------------------------------------------
def test_eiger_external_triggers_write_the_adeiger_modes_in_mock_mode(RE, tmp_path):
    eiger = EigerPixelDetector("MOCK:EIGER:", detector_path_provider(tmp_path), name="eiger")
    connect_devices({"eiger": eiger}, mock=True)
    trigger_logic = eiger._trigger_logic
    call_in_bluesky_event_loop(trigger_logic.prepare_edge(num=7, livetime=0.02))
    assert value(eiger.driver.trigger_mode) == EigerTriggerMode.EXTERNAL_SERIES
    assert (value(eiger.driver.num_triggers), value(eiger.driver.num_images)) == (7, 1)
    assert value(eiger.driver.acquire_time) == pytest.approx(0.02)
    call_in_bluesky_event_loop(trigger_logic.prepare_level(num=3))
    assert value(eiger.driver.trigger_mode) == EigerTriggerMode.EXTERNAL_ENABLE
    assert value(eiger.driver.num_triggers) == 3
    assert {DetectorTrigger.EXTERNAL_EDGE, DetectorTrigger.EXTERNAL_LEVEL} <= eiger._supported_triggers


def test_real_classes_import_and_build_without_the_simulator(tmp_path):
    code = f"""
import sys
from pathlib import Path
from ophyd_async.core import StaticFilenameProvider, StaticPathProvider
from nanostrain.devices import nanoprobe
paths = StaticPathProvider(StaticFilenameProvider("f"), Path({str(tmp_path)!r}))
geometry = {{"energy_eV": 12000.0, "distance_m": 0.5, "pixel_m": 55e-6, "center_px": [31.5, 31.5], "two_theta_deg": 12.0}}
nanoprobe.MerlinPixelDetector("X:", paths, geometry, name="merlin")
nanoprobe.EigerPixelDetector("Y:", paths, geometry, name="eiger")
nanoprobe.NanoprobeScanner("Z:", name="stage"); nanoprobe.XrfRoiCounter("W:"); nanoprobe.IonChamber("V:")
sim = sorted(m for m in sys.modules if m.startswith("nanostrain.sim"))
sys.exit("imported " + ", ".join(sim) if sim else 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("cls, name, driver_type, extra_config", [
    (MerlinPixelDetector, "merlin", MerlinDriverIO, ()),
    (EigerPixelDetector, "eiger", EigerDriverIO, ("eiger-driver-trigger_mode",)),
])
def test_merlin_and_eiger_are_wired_alike_from_their_suffixes(RE, tmp_path, cls, name, driver_type, extra_config):
    geometry = nanoprobe_geometry()
    detector = cls("MOCK:DET:", detector_path_provider(tmp_path), geometry.to_metadata(), name=name,
                   driver_suffix="CAM:", hdf_suffix="H5:", stats_suffix="ST:")
    connect_devices({"det": detector}, mock=True)
    assert isinstance(detector.driver, driver_type)
    assert "://MOCK:DET:CAM:Acquire" in detector.driver.acquire.source
    assert "://MOCK:DET:ST:Total_RBV" in detector.stats.total.source
    assert "://MOCK:DET:H5:FilePath" in detector.hdf.file_path.source
    assert detector.sxdm_geometry() == geometry
    configuration = call_in_bluesky_event_loop(detector.read_configuration())
    assert configuration[f"{detector.name}-geometry-energy_eV"]["value"] == 12000.0
    assert all(key in configuration for key in extra_config)


def test_real_and_simulated_classes_share_signal_names(RE, tmp_path):
    real = NanoprobeScanner("MOCK:NP:", name="np_stage")
    xrf, i0 = XrfRoiCounter("MOCK:XRF:", name="np_xrf"), IonChamber("MOCK:I0:", name="np_i0")
    connect_devices({"a": real, "b": xrf, "c": i0}, mock=True)
    sim = make_sim_nanoprobe(detector_path_provider(tmp_path))
    connect_devices(sim)
    for axis in ("x", "y", "z"):
        for signal in ("user_readback", "user_setpoint", "velocity", "max_velocity", "low_limit_travel",
                       "high_limit_travel", "motor_done_move"):
            assert hasattr(getattr(sim["np_stage"], axis), signal) and hasattr(getattr(real, axis), signal)
    assert set(call_in_bluesky_event_loop(sim["np_xrf"].read())) == set(call_in_bluesky_event_loop(xrf.read()))
    assert hasattr(sim["np_i0"], "flux") and hasattr(i0, "flux")
    assert hasattr(sim["merlin"], "stats") and callable(sim["merlin"].sxdm_geometry)


def test_sim_axis_refuses_moves_beyond_its_limits_and_records_trajectories(RE, tmp_path):
    stage = make_sim_nanoprobe(detector_path_provider(tmp_path))["np_stage"]
    connect_devices({"s": stage})
    RE(bps.mv(stage.x.velocity, 20.0))
    RE(bps.mv(stage.x, 2.0))
    assert stage.x.trajectory == Trajectory(0.0, 2.0, 20.0, 1)
    assert stage.x.trajectory.position(0.05) == pytest.approx(1.0)  # 20 um/s for 50 ms
    assert stage.x.trajectory.position(1.0) == 2.0  # arrived
    with pytest.raises(FailedStatus) as info:
        RE(bps.mv(stage.x, 60.0))
    assert isinstance(info.value.__cause__, SimAxisLimitError)
    assert value(stage.x.user_readback) == 2.0


def test_sim_detector_frames_follow_the_stage_and_the_flux(RE, tmp_path):
    simulation = NanoprobeSimulation(seed=0)
    devices = make_sim_nanoprobe(detector_path_provider(tmp_path), simulation)
    connect_devices(devices)
    particle = CathodeParticle("NC91", "SC", radius_um=0.5)
    simulation.mount(project_particle(particle, 0.05))
    simulation.point_detector_at(particle.lattice().mean_c_A)
    detector, stage, xrf = devices["merlin"], devices["np_stage"], devices["np_xrf"]
    RE(bps.mv(devices["np_theta"], detector.sxdm_geometry().two_theta_deg / 2))  # at the Bragg angle
    totals = {}
    for label, x_um, beam_on in (("on", 0.0, True), ("off particle", 3.0, True), ("beam off", 0.0, False)):
        devices["np_i0"].beam_on = beam_on
        docs = []
        RE(bps.mv(stage.x, x_um))
        RE(bp.count([detector, xrf]), lambda n, d: docs.append((n, d)))
        totals[label] = (value(detector.stats.total), [d for n, d in docs if n == "event"][0]["data"]["np_xrf-counts"])
    assert totals["on"][0] > 10 * totals["off particle"][0]  # the Bragg peak only on the particle
    assert totals["on"][1] > 10 * totals["off particle"][1]  # fluorescence of its footprint
    assert totals["beam off"] == (0.0, 0.0)
