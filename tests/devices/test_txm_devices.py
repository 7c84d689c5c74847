"""TXM devices: optics formulas, the simulated microscope's physics, and the EPICS classes
over Channel Access against soft IOCs (`tests/iocs/txm_ioc.py`).

IOC coverage: the motor records (DCM Bragg, zone-plate z, camera z, rotation, sample
x/y/z) are served by caproto, the shutter and the ADAndor camera (driver, HDF5 and NDStats
plugins, built on `ad_ioc`) by pythonSoftIOC; nothing runs in ophyd-async mock mode
except `test_epics_txm_composes_its_parts_from_prefixes`. The part tests use one IOC at a
time on the test session's CA setup (loopback, a server port of the session's own: two
servers sharing a port hide each other); the whole-microscope test runs both IOCs at once,
each on a port of its own, and the client in a subprocess searching both.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import h5py
import numpy as np
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop
from ophyd_async.core import TriggerInfo

from nanostrain.analysis.txm import find_center, normalize, reconstruct
from nanostrain.beamline import connect_devices, detector_path_provider
from nanostrain.devices.txm import (
    EpicsTxm,
    FocusCalibration,
    SampleStage,
    ShutterState,
    SimTxm,
    TxmCamera,
    TxmEnergy,
    TxmShutter,
    bragg_angle_deg,
    energy_from_bragg_eV,
)
from nanostrain.sim.txm import (
    NiFoil,
    TxmImaging,
    TxmSample,
    charged_particle,
    particle_sample,
    whiteline_from_valence,
)

from ..conftest import free_server_port, run_python, running_ioc

IOC_SCRIPT = Path(__file__).resolve().parents[1] / "iocs" / "txm_ioc.py"


# ------------------------------------------------------------------ layering


def test_importing_the_txm_devices_imports_no_simulator():
    # a fresh interpreter: the EPICS classes (and the module) stand without nanostrain.sim,
    # which SimTxm imports only when one is built
    code = (
        "import sys, json; import nanostrain.devices.txm as txm; "
        "before = sorted(m for m in sys.modules if m.startswith('nanostrain.sim')); "
        "txm.SimTxm(lambda name=None: None, shape=(8, 8), pixel_size_um=0.5, name='t'); "
        "after = sorted(m for m in sys.modules if m.startswith('nanostrain.sim')); "
        "print(json.dumps([before, after]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    before, after = json.loads(result.stdout.strip().splitlines()[-1])
    assert before == [] and "nanostrain.sim.txm" in after


# ------------------------------------------------------------------ optics


def test_dcm_bragg_angle_round_trip_and_known_value():
    # Si(111) at 8333 eV (Ni K edge): theta = asin(12398.42 / (2 x 3.1356 x 8333)) = 13.725 deg
    assert bragg_angle_deg(8333.0) == pytest.approx(13.7251, abs=1e-3)
    assert energy_from_bragg_eV(bragg_angle_deg(8351.7)) == pytest.approx(8351.7, abs=1e-9)


def test_zone_plate_focus_follows_the_lens_equation():
    # f = D dr E / hc = 244 um x 30 nm x 8350 eV / 1.23984 eV um = 49.30 mm; M = 40:
    # dp/dE = (1 + 1/M) f/E, dL/dE = (1 + M)^2/M f/E
    calibration = FocusCalibration.from_zone_plate(8350.0, zone_plate_mm=1.0, detector_mm=2.0)
    focal_per_eV = 244.0 * 0.030 / 1.2398419843320026 * 1e-3  # mm/eV
    assert calibration.zone_plate_z(8350.0) == pytest.approx(1.0)
    assert calibration.detector_z(8350.0) == pytest.approx(2.0)
    assert calibration.zone_plate_z(8360.0) - 1.0 == pytest.approx(10 * 1.025 * focal_per_eV, rel=1e-9)
    assert calibration.detector_z(8340.0) - 2.0 == pytest.approx(-10 * 41**2 / 40 * focal_per_eV, rel=1e-9)
    assert 10 * 1.025 * focal_per_eV == pytest.approx(0.0605, abs=1e-4)  # 6.05 um/eV


def test_focus_calibration_fits_a_measured_table():
    table = FocusCalibration((8300.0, 8350.0, 8400.0), (0.0, 0.31, 0.6), (0.0, 12.5, 24.9))
    # least-squares lines: slopes 0.006 mm/eV and 0.249 mm/eV through the table means
    assert table.zone_plate_z(8450.0) == pytest.approx(0.3033 + 0.006 * 100, abs=1e-3)
    assert table.detector_z(8350.0) == pytest.approx(12.4667, abs=1e-3)
    with pytest.raises(ValueError, match="distinct energies"):
        FocusCalibration((8350.0, 8350.0), (0.0, 0.0), (0.0, 0.0))


# ------------------------------------------------------------------ simulated physics


def test_whiteline_follows_ni_valence():
    assert whiteline_from_valence([3.0, 3.5, 4.0]) == pytest.approx([8349.6, 8350.6, 8351.6])


def test_charged_nm91_holds_a_wider_whiteline_spread_than_nc91():
    spreads = {}
    for name in ("NC91", "NM91"):
        sample = particle_sample(charged_particle(name), (32, 32, 32), 0.16)
        spreads[name] = np.nanstd(sample.whiteline_eV)
        assert sample.mask.sum() == pytest.approx(4 / 3 * np.pi * 12.5**3, rel=0.05)  # 2 um radius
    assert spreads["NM91"] > 0.07 and spreads["NC91"] < 0.01  # eV: reaction front vs uniform


def test_sim_projections_of_a_known_phantom_reconstruct_to_it():
    # A sphere (radius 12 px) with a known attenuation per voxel, imaged through the whole
    # chain (flat-field pattern, dark offset, Poisson noise at 5e4 counts), normalised
    # and reconstructed: measured 1.8 % RMS inside r < 9 px, mean within 0.1 %.
    n = 32
    r = np.arange(n) - (n - 1) / 2
    z, y, x = np.meshgrid(r, r, r, indexing="ij")
    inside, inner = (x**2 + y**2 + z**2 <= 144.0), (x**2 + y**2 + z**2 <= 81.0)
    sample = TxmSample(edge_jump=np.where(inside, 0.03, 0.0), background=np.where(inside, 0.005 * (1 + (x > 0)), 0.0),
                       whiteline_eV=np.where(inside, 8350.0, np.nan), voxel_um=0.1)
    imaging = TxmImaging((n, n), flux=5e4, seed=3)
    angles, energy = np.linspace(0.0, 180.0, 91), 8355.0
    darks = np.stack([imaging.frame(sample, energy, 0.0, 1.0, beam=False) for _ in range(5)])
    flats = np.stack([imaging.frame(None, energy, 0.0, 1.0) for _ in range(5)])
    absorbance = normalize(np.stack([imaging.frame(sample, energy, a, 1.0) for a in angles]), flats, darks,
                           minus_log=True)
    volume = reconstruct(absorbance, angles, find_center(absorbance, angles))
    truth = sample.attenuation(energy)
    rms = np.sqrt(np.mean((volume - truth)[inner] ** 2) / np.mean(truth[inner] ** 2))
    assert rms < 0.04
    assert volume[inner].mean() == pytest.approx(truth[inner].mean(), rel=0.01)


def test_sim_frames_are_darks_flats_or_projections_as_the_beamline_state_says():
    sample = particle_sample(charged_particle("NC91"), (32, 32, 32), 0.16)
    imaging = TxmImaging((32, 32), flux=2e5, seed=0)
    dark = imaging.frame(sample, 8350.0, 0.0, 0.1, beam=False)
    flat = imaging.frame(sample, 8350.0, 0.0, 0.1, shift_px=(0.0, 1e4))  # sample out
    projection = imaging.frame(sample, 8350.0, 0.0, 0.1)
    assert dark.mean() == pytest.approx(100.0, rel=0.05)  # dark offset only
    assert flat.mean() == pytest.approx(100.0 + 2e4, rel=0.02)  # flux x exposure + dark
    transmission = (projection[16, 16] - 100.0) / (flat[16, 16] - 100.0)
    expected = np.exp(-imaging.projection(sample, 8350.0, 0.0)[16, 16])
    assert transmission == pytest.approx(expected, abs=0.03)
    assert expected < 0.85  # ~0.25 absorbance through the 4 um particle


@pytest.mark.parametrize("n", [15, 16])
def test_opposite_angles_are_mirror_projections(n):
    sample = particle_sample(charged_particle("NM91"), (n, n, n), 0.3, centre_offset_um=(0.0, 0.4, 0.9))
    imaging = TxmImaging((n, n))
    opposite = imaging.projection(sample, 8350.0, 210.0)
    np.testing.assert_allclose(opposite, sample.projections(8350.0, np.array([210.0]))[0], atol=1e-6)
    # about the axis: column n//2 - k sees column n//2 + k of the opposite projection
    axis = n // 2
    np.testing.assert_allclose(opposite[:, axis - 5 : axis + 6],
                               imaging.projection(sample, 8350.0, 30.0)[:, axis + 5 : axis - 6 : -1], atol=1e-5)
    # off the cached grid: projected exactly
    exact = sample.projections(8350.0, np.array([33.3]))[0]
    np.testing.assert_allclose(imaging.projection(sample, 8350.0, 33.3), exact, atol=1e-6)


def test_ni_foil_edge_is_the_steepest_point():
    foil = NiFoil((4, 4, 4))
    energies = np.arange(8320.0, 8346.0, 0.01)
    absorbance = np.array([foil.absorbance(e) for e in energies])
    assert energies[np.argmax(np.gradient(absorbance))] == pytest.approx(8333.0, abs=0.01)
    assert absorbance[-1] - absorbance[0] == pytest.approx(5e-4 * 8.908 * 285.0 * 0.96, rel=0.05)


# ------------------------------------------------------------------ simulated twin


@pytest.fixture
def sim_txm(RE, tmp_path):
    txm = SimTxm(detector_path_provider(tmp_path / "det"), shape=(16, 16), pixel_size_um=0.3, name="txm")
    connect_devices({"txm": txm})
    return txm


def _read(RE, device) -> dict:
    """device.read() on the RunEngine's event loop."""
    return call_in_bluesky_event_loop(device.read())


