"""XAS station devices: the DCM energy and the ion chambers, simulated twins and the EPICS
classes over Channel Access against a soft IOC (`tests/iocs/xas_ioc.py`: a caproto motor
record for the Bragg axis and the counter PVs, whose counts follow the Bragg readback)."""

from __future__ import annotations

import json
import math
import secrets
import subprocess
import sys
from pathlib import Path

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop

from nanostrain.beamline import connect_devices
from nanostrain.devices.dcm import DcmEnergy, bragg_angle_deg
from nanostrain.devices.xas import SIM_XAS_SAMPLE, EpicsIonChambers, IonChambers, SimIonChambers, XasFlySampler
from nanostrain.schema.sample import SampleRecord
from nanostrain.sim.xas_model import electrode_specimen, ni_foil_absorbance

from ..conftest import running_ioc

IOC_SCRIPT = Path(__file__).resolve().parents[1] / "iocs" / "xas_ioc.py"


def _read(RE, device):
    return call_in_bluesky_event_loop(device.read())


def test_importing_the_xas_devices_imports_no_simulator():
    code = (
        "import sys, json; import nanostrain.devices.xas as xas, nanostrain.devices.dcm as dcm; "
        "before = sorted(m for m in sys.modules if m.startswith('nanostrain.sim')); "
        "xas.SimIonChambers(dcm.DcmEnergy(name='dcm'), name='ic'); "
        "after = sorted(m for m in sys.modules if m.startswith('nanostrain.sim')); "
        "print(json.dumps([before, after]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    before, after = json.loads(result.stdout.strip().splitlines()[-1])
    assert before == [] and "nanostrain.sim.xas_model" in after


@pytest.fixture
def sim_station(RE):
    dcm = DcmEnergy(name="dcm")
    chambers = SimIonChambers(dcm, flux=1e12, dcm_offset_eV=0.7, name="ic")
    connect_devices({"dcm": dcm, "ic": chambers})
    return dcm, chambers


def test_sim_chambers_count_through_the_specimen_at_the_true_energy(RE, sim_station):
    # Beer-Lambert with the simulated efficiencies: ln(0.5 I0 / (0.1 It)) = mu(E + offset),
    # Poisson noise at 5e10 - 1e11 counts: < 1e-4 in mu
    dcm, chambers = sim_station
    assert isinstance(chambers, IonChambers)
    RE(bps.mv(dcm, 8400.0))
    RE(bps.trigger(chambers, wait=True))
    values = {k: v["value"] for k, v in _read(RE, chambers).items()}
    true_energy = 8400.7
    mu = electrode_specimen(SIM_XAS_SAMPLE).absorbance(np.array([true_energy]))[0]
    assert math.log(5.0 * values["ic-i0"] / values["ic-it"]) == pytest.approx(mu, abs=1e-4)
    assert math.log(values["ic-it"] / values["ic-iref"]) == pytest.approx(ni_foil_absorbance(true_energy), abs=1e-4)


def test_dcm_refuses_an_energy_outside_its_range(RE, sim_station):
    dcm, _ = sim_station
    before = _read(RE, dcm)["dcm-bragg"]["value"]
    with pytest.raises(Exception, match="outside the DCM range"):
        RE(bps.mv(dcm, 12000.0))
    assert _read(RE, dcm)["dcm-bragg"]["value"] == before


def test_mounting_a_sample_changes_what_the_chambers_see(RE, sim_station):
    _, chambers = sim_station
    charged = SampleRecord(name="charged", material="NC91", morphology="SC", charge_V=4.5, current_mA_g=20.0)
    RE(bps.mv(chambers.mounted_sample, charged.to_json()))
    assert chambers.specimen.mean_valence > 3.7 and chambers.sample_record == charged
    with pytest.raises(Exception, match="cathode electrode"):
        RE(bps.mv(chambers.mounted_sample, SampleRecord(name="CeO2", calibrant="CeO2").to_json()))


@pytest.fixture(scope="module")
def ioc(tmp_path_factory):
    prefix = f"NSXAS{secrets.token_hex(4)}:"
    with running_ioc([sys.executable, str(IOC_SCRIPT), prefix], prefix,
                     tmp_path_factory.mktemp("xas_ioc") / "ioc.log"):
        yield prefix


@pytest.mark.ioc
def test_epics_dcm_and_ion_chambers_measure_the_specimen_over_ca(RE, ioc):
    dcm = DcmEnergy(f"{ioc}BRAGG", name="dcm")
    chambers = EpicsIonChambers(f"{ioc}IC:", name="ic")
    connect_devices({"dcm": dcm, "ic": chambers})
    assert isinstance(chambers, IonChambers)
    RE(bps.mv(dcm.offset_eV, 0.5, chambers.count_time, 0.05))
    RE(bps.mv(dcm, 8420.0))
    assert _read(RE, dcm)["dcm-bragg"]["value"] == pytest.approx(bragg_angle_deg(8419.5), abs=1e-6)
    RE(bps.trigger(chambers, wait=True))
    values = {k: v["value"] for k, v in _read(RE, chambers).items()}
    # the IOC counts 1e9 photons/s for 0.05 s at the Bragg readback's energy, 8419.5 eV
    assert values["ic-i0"] == pytest.approx(0.1 * 1e9 * 0.05)
    mu = electrode_specimen(SIM_XAS_SAMPLE).absorbance(np.array([8419.5]))[0]
    assert math.log(5.0 * values["ic-i0"] / values["ic-it"]) == pytest.approx(mu, abs=1e-9)
    assert math.log(values["ic-it"] / values["ic-iref"]) == pytest.approx(ni_foil_absorbance(8419.5), abs=1e-9)


def _swept_mu(start_eV: float, end_eV: float) -> tuple[float, float]:
    """-ln <exp(-mu)> of the electrode and of the foil over a constant-speed sweep (the
    transmissions averaged, 64 nodes)."""
    energies = np.linspace(start_eV, end_eV, 64) if start_eV != end_eV else np.array([start_eV])
    sample = np.exp(-electrode_specimen(SIM_XAS_SAMPLE).absorbance(energies))
    foil = np.exp(-np.array([ni_foil_absorbance(e) for e in energies]))
    return -math.log(sample.mean()), -math.log((sample * foil).mean() / sample.mean())


def _fly(RE, dcm, sampler, start_eV, stop_eV, velocity_eV_s, interval_s):
    """Fly ``dcm`` over start-stop, sampling back to back; the rows of the samples."""
    from nanostrain.devices.dcm import EnergyFlyInfo

    rows = []

    def plan():
        yield from bps.open_run()
        yield from bps.mv(sampler.chambers.count_time, interval_s)
        yield from bps.prepare(dcm, EnergyFlyInfo(start_eV, stop_eV, velocity_eV_s), wait=True)
        yield from bps.kickoff(dcm, wait=True)
        end = -math.inf
        while end < stop_eV:
            yield from bps.trigger(sampler, wait=True)
            reading = yield from bps.read(sampler)
            rows.append({key.split("-", 1)[1]: value["value"] for key, value in reading.items()})
            end = rows[-1]["energy_end"]
        yield from bps.complete(dcm, wait=True)
        yield from bps.close_run()

    RE(plan())
    return rows


def test_trapezoid_moves_at_speed_between_ramps():
    from nanostrain.devices.dcm import trapezoid_position

    # 10 units at 2 units/s with 1 s ramps: 1 unit per ramp, 4 s at speed, 6 s in all
    assert trapezoid_position(0.5, 0.0, 10.0, 2.0, 1.0) == (pytest.approx(0.25), pytest.approx(6.0))
    assert trapezoid_position(3.0, 0.0, 10.0, 2.0, 1.0)[0] == pytest.approx(5.0)
    assert trapezoid_position(7.0, 10.0, 0.0, 2.0, 1.0)[0] == pytest.approx(0.0)
    # too short to reach speed: a triangle of 2 x sqrt(d / a) s
    assert trapezoid_position(0.0, 0.0, 0.5, 2.0, 1.0)[1] == pytest.approx(1.0)


def test_sim_chambers_integrate_over_the_energies_swept_during_a_count(RE):
    # a 4 eV/s sweep over the edge, 0.1 s counts: each sample spans ~0.4 eV; its counts are
    # the transmissions averaged over the span the sampler records (the twin reports the
    # energies of its count's gate: 8 Gauss-Legendre nodes against a 64-point mean), within
    # Poisson noise (~1e-5 at 1e12 photons/s)
    dcm = DcmEnergy(name="dcm")
    chambers = SimIonChambers(dcm, flux=1e12, name="ic")
    sampler = XasFlySampler(dcm, chambers, name="fly")
    connect_devices({"dcm": dcm, "ic": chambers, "fly": sampler})
    rows = _fly(RE, dcm, sampler, 8340.0, 8346.0, 4.0, 0.1)
    assert len(rows) >= 10
    starts, mids, ends = (np.array([row[key] for row in rows]) for key in ("energy_start", "energy", "energy_end"))
    assert np.all(np.diff(mids) > 0) and np.all(ends > starts)
    assert np.median(ends - starts) == pytest.approx(0.4, rel=0.25)
    # the last sample runs into the deceleration (not a constant-speed sweep): left out
    deviations = np.array([[math.log(5.0 * row["i0"] / row["it"]), math.log(row["it"] / row["iref"])]
                           - np.array(_swept_mu(row["energy_start"], row["energy_end"])) for row in rows[:-1]])
    assert np.median(np.abs(deviations)) < 1e-4 and np.max(np.abs(deviations)) < 5e-4
    # the Bragg motor flew at constant angular speed and the DCM ends at rest, still
    assert call_in_bluesky_event_loop(dcm.readback.get_value()) > 8346.0
    assert not chambers.realtime


@pytest.mark.ioc
def test_epics_dcm_flies_at_its_velo_and_the_counter_integrates_the_sweep_over_ca(RE, ioc):
    dcm = DcmEnergy(f"{ioc}BRAGG", name="dcm")
    chambers = EpicsIonChambers(f"{ioc}IC:", name="ic")
    sampler = XasFlySampler(dcm, chambers, name="fly")
    connect_devices({"dcm": dcm, "ic": chambers, "fly": sampler})
    RE(bps.mv(dcm.offset_eV, 0.0))
    RE(bps.mv(dcm, 8330.0))
    rows = _fly(RE, dcm, sampler, 8335.0, 8345.0, 5.0, 0.1)
    mids = np.array([row["energy"] for row in rows])
    widths = np.array([row["energy_end"] - row["energy_start"] for row in rows])
    assert np.all(np.diff(mids) > 0) and np.median(widths) == pytest.approx(0.5, rel=0.3)
    # the motor record flew at the speed prepare wrote to .VELO (5 eV/s at ~8340 eV)
    velo = call_in_bluesky_event_loop(dcm.bragg.velocity.get_value())
    assert velo == pytest.approx(abs(bragg_angle_deg(8345.0) - bragg_angle_deg(8335.0)) / 2.0, rel=1e-6)
    # the counter's integral over the readback's ticks against the interval the sampler
    # recorded: they read the same .RBV at slightly different moments (< 0.05 eV at 5 eV/s)
    deviations = [math.log(5.0 * row["i0"] / row["it"]) - _swept_mu(row["energy_start"], row["energy_end"])[0]
                  for row in rows]
    assert np.median(np.abs(deviations)) < 0.01 and np.max(np.abs(deviations)) < 0.05
