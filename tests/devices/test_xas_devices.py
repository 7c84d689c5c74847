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
from nanostrain.devices.xas import SIM_XAS_SAMPLE, EpicsIonChambers, IonChambers, SimIonChambers
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