def test_sim_energy_moves_dcm_zone_plate_and_camera_together(RE, sim_txm):
    energy = sim_txm.energy
    RE(bps.mv(energy.offset_eV, 0.5))
    RE(bps.mv(energy, 8355.0))
    values = {k: v["value"] for k, v in _read(RE, energy).items()}
    assert values["txm-energy"] == pytest.approx(8355.0, abs=1e-9)
    assert values["txm-energy-bragg"] == pytest.approx(bragg_angle_deg(8354.5), abs=1e-12)
    assert values["txm-energy-zone_plate_z"] == pytest.approx(energy.calibration.zone_plate_z(8355.0))
    assert values["txm-energy-detector_z"] == pytest.approx(energy.calibration.detector_z(8355.0))


def test_sim_energy_refuses_a_move_outside_the_dcm_range(RE, sim_txm):
    before = _read(RE, sim_txm.energy)["txm-energy-bragg"]["value"]
    with pytest.raises(Exception, match="outside the DCM range"):
        RE(bps.mv(sim_txm.energy, 12000.0))
    assert _read(RE, sim_txm.energy)["txm-energy-bragg"]["value"] == before


def test_sim_camera_sees_the_defocus_when_the_zone_plate_stays_put(RE, sim_txm):
    def frame_after(plan):
        docs = []
        RE(plan, lambda name, doc: docs.append((name, doc)))
        (resource,) = [d for n, d in docs if n == "stream_resource"]
        with h5py.File(urlparse(resource["uri"]).path, "r") as handle:
            return handle["/entry/data/data"][-1].astype(float)

    sim_txm.scene.jitter_px = 0.0
    sim_txm.mount(particle_sample(charged_particle("NC91"), (16, 16, 16), 0.3))

    def shot():
        yield from bps.mv(sim_txm.shutter, ShutterState.OPEN)
        yield from bps.prepare(sim_txm.camera, TriggerInfo(livetime=0.2), wait=True)
        yield from bp.count([sim_txm.camera])

    RE(bps.mv(sim_txm.energy, 8360.0))
    sharp = frame_after(shot())
    RE(bps.mv(sim_txm.energy.zone_plate_z, sim_txm.energy.calibration.zone_plate_z(8300.0)))  # 0.36 mm off
    blurred = frame_after(shot())
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.7 * np.abs(np.diff(sharp, axis=1)).mean()


