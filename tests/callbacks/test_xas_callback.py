"""The live XAS callback on a real RunEngine and the simulated station: derived-run
streams, live values, recorded parameters, and a run too short to reduce."""

from __future__ import annotations

import math

import pytest
from bluesky import RunEngine
from bluesky.run_engine import call_in_bluesky_event_loop

from nanostrain.beamline import connect_devices
from nanostrain.callbacks.derived import GuardedCallback
from nanostrain.callbacks.xas import XasCallback
from nanostrain.devices.dcm import DcmEnergy
from nanostrain.devices.xas import SimIonChambers
from nanostrain.plans.xas import xas_scan

REGIONS = [{"space": "E", "start": -150.0, "stop": -20.0, "step": 10.0, "dwell_s": 0.1},
           {"space": "E", "start": -19.5, "stop": 30.0, "step": 1.0, "dwell_s": 0.1},
           {"space": "k", "start": 2.85, "stop": 14.0, "step": 0.1, "dwell_s": 0.1, "k_weight": 2.0}]


@pytest.fixture
def station():
    RE = RunEngine({})
    dcm = DcmEnergy(name="dcm")
    chambers = SimIonChambers(dcm, name="xas_ic")
    connect_devices({"dcm": dcm, "xas_ic": chambers})
    return RE, dcm, chambers


def run(station, analysis, regions):
    RE, dcm, chambers = station
    published = []
    analysis.subscribe(lambda name, doc: published.append((name, doc)))
    RE(xas_scan(dcm, chambers, regions), GuardedCallback(analysis))  # as a session runs it
    return published


def test_a_scan_publishes_points_spectrum_exafs_and_fit(station):
    analysis = XasCallback(kweight=3, r_range=(1.0, 2.5))
    published = run(station, analysis, REGIONS)
    (start,) = [doc for name, doc in published if name == "start"]
    assert start["parameters"]["kweight"] == 3 and start["parameters"]["r_range"] == [1.0, 2.5]
    assert XasCallback.from_parameters(start["parameters"]).parameters() == analysis.parameters()
    streams = {doc["uid"]: doc["name"] for name, doc in published if name == "descriptor"}
    counts: dict[str, int] = {}
    for name, doc in published:
        if name == "event":
            counts[streams[doc["descriptor"]]] = counts.get(streams[doc["descriptor"]], 0) + 1
    assert counts == {"points": 14 + 50 + 112, "spectrum": 1, "exafs": 1, "fit": 1}
    (fit,) = [doc["data"] for name, doc in published if name == "event" and streams[doc["descriptor"]] == "fit"]
    truth = station[2].specimen
    assert fit["r_A"] == pytest.approx(truth.bond_length_A, abs=0.006)
    live = {name: call_in_bluesky_event_loop(signal.get_value()) for name, signal in analysis.signals.items()}
    assert live["r_A"] == fit["r_A"] and live["sigma2_A2"] == fit["sigma2_A2"]
    assert live["edge_shift_eV"] == fit["edge_shift_eV"] and live["points_done"] == counts["points"]
    assert [doc["exit_status"] for name, doc in published if name == "stop"] == ["success"]


def test_a_scan_too_short_to_reduce_fails_its_derived_run_with_the_reason(station):
    published = run(station, XasCallback(), [{"space": "E", "start": -20.0, "stop": 20.0, "step": 5.0,
                                              "dwell_s": 0.1}])
    (stop,) = [doc for name, doc in published if name == "stop"]
    assert stop["exit_status"] == "fail" and ">= 20 points" in stop["reason"]


def test_bad_settings_are_refused_when_the_analysis_is_made():
    with pytest.raises(ValueError, match="k_range"):
        XasCallback(k_range=(5.0, 2.0))
    assert math.isnan(call_in_bluesky_event_loop(XasCallback().signals["r_A"].get_value()))
