"""Ex situ XAS end to end on the simulated beamline: DCM + ion chambers -> xas_scan ->
documents -> catalog -> live analysis -> derived run -> replay from the catalog equals live."""

from __future__ import annotations

import numpy as np
import pytest

from nanostrain.callbacks.xas import XasCallback
from nanostrain.replaying import replay
from nanostrain.session import make_session

from ..conftest import API_KEY, stored_derived_run

pytestmark = pytest.mark.slow

CHARGED_NM91 = {"material": "NM91", "morphology": "SC", "state": {"charge_V": 4.5, "current_mA_g": 20.0}}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = make_session(data_dir=tmp_path_factory.mktemp("xas") / "data", api_key=API_KEY)
    yield s
    s.close()


@pytest.fixture(scope="module")
def scan(session):
    dcm, chambers = session.devices["dcm"], session.devices["xas_ic"]
    chambers.dcm_offset_eV = 0.6  # a DCM miscalibration the reference foil must reveal
    session.RE(session.plans["mount_sample"](chambers, CHARGED_NM91))
    (uid,) = session.RE(session.plans["xas_scan"](dcm, chambers, sample={"name": "charged SC-NM91"}))
    derived = stored_derived_run(session, uid, "xas")
    return uid, derived


def test_raw_run_holds_every_point_and_the_analysis_metadata(session, scan):
    uid, _ = scan
    run = session.catalog[uid]
    start = run.metadata["start"]
    assert start["technique"] == "xas" and start["e0_eV"] == 8350.0
    table = run["primary"].read()
    assert len(table["xas_ic-i0"]) == len(start["energies_eV"]) == 338
    np.testing.assert_allclose(np.asarray(table["dcm"]), start["energies_eV"], atol=1e-6)


def test_derived_run_recovers_the_mounted_electrode(session, scan):
    uid, derived = scan
    assert derived.metadata["start"]["derived_from"] == uid and derived.metadata["stop"]["exit_status"] == "success"
    assert {"points", "spectrum", "exafs", "fit"} <= set(derived)
    fit = {key: derived["fit"][key].read()[0] for key in ("energy_shift_eV", "r_A", "r_err_A", "sigma2_A2",
                                                          "sigma2_err_A2", "edge_shift_eV")}
    truth = session.devices["xas_ic"].specimen
    assert fit["energy_shift_eV"] == pytest.approx(0.6, abs=0.03)
    assert fit["r_A"] == pytest.approx(truth.bond_length_A, abs=0.005) and 0 < fit["r_err_A"] < 0.01
    assert fit["sigma2_A2"] == pytest.approx(truth.sigma2_A2, abs=0.0006) and 0 < fit["sigma2_err_A2"] < 0.001
    assert len(derived["points"]["mu"].read()) == 338
    live = {name: signal for name, signal in session.live_signals.items() if name.startswith("xas_")}
    assert set(live) == {"xas_edge_shift_eV", "xas_r_A", "xas_sigma2_A2", "xas_points_done"}


def test_replay_from_the_catalog_equals_live(session, scan):
    uid, derived = scan
    published = replay(session.catalog[uid], [XasCallback()])
    streams = {doc["uid"]: doc["name"] for name, doc in published if name == "descriptor"}
    events: dict[str, list] = {}
    for name, doc in published:
        if name == "event":
            events.setdefault(streams[doc["descriptor"]], []).append(doc["data"])
    (fit,) = events["fit"]
    for key, value in fit.items():
        assert value == derived["fit"][key].read()[0], key
    (exafs,) = events["exafs"]
    np.testing.assert_array_equal(exafs["chi"], derived["exafs"]["chi"].read()[0])
    np.testing.assert_array_equal([e["mu"] for e in events["points"]], derived["points"]["mu"].read())


