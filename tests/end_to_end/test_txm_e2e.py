"""TXM-XANES end to end on the simulated beamline: microscope -> txm_xanes_tomo ->
documents -> catalog -> live analysis -> derived run -> replay from the catalog equals live."""

from __future__ import annotations

import numpy as np
import pytest

from nanostrain.beamline import connect_devices, detector_path_provider
from nanostrain.callbacks.txm import TxmXanesCallback
from nanostrain.devices.txm import SimTxm
from nanostrain.replaying import replay
from nanostrain.session import make_session
from nanostrain.sim.txm import charged_particle, particle_sample

from ..conftest import API_KEY, stored_derived_run

pytestmark = pytest.mark.slow

ENERGIES = np.arange(8340.0, 8360.5, 2.0)
ANGLES = np.linspace(0.0, 180.0, 19)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = make_session(data_dir=tmp_path_factory.mktemp("txm") / "data", api_key=API_KEY)
    # the session's microscope at a tiny size: 32 x 32 pixels of 0.16 um, charged SC-NM91
    sample = particle_sample(charged_particle("NM91"), (32, 32, 32), 0.16)
    s.devices["txm"] = SimTxm(detector_path_provider(s.settings.detector_dir), sample, shape=(32, 32),
                              pixel_size_um=0.16, name="txm")
    connect_devices({"txm": s.devices["txm"]})
    yield s
    s.close()


@pytest.fixture(scope="module")
def scan(session):
    txm = session.devices["txm"]
    (uid,) = session.RE(session.plans["txm_xanes_tomo"](txm, ENERGIES, ANGLES, n_flats=2, n_darks=2,
                                                         sample={"name": "charged SC-NM91"}))
    derived = stored_derived_run(session, uid, "txm_xanes")
    return uid, derived


def test_raw_run_holds_every_frame_and_the_analysis_metadata(session, scan):
    uid, _ = scan
    run = session.catalog[uid]
    frames = run["primary"]["txm-camera"].read()
    n_frames = 2 + 2 * len(ENERGIES) + len(ENERGIES) * len(ANGLES)
    assert frames.shape[0] == n_frames and frames.shape[-2:] == (32, 32)
    kinds = np.asarray(run["primary"]["txm-frame_type"].read()).astype(str)
    assert list(kinds[:4]) == ["dark", "dark", "flat", "flat"] and (kinds == "projection").sum() == 11 * 19
    start = run.metadata["start"]
    assert start["technique"] == "txm" and start["pixel_size_um"] == 0.16
    assert start["angles_deg"] == pytest.approx(list(ANGLES))


def test_derived_run_lands_in_the_catalog_with_the_whiteline_volume(session, scan):
    uid, derived = scan
    assert derived.metadata["start"]["derived_from"] == uid
    assert {"preview", "registration", "whiteline", "statistics"} <= set(derived)
    wl = derived["whiteline"]["wl_eV"].read()[0]
    assert wl.shape == (32, 32, 32) and wl.dtype == np.float32
    truth = session.devices["txm"].specimen.whiteline_eV
    inside = np.isfinite(wl) & np.isfinite(truth)
    assert np.sqrt(np.mean((wl - truth)[inside] ** 2)) < 0.12  # eV per voxel
    assert derived["preview"]["image"].read().shape == (len(ENERGIES), 32, 32)


def test_replay_from_the_catalog_equals_live(session, scan):
    uid, derived = scan
    published = replay(session.catalog[uid], [TxmXanesCallback()])
    (start,) = [doc for name, doc in published if name == "start"]
    assert start["derived_from"] == uid
    streams = {doc["uid"]: doc["name"] for name, doc in published if name == "descriptor"}
    events = {}
    for name, doc in published:
        if name == "event":
            events.setdefault(streams[doc["descriptor"]], []).append(doc["data"])
    (statistics,) = events["statistics"]
    for key in ("wl_mean_eV", "wl_median_eV", "wl_sigma_eV", "n_voxels", "n_pca_components"):
        assert statistics[key] == derived["statistics"][key].read()[0], key
    np.testing.assert_array_equal(statistics["counts"], derived["statistics"]["counts"].read()[0])
    (whiteline,) = events["whiteline"]
    live_wl = derived["whiteline"]["wl_eV"].read()[0]
    np.testing.assert_array_equal(np.asarray(whiteline["wl_eV"], dtype=np.float32), live_wl)
    np.testing.assert_array_equal(np.asarray(whiteline["mask"]), derived["whiteline"]["mask"].read()[0])
    shifts = [e["shift_cols_px"] for e in events["registration"]]
    np.testing.assert_array_equal(shifts, derived["registration"]["shift_cols_px"].read())
