"""xas_scan: its points (regions in E and k, k-weighted dwell), its checks before motion,
and a run on the simulated XAS station (DCM + ion chambers) with its start document."""

from __future__ import annotations

import numpy as np
import pytest
from bluesky import RunEngine

from nanostrain.analysis.xas import ETOK_EV_A2
from nanostrain.beamline import connect_devices
from nanostrain.devices.dcm import DcmEnergy
from nanostrain.devices.xas import SimIonChambers
from nanostrain.plans import validate
from nanostrain.plans.validation import PlanArgumentError
from nanostrain.plans.xas import DEFAULT_REGIONS, region_points, validate_xas_scan, xas_scan

REGIONS = [{"space": "E", "start": -20.0, "stop": 10.0, "step": 5.0, "dwell_s": 0.2},
           {"space": "k", "start": 2.0, "stop": 4.0, "step": 1.0, "dwell_s": 0.5, "k_weight": 2.0}]


@pytest.fixture
def station():
    RunEngine({})
    dcm = DcmEnergy(name="dcm")
    chambers = SimIonChambers(dcm, name="xas_ic")
    connect_devices({"dcm": dcm, "xas_ic": chambers})
    return dcm, chambers


def test_regions_give_energies_and_k_weighted_dwell():
    energy = region_points(0, REGIONS[0], 8350.0)
    np.testing.assert_allclose(energy.energies_eV, [8330, 8335, 8340, 8345, 8350, 8355, 8360])
    np.testing.assert_allclose(energy.dwell_s, 0.2)
    k = region_points(1, REGIONS[1], 8350.0)
    np.testing.assert_allclose(k.energies_eV, 8350.0 + ETOK_EV_A2 * np.array([4.0, 9.0, 16.0]))
    np.testing.assert_allclose(k.dwell_s, 0.5 * np.array([1.0, 2.25, 4.0]))  # dwell (k / k_start)^2


def test_default_scan_reaches_the_fit_range_and_follows_in_energy(station):
    dcm, chambers = station
    points = validate_xas_scan(dcm, chambers, DEFAULT_REGIONS, 8350.0, 8333.0)
    assert np.all(np.diff(points.energies_eV) > 0) and points.energies_eV.size == 14 + 100 + 224
    assert points.energies_eV[0] == 8200.0
    assert np.sqrt((points.energies_eV[-1] - 8350.0) / ETOK_EV_A2) == pytest.approx(14.0)  # beyond k = 12.8


@pytest.mark.parametrize(("change", "message"), [
    ({"regions": [REGIONS[1], REGIONS[0]]}, r"regions\[1\] starts at"),
    ({"regions": [{**REGIONS[0], "step": 0.0}]}, r"regions\[0\]\['step'\]"),
    ({"regions": [{**REGIONS[1], "start": 0.0}]}, r"regions\[0\]\['start'\] must be > 0"),
    ({"regions": [{**REGIONS[0], "k_weight": 1.0}]}, "unknown keys"),
    ({"regions": [{"space": "q", "start": 1, "stop": 2, "step": 1, "dwell_s": 1}]}, r"regions\[0\]\['space'\]"),
    ({"regions": []}, r"len\(regions\)"),
    ({"e0_eV": 10980.0}, "regions"),  # the EXAFS would leave the DCM range
    ({"reference_edge_eV": float("nan")}, "reference_edge_eV"),
])
def test_bad_scans_are_refused_before_anything_moves(station, change, message):
    dcm, chambers = station
    kwargs = {"regions": REGIONS, **change}
    with pytest.raises(PlanArgumentError, match=message):
        validate("xas_scan", dcm, chambers, **kwargs)


def test_a_scan_records_every_point_and_what_the_analysis_needs(station):
    dcm, chambers = station
    RE = RunEngine({})
    documents = []
    RE(xas_scan(dcm, chambers, REGIONS, sample={"name": "SC-NM91"}), lambda name, doc: documents.append((name, doc)))
    (start,) = [doc for name, doc in documents if name == "start"]
    events = [doc for name, doc in documents if name == "event"]
    assert start["technique"] == "xas" and start["plan_name"] == "xas_scan"
    assert start["e0_eV"] == 8350.0 and start["reference_edge_eV"] == 8333.0
    assert start["xas_keys"] == {"energy": "dcm", "i0": "xas_ic-i0", "it": "xas_ic-it", "iref": "xas_ic-iref"}
    assert len(events) == len(start["energies_eV"]) == 10
    np.testing.assert_allclose([e["data"]["dcm"] for e in events], start["energies_eV"], atol=1e-6)
    mu = [np.log(e["data"]["xas_ic-i0"] / e["data"]["xas_ic-it"]) for e in events]
    assert mu[4] - mu[0] > 0.5  # across the Ni K edge (8330 -> 8350 eV)
    counted = [e["data"]["xas_ic-i0"] for e in events]
    assert counted[-1] == pytest.approx(4.0 * counted[-3], rel=0.01)  # k-weighted dwell (k = 4 vs 2)
