"""`calibrate_xrd` in a RunEngine with the live calibration analysis inline: the plan
writes the PONI file and sets the detector from the geometry the analysis publishes for
its own run; a failed calibration fails the raw run and leaves the PONI file alone."""

from __future__ import annotations

import json
import os

import numpy as np
import pyFAI
import pytest
from pyFAI.io.ponifile import PoniFile

from nanostrain.beamline import connect_devices, detector_path_provider
from nanostrain.callbacks.xrd_calibration import XrdCalibrationCallback
from nanostrain.devices.beam import SimBeamMonitor
from nanostrain.devices.xrd import CALIBRANT, SimXrdDetector
from nanostrain.plans.calibration import CalibrationError, calibrate_xrd, write_poni_atomically
from nanostrain.plans.validation import PlanArgumentError
from nanostrain.callbacks.derived import GuardedCallback
from nanostrain.sim.cathode import CathodeParticle
from nanostrain.analysis.xrd import perkinelmer_geometry

BINNING = 4  # 512 x 512 pixels of 800 um: a quick frame


def two_theta_deg(geometry) -> np.ndarray:
    return np.degrees(geometry.center_array(unit="2th_rad", scale=False))


@pytest.fixture
def bench(RE, tmp_path):
    """A simulated panel looking at CeO2 whose recorded geometry is 2 % off in distance and
    3 px off in beam centre; the calibration analysis subscribed as the session does."""
    truth = perkinelmer_geometry(binning=BINNING)
    nominal = perkinelmer_geometry(binning=BINNING, center_px=(256 + 3.0, 256 - 2.0))
    nominal.dist = truth.dist * 1.02
    monitor = SimBeamMonitor(name="i0")
    detector = SimXrdDetector(detector_path_provider(tmp_path / "det"), CathodeParticle("NM91", "SC"),
                              geometry=truth, monitor=monitor, nominal_geometry=nominal, seed=3)
    connect_devices({"xrd": detector})
    detector.set_sample(CALIBRANT)
    analysis = XrdCalibrationCallback()
    derived: list[tuple[str, dict]] = []
    analysis.subscribe(lambda name, doc: derived.append((name, doc)))
    guard = GuardedCallback(analysis)
    token = RE.subscribe(guard)
    raw: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: raw.append((name, doc)))
    return {"RE": RE, "truth": truth, "nominal": nominal, "detector": detector, "monitor": monitor,
            "analysis": analysis, "signal": analysis.signals["geometry"], "raw": raw, "derived": derived,
            "token": token}


def stop_of(docs) -> dict:
    (stop,) = [doc for name, doc in docs if name == "stop"]
    return stop


def test_plan_writes_the_refined_geometry_to_the_poni_file_and_the_detector(bench, tmp_path):
    poni = tmp_path / "ceo2.poni"
    poni.write_text("# the beamline's previous calibration\n")

    (uid,) = bench["RE"](calibrate_xrd(bench["detector"], poni, bench["signal"], exposure_s=1.0))

    assert stop_of(bench["raw"])["exit_status"] == "success"
    written = pyFAI.load(str(poni))
    assert np.abs(two_theta_deg(written) - two_theta_deg(bench["truth"])).max() < 0.005
    recorded = pyFAI.load(bench["detector"].geometry_config())
    for key in ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength"):
        assert getattr(recorded, key) == pytest.approx(getattr(written, key), rel=1e-12), key
    # the PONI holds what the analysis published, for this run
    (event,) = [doc for name, doc in bench["derived"] if name == "event" and "pyfai_config" in doc["data"]]
    published = json.loads(event["data"]["pyfai_config"])
    assert written.dist == pytest.approx(published["dist"]) and written.rot1 == pytest.approx(published["rot1"])
    assert json.loads(bench["analysis"].signals["geometry"]._connector.backend.reading["value"])["raw_uid"] == uid
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_beam_off_fails_the_raw_run_and_leaves_the_poni_file_and_detector_alone(bench, tmp_path):
    poni = tmp_path / "ceo2.poni"
    poni.write_text("# the beamline's previous calibration\n")
    before = poni.read_bytes()
    recorded = bench["detector"].geometry_config()
    bench["monitor"].beam_on = False  # dark frames

    with pytest.raises(CalibrationError, match="calibration analysis failed: .*rings"):
        bench["RE"](calibrate_xrd(bench["detector"], poni, bench["signal"], exposure_s=1.0))

    stop = stop_of(bench["raw"])
    assert stop["exit_status"] == "fail"
    assert "CalibrationError" in stop["reason"] and "rings" in stop["reason"]
    assert poni.read_bytes() == before
    assert bench["detector"].geometry_config() == recorded


def test_without_an_answer_for_its_run_the_plan_times_out_inside_the_run(RE, bench, tmp_path):
    """A value left by another run is not taken; no analysis answers: fail after timeout_s."""
    RE.unsubscribe(bench["token"])  # no analysis
    bench["analysis"].set_live("geometry", json.dumps({"raw_uid": "another run", "pyfai_config": {}}))
    poni = tmp_path / "ceo2.poni"

    with pytest.raises(CalibrationError, match="no refined geometry for run"):
        RE(calibrate_xrd(bench["detector"], poni, bench["signal"], timeout_s=0.5))

    stop = stop_of(bench["raw"])
    assert stop["exit_status"] == "fail" and "no refined geometry" in stop["reason"]
    assert not poni.exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"exposure_s": 0.0}, "exposure_s"),
    ({"timeout_s": -1.0}, "timeout_s"),
    ({"calibrant": "unobtainium"}, "calibrant must be one of"),
])
def test_bad_arguments_are_refused_before_anything_moves(bench, tmp_path, kwargs, message):
    plan = calibrate_xrd(bench["detector"], tmp_path / "ceo2.poni", bench["signal"], **kwargs)
    with pytest.raises(PlanArgumentError, match=message):
        next(plan)


def test_an_unwritable_folder_or_a_non_signal_is_refused(bench, tmp_path):
    with pytest.raises(PlanArgumentError, match="poni_path: cannot write the PONI file"):
        next(calibrate_xrd(bench["detector"], tmp_path / "missing" / "ceo2.poni", bench["signal"]))
    with pytest.raises(PlanArgumentError, match="refined_geometry must be a readable device or signal"):
        next(calibrate_xrd(bench["detector"], tmp_path / "ceo2.poni", "xrd_calibration_geometry"))


def test_write_poni_atomically_replaces_and_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "ceo2.poni"
    first, second = perkinelmer_geometry(1.2, 0.4520, binning=4), perkinelmer_geometry(1.5, binning=4)
    write_poni_atomically(first, path)
    write_poni_atomically(second, path)
    assert pyFAI.load(str(path)).dist == pytest.approx(1.5)  # replaced, not appended
    before = path.read_bytes()

    with pytest.raises(Exception):
        write_poni_atomically(object(), path)

    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ceo2.poni"]
    assert PoniFile(str(path)).dist == pytest.approx(1.5)