# ------------------------------------------------------------------ EPICS classes over CA


def _ioc_command(kind: str, prefix: str) -> list[str]:
    return [sys.executable, str(IOC_SCRIPT), kind, prefix]


@pytest.fixture(scope="class")
def ioc(request, tmp_path_factory):
    """The class's IOC (``kind`` class attribute) on 127.0.0.1 with a unique prefix."""
    prefix = f"NSTXM{secrets.token_hex(4)}:"
    log = tmp_path_factory.mktemp("txm_ioc") / "ioc.log"
    with running_ioc(_ioc_command(request.cls.kind, prefix), prefix, log):
        yield prefix


@pytest.mark.ioc
class TestMotorRecordsOverCA:
    """TxmEnergy, rotation and SampleStage against caproto motor records."""

    kind = "motors"

    def test_energy_moves_the_three_motor_records_to_the_calibration(self, RE, ioc):
        energy = TxmEnergy(f"{ioc}BRAGG", f"{ioc}ZPZ", f"{ioc}DETZ", name="energy")
        connect_devices({"energy": energy})
        RE(bps.mv(energy.offset_eV, -0.8))
        RE(bps.mv(energy, 8352.0))
        values = {k: v["value"] for k, v in _read(RE, energy).items()}
        assert values["energy-bragg"] == pytest.approx(bragg_angle_deg(8352.8), abs=1e-9)
        assert values["energy"] == pytest.approx(8352.0, abs=1e-6)
        assert values["energy-zone_plate_z"] == pytest.approx(energy.calibration.zone_plate_z(8352.0), abs=1e-9)
        assert values["energy-detector_z"] == pytest.approx(energy.calibration.detector_z(8352.0), abs=1e-9)

    def test_energy_outside_the_dcm_range_moves_nothing(self, RE, ioc):
        energy = TxmEnergy(f"{ioc}BRAGG", f"{ioc}ZPZ", f"{ioc}DETZ", name="energy")
        connect_devices({"energy": energy})
        before = _read(RE, energy)
        with pytest.raises(Exception, match="outside the DCM range"):
            RE(bps.mv(energy, 4000.0))
        assert _read(RE, energy)["energy-bragg"]["value"] == before["energy-bragg"]["value"]

    def test_rotation_and_sample_stage_move(self, RE, ioc):
        from ophyd_async.epics.motor import Motor

        rotation, stage = Motor(f"{ioc}ROT"), SampleStage(f"{ioc}S", out_offset_mm=2.0, name="sample")
        connect_devices({"rotation": rotation, "sample": stage})
        RE(bps.mv(rotation, 123.0, stage.x, stage.out_offset_mm, stage.y, -0.25))
        assert _read(RE, rotation)[rotation.name]["value"] == pytest.approx(123.0)
        values = {k: v["value"] for k, v in _read(RE, stage).items()}
        assert values == pytest.approx({"sample-x": 2.0, "sample-y": -0.25, "sample-z": 0.0})


