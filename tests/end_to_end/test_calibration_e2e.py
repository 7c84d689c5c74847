"""XRD geometry calibration end to end on the simulated beamline: CeO2 frame -> catalog ->
live calibration analysis -> geometry signal -> plan writes the PONI file and sets the
detector; replay of the run touches no file; a failed calibration fails both runs."""

from __future__ import annotations

import json

import numpy as np
import pyFAI
import pytest

from nanostrain.plans.calibration import CalibrationError
from nanostrain.replaying import replay
from nanostrain.session import make_session
from nanostrain.analysis.xrd import perkinelmer_geometry

from ..conftest import API_KEY, wait_for, stored_derived_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = make_session(data_dir=tmp_path_factory.mktemp("calibration") / "data", api_key=API_KEY)
    yield s
    s.close()


def geometry_signal(session):
    return next(a for a in session.analyses if a.analysis == "xrd_calibration").signals["geometry"]


def in_the_catalog(session) -> None:
    """Wait until the catalog holds every document the session emitted (its writers run in
    the background: a run's stop does not wait for them)."""
    wait_for(lambda: session.recorder.forwarder.synced() and session.derived_recorder.forwarder.synced(), timeout=120)


def calibration_run(session, uid):
    run = stored_derived_run(session, uid, "xrd_calibration")
    return run


def two_theta_deg(geometry) -> np.ndarray:
    return np.degrees(geometry.center_array(unit="2th_rad", scale=False))


@pytest.fixture(scope="module")
def calibrated(session, tmp_path_factory):
    """The simulated panel's recorded geometry set 2 % off in distance and 5 px off in beam
    centre, then calibrated on CeO2 over an existing PONI file."""
    xrd = session.devices["xrd"]
    truth = pyFAI.load(xrd.geometry_config())
    rows = truth.detector.shape[0]
    wrong = perkinelmer_geometry(binning=2048 // rows, center_px=(rows / 2 + 3.0, rows / 2 - 4.0))
    wrong.dist = truth.dist * 1.02
    xrd.set_geometry(wrong)
    xrd.set_sample("CeO2")
    poni = tmp_path_factory.mktemp("poni") / "ceo2.poni"
    poni.write_text("# the previous calibration\n")
    (uid,) = session.RE(session.plans["calibrate_xrd"](xrd, poni, geometry_signal(session), exposure_s=1.0))
    in_the_catalog(session)
    return {"uid": uid, "truth": truth, "poni": poni}


def test_calibrate_xrd_corrects_a_wrong_recorded_geometry(session, calibrated):
    xrd = session.devices["xrd"]
    assert session.catalog[calibrated["uid"]].metadata["stop"]["exit_status"] == "success"
    written = pyFAI.load(str(calibrated["poni"]))
    assert np.abs(two_theta_deg(written) - two_theta_deg(calibrated["truth"])).max() < 0.005
    assert xrd.geometry_config()["dist"] == pytest.approx(written.dist)
    run = calibration_run(session, calibrated["uid"])
    table = run["calibration"].read()
    assert float(np.asarray(table["rms_2theta_deg"])[0]) < 0.005
    rings = run["rings"].read()
    assert len(rings["ring"]) == int(np.asarray(table["n_rings"])[0]) >= 5
    assert np.all(np.asarray(rings["rms_2theta_deg"]) < 0.01) and np.all(np.asarray(rings["n_points"]) > 20)
    assert [int(np.asarray(rings[axis])[0]) for axis in "hkl"] == [1, 1, 1]


def test_replay_of_a_calibration_run_leaves_the_poni_file_byte_identical(session, calibrated):
    poni = calibrated["poni"]
    before, stamp = poni.read_bytes(), poni.stat().st_mtime_ns
    recorded = session.devices["xrd"].geometry_config()

    published = replay(session.catalog[calibrated["uid"]])
    session.replay(calibrated["uid"])

    assert poni.read_bytes() == before and poni.stat().st_mtime_ns == stamp
    assert session.devices["xrd"].geometry_config() == recorded
    # the replay publishes the geometry the live analysis did
    (event,) = [doc for name, doc in published if name == "event" and "pyfai_config" in doc["data"]]
    live = calibration_run(session, calibrated["uid"])["calibration"].read()
    assert json.loads(event["data"]["pyfai_config"]) == json.loads(str(np.asarray(live["pyfai_config"])[0]))


@pytest.fixture(scope="module")
def failed(session, calibrated):
    """A calibration with the beam off (dark frames) over the PONI file just written."""
    poni = calibrated["poni"]
    before = poni.read_bytes()
    recorded = session.devices["xrd"].geometry_config()
    n_runs = len(session.catalog)
    session.devices["i0"].beam_on = False
    try:
        with pytest.raises(CalibrationError) as raised:
            session.RE(session.plans["calibrate_xrd"](session.devices["xrd"], poni, geometry_signal(session)))
    finally:
        session.devices["i0"].beam_on = True
    in_the_catalog(session)
    uid = next(key for key in list(session.catalog)[n_runs:]
               if session.catalog[key].metadata["start"].get("technique") == "xrd_calibration")
    return {"uid": uid, "error": raised.value, "before": before, "recorded": recorded}


def test_a_failed_calibration_fails_the_raw_run_and_leaves_the_poni_file(session, calibrated, failed):
    stop = session.catalog[failed["uid"]].metadata["stop"]
    assert stop["exit_status"] == "fail"
    assert "rings" in stop["reason"] and "rings" in str(failed["error"])
    assert calibrated["poni"].read_bytes() == failed["before"]
    assert session.devices["xrd"].geometry_config() == failed["recorded"]


def test_the_derived_run_of_a_failed_calibration_is_closed_as_failed(session, failed):
    stop = calibration_run(session, failed["uid"]).metadata.get("stop")  # needs the derived-run lifecycle
    assert stop is not None and stop["exit_status"] == "fail"
    assert "rings" in stop["reason"]
