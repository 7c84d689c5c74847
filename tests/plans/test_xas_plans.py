"""xas_scan and xas_fly_scan: its points (regions in E and k, k-weighted dwell), its checks before motion,
and a run on the simulated XAS station (DCM + ion chambers) with its start document."""

from __future__ import annotations

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.preprocessors import plan_mutator
from bluesky.run_engine import call_in_bluesky_event_loop
from bluesky.utils import Msg, RunEngineInterrupted

from nanostrain.analysis.xas import ETOK_EV_A2
from nanostrain.beamline import connect_devices
from nanostrain.devices.dcm import DcmEnergy
from nanostrain.devices.xas import SimIonChambers, XasFlySampler
from nanostrain.plans import validate
from nanostrain.plans.validation import PlanArgumentError
from nanostrain.plans.xas import (
    DEFAULT_FLY_SEGMENTS,
    DEFAULT_REGIONS,
    MAX_EDGE_SAMPLE_EV,
    region_points,
    validate_xas_fly_scan,
    validate_xas_scan,
    xas_fly_scan,
    xas_scan,
)

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


FLY_SEGMENTS = [{"space": "E", "start": -30.0, "stop": -20.0, "velocity_eV_s": 10.0},
                {"space": "E", "start": -20.0, "stop": 5.0, "velocity_eV_s": 4.0},
                {"space": "k", "start": 1.2, "stop": 2.0, "velocity_eV_s": 5.0}]


@pytest.fixture
def fly_station(station):
    dcm, chambers = station
    sampler = XasFlySampler(dcm, chambers, name="xas_fly")
    connect_devices({"xas_fly": sampler})
    return dcm, sampler


def test_fly_segments_become_absolute_energies_and_the_default_reaches_the_fit_range(fly_station):
    dcm, sampler = fly_station
    parts = validate_xas_fly_scan(dcm, sampler, FLY_SEGMENTS, 0.05, 8350.0, 8333.0)
    assert [(p.start_eV, p.stop_eV, p.velocity_eV_s) for p in parts[:2]] == [(8320.0, 8330.0, 10.0),
                                                                             (8330.0, 8355.0, 4.0)]
    assert parts[2].stop_eV == pytest.approx(8350.0 + ETOK_EV_A2 * 4.0)
    default = validate_xas_fly_scan(dcm, sampler, DEFAULT_FLY_SEGMENTS, 0.1, 8350.0, 8333.0)
    assert default[0].start_eV == 8200.0 and np.sqrt((default[-1].stop_eV - 8350.0) / ETOK_EV_A2) > 14.0 - 1e-4
    widths = [p.velocity_eV_s * 0.1 for p in default]
    assert widths[1] <= MAX_EDGE_SAMPLE_EV  # 0.2 eV a sample across the edge


@pytest.mark.parametrize(("change", "message"), [
    ({"segments": [{"space": "E", "start": -30.0, "stop": 30.0, "velocity_eV_s": 20.0}]}, "crosses the edge"),
    ({"segments": [{"space": "k", "start": 3.0, "stop": 12.0, "velocity_eV_s": 100.0}], "interval_s": 0.1},
     r"1/A at k = 3.00"),
    ({"segments": [{"space": "E", "start": -300.0, "stop": -100.0, "velocity_eV_s": 200.0}]}, "velocity_eV_s"),
    ({"segments": [FLY_SEGMENTS[1], FLY_SEGMENTS[0]]}, r"segments\[1\] starts at"),
    ({"segments": [{**FLY_SEGMENTS[0], "step": 1.0}]}, "unknown keys"),
    ({"segments": [{"space": "E", "start": -30.0, "stop": -29.9, "velocity_eV_s": 10.0}]}, "less than two samples"),
    ({"interval_s": 0.001}, "interval_s"),
    ({"e0_eV": 10990.0}, "segments"),  # the last segment would leave the DCM range
    ({"segments": []}, r"len\(segments\)"),
])
def test_bad_fly_scans_are_refused_before_anything_moves(fly_station, change, message):
    dcm, sampler = fly_station
    kwargs = {"segments": FLY_SEGMENTS, "interval_s": 0.05, **change}
    with pytest.raises(PlanArgumentError, match=message):
        validate("xas_fly_scan", dcm, sampler, **kwargs)
    assert call_in_bluesky_event_loop(dcm.readback.get_value()) == pytest.approx(8350.0)