@pytest.mark.ioc
class TestSoftIocOverCA:
    """TxmShutter and TxmCamera (ADAndor) against pythonSoftIOC records."""

    kind = "softioc"

    def test_shutter_opens_and_closes(self, RE, ioc):
        shutter = TxmShutter(f"{ioc}SH:", name="shutter")
        connect_devices({"shutter": shutter})
        RE(bps.mv(shutter, ShutterState.OPEN))
        assert _read(RE, shutter)["shutter-status"]["value"] == ShutterState.OPEN
        RE(bps.mv(shutter, ShutterState.CLOSED))
        assert _read(RE, shutter)["shutter-status"]["value"] == ShutterState.CLOSED

    def test_camera_writes_frames_to_hdf5_with_their_totals(self, RE, ioc, tmp_path):
        camera = TxmCamera(f"{ioc}CAM:", detector_path_provider(tmp_path / "det"), name="cam", frame_shape=(64, 64))
        connect_devices({"cam": camera})
        docs = []

        def plan():
            yield from bps.prepare(camera, TriggerInfo(livetime=0.01), wait=True)
            yield from bp.count([camera], 3)

        RE(plan(), lambda name, doc: docs.append((name, doc)))
        (resource,) = [d for n, d in docs if n == "stream_resource"]
        with h5py.File(urlparse(resource["uri"]).path, "r", swmr=True) as handle:
            frames = handle[resource["parameters"]["dataset"]][()]
        totals = [d["data"]["cam-stats-total"] for n, d in docs if n == "event"]
        assert frames.shape == (3, 64, 64) and frames.dtype == np.uint16
        assert totals == pytest.approx([float(f.sum()) for f in frames])
        assert frames.mean() == pytest.approx(100.0 + 2e5 * 0.01, rel=0.05)  # a flat field: flux x exposure + dark


