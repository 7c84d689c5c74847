"""``nanostrain refine UID``: the sequential Pawley refinement of a stored operando XRD run,
published as a derived run (`callbacks.xrd_refinement`) through replay.

A session calibrates the simulated panel on CeO2, then takes a short operando run
(SC-NM91 charged at 200 mA/g, four frames of the simulated 1024 x 1024 panel) into a
catalog on a data folder; the command then reads the catalog alone."""

from __future__ import annotations

import json
from pathlib import Path

import bluesky.plan_stubs as bps
import numpy as np
import pytest

from nanostrain.catalog import CatalogSettings, EmbeddedCatalog, catalog_nodes
from nanostrain.cli import main
from nanostrain.export import instrument_profile
from nanostrain.plans.protocols import ProtocolStep
from nanostrain.schema.catalog import derived_runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A catalog with a CeO2 calibration and an operando XRD run on its geometry."""
    from nanostrain.session import make_session

    folder = tmp_path_factory.mktemp("refine") / "data"
    session = make_session(data_dir=folder, persist_metadata=False, progress=False)
    try:
        devices = session.devices
        xrd = devices["xrd"]
        xrd.set_sample("CeO2")
        signal = next(a for a in session.analyses if a.analysis == "xrd_calibration").signals["geometry"]
        session.RE(session.plans["calibrate_xrd"](xrd, str(folder.parent / "ceo2.poni"), signal, exposure_s=1.0))
        session.RE(session.plans["mount_sample"](devices["cycler"], {"material": "NM91", "morphology": "SC"}))
        session.RE(bps.mv(devices["cycler"].time_scale, 600.0))
        (uid,) = session.RE(session.plans["operando_xrd"](
            devices["cycler"], xrd, (ProtocolStep("CC_CHARGE", 200.0, 2.7, 4.5, label="charge"),),
            active_mass_g=6.16e-3, cadence_mAh_g=60.0, exposure_s=1.0, monitor=devices["i0"],
            sample={"name": "SC-NM91"}))
    finally:
        session.close()
    (folder / "run.json").write_text(json.dumps({"uid": uid}))
    return folder


@pytest.fixture(scope="module")
def uid(data_dir) -> str:
    return json.loads((data_dir / "run.json").read_text())["uid"]


@pytest.fixture(scope="module")
def refined(data_dir, uid):
    """Exit status of ``nanostrain refine UID --write``, then the catalog's derived runs of
    the run by analysis, and the run's instrument profile."""
    status = main(["refine", uid, "--data-dir", str(data_dir), "--write", "--no-progress"])
    with EmbeddedCatalog(CatalogSettings(data_dir=data_dir)) as server:
        client = server.client()
        raw, derived = catalog_nodes(client)
        runs = {r.metadata["start"]["analysis"]: r for r in derived_runs(derived, uid)}
        tables = {
            "refinement": runs["xrd_refinement"]["refinement"].read(),
            "instrument": runs["xrd_refinement"]["instrument"].read(),
            "xrd": runs["xrd_reduction"]["xrd"].read(),
            "stop": runs["xrd_refinement"].metadata["stop"],
        }
        profile, source, calibrated = instrument_profile(derived, raw[uid].metadata["start"])
        client.context.close()
    return status, tables, profile, calibrated


def test_refine_writes_one_row_per_frame_with_uncertainties(refined):
    status, tables, _, _ = refined
    table = tables["refinement"]
    assert status == 0 and tables["stop"]["exit_status"] == "success"
    assert len(table["raw_seq_num"]) == len(tables["xrd"]["raw_seq_num"]) == 4
    for key in ("a_A", "sigma_a_A", "c_A", "sigma_c_A", "fraction_phase2", "microstrain", "sigma_microstrain", "rwp"):
        assert np.all(np.isfinite(np.asarray(table[key], dtype=float))), key
    assert np.all(np.asarray(table["sigma_c_A"]) > 0) and np.all(np.asarray(table["rwp"]) < 0.05)
    assert "potential_V" in table


def test_refined_cells_agree_with_the_single_reflection_route(refined):
    """Same frames, two routes: c of the major phase within 5 mA, a within 1 mA."""
    _, tables, _, _ = refined
    table, xrd = tables["refinement"], tables["xrd"]
    major_is_2 = (np.asarray(table["n_phases"]) == 2) & (np.asarray(table["fraction_phase2"]) > 0.5)
    c = np.where(major_is_2, table["c2_A"], table["c_A"])
    a = np.where(major_is_2, table["a2_A"], table["a_A"])
    assert np.asarray(c, dtype=float) == pytest.approx(np.asarray(xrd["c_A"], dtype=float), abs=5e-3)
    assert np.asarray(a, dtype=float) == pytest.approx(np.asarray(xrd["a_A"], dtype=float), abs=1e-3)


def test_the_instrument_terms_are_the_calibrations(refined):
    _, tables, profile, calibrated = refined
    assert calibrated
    for key, value in profile._asdict().items():
        assert float(np.asarray(tables["instrument"][key])[0]) == pytest.approx(value, rel=1e-12)


def test_refine_refuses_an_unknown_uid(data_dir, capsys):
    assert main(["refine", "nope-not-a-run", "--data-dir", str(data_dir)]) == 2
    assert "no run" in capsys.readouterr().err