#: A quick fly scan over the step scan's range (about 33 s of sweeping at 0.05 s a sample):
#: 2.5 eV samples in the pre-edge, 0.25 eV across the edge, <= 0.05 1/A in the EXAFS.
FAST_FLY = [{"space": "E", "start": -150.0, "stop": -20.0, "velocity_eV_s": 50.0},
            {"space": "E", "start": -20.0, "stop": 30.0, "velocity_eV_s": 5.0},
            {"space": "k", "start": 2.81, "stop": 6.0, "velocity_eV_s": 20.0},
            {"space": "k", "start": 6.0, "stop": 14.0, "velocity_eV_s": 40.0}]


@pytest.fixture(scope="module")
def fly_scan(session, scan):
    """A fly scan of the same electrode (after the step scan), and its derived run."""
    dcm, sampler = session.devices["dcm"], session.devices["xas_fly"]
    (uid,) = session.RE(session.plans["xas_fly_scan"](dcm, sampler, FAST_FLY, interval_s=0.05,
                                                      sample={"name": "charged SC-NM91"}))
    derived = stored_derived_run(session, uid, "xas")
    return uid, derived


def _fit(derived) -> dict[str, float]:
    return {key: derived["fit"][key].read()[0] for key in ("energy_shift_eV", "edge_shift_eV", "r_A", "sigma2_A2")}


def test_fly_run_holds_interval_energies_and_the_fly_metadata(session, fly_scan):
    uid, _ = fly_scan
    run = session.catalog[uid]
    start = run.metadata["start"]
    assert start["xas_mode"] == "fly" and start["fly"]["interval_s"] == 0.05
    table = run["primary"].read()
    energy, low, high = (np.asarray(table[f"xas_fly-{key}"]) for key in ("energy", "energy_start", "energy_end"))
    np.testing.assert_allclose(energy, (low + high) / 2)
    # sampling starts with the motion at 8200 eV (the first count's gate opens there; on a
    # loaded machine an event-loop stall can open it later: 10 eV is 0.2 s at 50 eV/s; seen
    # at 8202.08 eV under load against a former bound of 8201.5) and stops less than one sample
    # spacing (~3 eV at 40 eV/s) before k = 14 1/A
    assert len(energy) > 300 and low.min() < 8210.0 and energy.max() > 8350.0 + 3.80998 * 13.9**2


def test_fly_derived_run_agrees_with_the_step_run_and_the_model(session, scan, fly_scan):
    # tolerances: the DCM offset (0.6 eV) within 0.1 eV and the edge shift within 0.25 eV of
    # the step scan's: fly samples are 0.25 eV wide at the edge, and on a loaded machine
    # the event loop's stalls leave gaps between them (the twin reports its count's gate
    # energies, so a sample's energy stays that of its counts; before it did, the edge
    # came out 0.19 eV off with load average 4-5 on 2 cores; 0.04 eV without gaps,
    # tests/analysis/test_xas.py); R within 0.006 A and sigma^2 within 0.0008 A^2 of the
    # truth and of the step scan's fit
    truth = session.devices["xas_ic"].specimen
    step, fly = _fit(scan[1]), _fit(fly_scan[1])
    assert fly_scan[1].metadata["stop"]["exit_status"] == "success"
    assert fly["energy_shift_eV"] == pytest.approx(0.6, abs=0.1)
    assert fly["edge_shift_eV"] == pytest.approx(step["edge_shift_eV"], abs=0.25)
    assert fly["r_A"] == pytest.approx(truth.bond_length_A, abs=0.006)
    assert fly["r_A"] == pytest.approx(step["r_A"], abs=0.006)
    assert fly["sigma2_A2"] == pytest.approx(truth.sigma2_A2, abs=0.0008)
    assert fly["sigma2_A2"] == pytest.approx(step["sigma2_A2"], abs=0.0008)


def test_fly_replay_from_the_catalog_equals_live(session, fly_scan):
    uid, derived = fly_scan
    published = replay(session.catalog[uid], [XasCallback()])
    streams = {doc["uid"]: doc["name"] for name, doc in published if name == "descriptor"}
    (fit,) = [doc["data"] for name, doc in published if name == "event" and streams[doc["descriptor"]] == "fit"]
    for key, value in fit.items():
        assert value == derived["fit"][key].read()[0], key
