"""Ex situ XAS end to end on the simulated beamline: DCM + ion chambers -> xas_scan ->
documents -> catalog -> live analysis -> derived run -> replay from the catalog equals live."""

from __future__ import annotations

import numpy as np
import pytest

from nanostrain.callbacks.xas import XasCallback
from nanostrain.replaying import replay
from nanostrain.session import make_session

from ..conftest import API_KEY

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
    derived = next(r for r in session.derived_runs(uid) if r.metadata["start"]["analysis"] == "xas")
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