def test_epics_txm_composes_its_parts_from_prefixes(RE, tmp_path):
    # mock mode: only the PV names and the composition are checked here
    txm = EpicsTxm(detector_path_provider(tmp_path), "B:BRAGG", "B:ZPZ", "B:DETZ", "B:ROT", "B:S", "B:SH:", "B:CAM:",
                   name="txm")
    connect_devices({"txm": txm}, mock=True)
    assert txm.energy.bragg.user_readback.source.endswith("B:BRAGG.RBV")
    assert txm.sample.y.user_setpoint.source.endswith("B:SY.VAL")
    assert txm.shutter.status.source.endswith("B:SH:Pos-Sts")
    assert txm.camera.stats.total.source.endswith("B:CAM:Stats1:Total_RBV")
    assert EpicsTxm.needs_path_provider and TxmCamera.needs_path_provider


WHOLE_MICROSCOPE = """
import json
import numpy as np
from bluesky import RunEngine
from nanostrain.beamline import connect_devices, detector_path_provider, real_devices
from nanostrain.plans.txm import txm_xanes_2d

p = {prefix!r}
config = {{"devices": {{"txm": {{
    "class": "nanostrain.devices.txm:EpicsTxm", "bragg_prefix": p + "BRAGG", "zone_plate_prefix": p + "ZPZ",
    "detector_prefix": p + "DETZ", "rotation_prefix": p + "ROT", "sample_prefix": p + "S",
    "shutter_prefix": p + "SH:", "camera_prefix": p + "CAM:", "frame_shape": [64, 64]}}}}}}
RE = RunEngine({{}})
devices = real_devices(config, detector_path_provider({folder!r}))
connect_devices(devices)
txm = devices["txm"]
docs = []
plan = txm_xanes_2d(txm, np.arange(8346.0, 8353.0), exposure_s=0.01, n_flats=2, n_darks=2)  # MIN_ENERGIES
RE(plan, lambda n, d: docs.append((n, d)))
events = [d["data"] for n, d in docs if n == "event"]
print(json.dumps({{
    "frame_types": [e["txm-frame_type"] for e in events],
    "energies": [e["txm-energy"] for e in events],
    "zone_plate": [e["txm-energy-zone_plate_z"] for e in events],
    "expected_zone_plate": [txm.energy.calibration.zone_plate_z(e["txm-energy"]) for e in events],
    "sample_x": [e["txm-sample-x"] for e in events],
    "shutter": [e["txm-shutter-status"] for e in events],
    "totals": [e["txm-camera-stats-total"] for e in events],
    "uri": [d["uri"] for n, d in docs if n == "stream_resource"],
}}))
"""


@pytest.mark.ioc
@pytest.mark.slow
def test_txm_xanes_2d_runs_on_the_epics_microscope(tmp_path, monkeypatch):
    """The real plan on `EpicsTxm` built by the beamline registry, both IOCs on ports of
    their own (the client in another process: a CA client keeps its address list)."""
    prefix = f"NSTXM{secrets.token_hex(4)}:"
    ports = {kind: free_server_port() for kind in ("motors", "softioc")}
    with contextlib.ExitStack() as iocs:
        for kind, port in ports.items():
            monkeypatch.setenv("EPICS_CA_SERVER_PORT", str(port))  # what the IOC subprocess inherits
            iocs.enter_context(running_ioc(_ioc_command(kind, prefix), prefix, tmp_path / f"{kind}.log"))
        monkeypatch.undo()
        client_env = {"EPICS_CA_ADDR_LIST": " ".join(f"127.0.0.1:{p}" for p in ports.values())}
        result = run_python(WHOLE_MICROSCOPE.format(prefix=prefix, folder=str(tmp_path / "det")), env=client_env,
                            timeout=240)
    run = json.loads(result.stdout.strip().splitlines()[-1])
    assert run["frame_types"] == ["dark"] * 2 + (["flat"] * 2 + ["projection"]) * 7
    assert run["shutter"][:2] == ["Not Open"] * 2 and set(run["shutter"][2:]) == {"Open"}
    assert run["sample_x"][2:4] == [0.5, 0.5] and run["sample_x"][4] == 0.0  # out for flats, back in
    projections = [e for e, kind in zip(run["energies"], run["frame_types"], strict=True) if kind == "projection"]
    assert projections == pytest.approx(list(np.arange(8346.0, 8353.0)), abs=1e-6)
    # the zone plate follows the energy from the first energy move on (darks come before it)
    assert run["zone_plate"][2:] == pytest.approx(run["expected_zone_plate"][2:], abs=1e-9)
    assert all(total > 0 for total in run["totals"][2:])
    with h5py.File(urlparse(run["uri"][0]).path, "r") as handle:
        assert handle["/entry/data/data"].shape == (len(run["frame_types"]), 64, 64)
