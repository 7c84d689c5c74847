"""SXDM end to end: a beamline session (embedded catalog over HTTP, simulated nanoprobe)
runs a fly rocking raster of a charged SC-NM91 particle; the live analysis's derived run
lands in the catalog, and replaying the stored raw run (frames read in blocks from the detector file) gives
the same maps as live."""

from __future__ import annotations

import numpy as np
import pytest
from event_model import DocumentNames, schema_validators

from nanostrain.analysis.sxdm_geometry import SxdmGeometry
from nanostrain.callbacks.sxdm import SxdmCallback
from nanostrain.callbacks.sxdm_plots import maps_from_derived_run
from nanostrain.replaying import replay
from nanostrain.session import make_session
from nanostrain.sim.cathode import CathodeParticle
from nanostrain.sim.nanoprobe import project_particle

from ..conftest import API_KEY, stored_derived_run

pytestmark = pytest.mark.slow

MAPS = ("intensity", "dd_over_d", "theta_xy", "theta_xz", "d_A", "mask")


@pytest.fixture(scope="module")
def sxdm_session(tmp_path_factory):
    session = make_session(data_dir=tmp_path_factory.mktemp("sxdm") / "data", api_key=API_KEY,
                           persist_metadata=False)
    particle = CathodeParticle("NM91", "SC")
    while particle.potential_V < 4.3:  # mid-charge at 100 mA/g: an H3 shell over an H2 core
        particle.step(100.0, 9.0)
    detector = session.devices["merlin"]
    detector.simulation.mount(project_particle(particle, 0.1))
    detector.point_at_003(particle.lattice().mean_c_A)
    theta_b = detector.sxdm_geometry().two_theta_deg / 2
    (uid,) = session.RE(session.plans["sxdm_rocking_raster"](
        detector, session.devices["np_stage"], session.devices["np_theta"], (-2.0, 2.0), (-2.0, 2.0), 0.8,
        theta_b + np.linspace(-0.5, 0.5, 5), "fly", monitor=session.devices["np_i0"], background=0.1,
        progress=False, sample={"name": "SC-NM91", "state": "4.3 V, first charge"},
    ))
    yield session, uid
    session.close()


def sxdm_derived(session, uid):
    run = stored_derived_run(session, uid, "sxdm_strain")
    return run


def test_raw_run_and_derived_maps_land_in_the_catalog(sxdm_session):
    session, uid = sxdm_session
    raw = session.catalog[uid]
    assert raw.metadata["start"]["technique"] == "sxdm"
    # the geometry (energy in eV) and the analysis's parameters survive the catalog's JSON
    recorded = raw.metadata["start"]["sxdm_geometry"]
    assert SxdmGeometry.from_metadata(recorded) == session.devices["merlin"].sxdm_geometry()
    frames = raw["primary"]["merlin"]
    assert frames.shape[0] == 5 * 6 * 6 and frames.shape[-2:] == (64, 64)
    derived = sxdm_derived(session, uid)
    assert derived.metadata["start"]["derived_from"] == uid
    assert derived.metadata["stop"]["exit_status"] == "success"
    parameters = dict(derived.metadata["start"]["parameters"])
    assert SxdmCallback(**parameters).parameters() == parameters
    maps = maps_from_derived_run(derived)
    assert maps["dd_over_d"].shape == (6, 6) and maps["mask"].sum() >= 8
    assert maps["sigma_dd_over_d"] > 3e-4  # the reaction front of SC-NM91 mid-charge
    assert derived["angles"]["theta_index"].read().tolist() == list(range(5))
    live = next(a for a in session.analyses if isinstance(a, SxdmCallback))
    np.testing.assert_array_equal(maps["dd_over_d"], live.maps.dd_over_d)
    assert not any(guard.errors for guard in session.guards)


def test_replay_from_the_catalog_equals_live(sxdm_session):
    session, uid = sxdm_session
    live = maps_from_derived_run(sxdm_derived(session, uid))
    published = replay(session.catalog[uid])
    starts = {doc["uid"]: doc for name, doc in published if name == "start"}
    (start,) = [doc for doc in starts.values() if doc["analysis"] == "sxdm_strain"]
    streams = {doc["uid"]: doc["name"] for name, doc in published if name == "descriptor" and doc["run_start"] == start["uid"]}
    (maps,) = [doc["data"] for name, doc in published if name == "event" and streams.get(doc["descriptor"]) == "maps"]
    for key in MAPS:
        np.testing.assert_array_equal(np.asarray(maps[key], dtype=float), np.asarray(live[key], dtype=float), err_msg=key)
    for key in ("sigma_dd_over_d", "sigma_theta_xy_deg", "sigma_theta_xz_deg", "d_ref_A"):
        assert maps[key] == live[key], key
    for name, doc in published:
        schema_validators[DocumentNames(name)].validate(doc)