def test_a_fly_scan_records_interval_energies_and_what_replay_needs(fly_station):
    dcm, sampler = fly_station
    RE = RunEngine({})
    documents = []
    RE(xas_fly_scan(dcm, sampler, FLY_SEGMENTS[:2], interval_s=0.05, sample={"name": "SC-NM91"}),
       lambda name, doc: documents.append((name, doc)))
    (start,) = [doc for name, doc in documents if name == "start"]
    events = [doc["data"] for name, doc in documents if name == "event"]
    assert start["technique"] == "xas" and start["plan_name"] == "xas_fly_scan" and start["xas_mode"] == "fly"
    assert start["fly"]["segments_eV"] == [[8320.0, 8330.0, 10.0], [8330.0, 8355.0, 4.0]]
    assert start["fly"]["interval_s"] == 0.05 and start["xas_keys"]["energy"] == "xas_fly-energy"
    assert start["xas_keys"]["iref"] == "xas_ic-iref"
    energy = np.array([e["xas_fly-energy"] for e in events])
    # segments hardly overlap: the first one's sampling stops when the next 0.5 eV sample
    # would end past 8330 eV, where the second begins (up to 10 eV/s x the dead time past)
    assert max(e["xas_fly-energy_end"] for e in events if e["xas_fly-energy"] < 8330.0) <= 8330.5
    assert np.unique(energy).size == energy.size and energy[0] < 8321.0 and energy[-1] > 8354.0
    np.testing.assert_allclose(energy, [(e["xas_fly-energy_start"] + e["xas_fly-energy_end"]) / 2 for e in events])
    # the count time is the interval; samples span velocity x interval (0.5 eV, then 0.2 eV)
    widths = np.array([e["xas_fly-energy_end"] - e["xas_fly-energy_start"] for e in events])
    assert np.median(widths[energy < 8329.0]) == pytest.approx(0.5, rel=0.25)
    assert np.median(widths[(energy > 8331.0) & (energy < 8354.0)]) == pytest.approx(0.2, rel=0.25)
    assert call_in_bluesky_event_loop(sampler.chambers.count_time.get_value()) == 0.05
    assert call_in_bluesky_event_loop(dcm.bragg.velocity.get_value()) == 0.0  # restored: steps are instant again


def _pause_after_trigger(plan, n: int):
    """``plan`` with a pause request right after the ``n``-th trigger of the sampler."""
    seen = {"count": 0}

    def insert_after(msg):
        if msg.command != "trigger" or getattr(msg.obj, "name", None) != "xas_fly":
            return None, None
        seen["count"] += 1
        if seen["count"] != n:
            return None, None

        def pause():
            yield Msg("pause", None, defer=False)

        return None, pause()

    return plan_mutator(plan, insert_after)


def test_a_paused_fly_scan_flies_its_segment_again_and_an_abort_leaves_the_dcm_as_found(fly_station):
    dcm, sampler = fly_station
    RE = RunEngine({})
    documents = []
    segments = FLY_SEGMENTS[:2]
    with pytest.raises(RunEngineInterrupted):
        RE(_pause_after_trigger(xas_fly_scan(dcm, sampler, segments, interval_s=0.05), 30),
           lambda name, doc: documents.append((name, doc)))
    RE.resume()
    events = [doc["data"]["xas_fly-energy"] for name, doc in documents if name == "event"]
    (stop,) = [doc for name, doc in documents if name == "stop"]
    assert stop["exit_status"] == "success"
    # the second segment (8330-8355 eV) was interrupted after its first samples and flown
    # again from its start: its energies appear twice near 8330 eV, all of it once after
    assert events[-1] > 8354.0 and sum(8330.0 < e < 8331.0 for e in events) >= 4
    assert call_in_bluesky_event_loop(dcm.bragg.velocity.get_value()) == 0.0

    with pytest.raises(RunEngineInterrupted):
        RE(_pause_after_trigger(xas_fly_scan(dcm, sampler, segments, interval_s=0.05), 30))
    RE.abort("test")
    assert call_in_bluesky_event_loop(dcm.bragg.velocity.get_value()) == 0.0  # steps are instant again
    RE(bps.mv(dcm, 8340.0))  # stopped: a step move goes at once
    assert call_in_bluesky_event_loop(dcm.readback.get_value()) == pytest.approx(8340.0)
