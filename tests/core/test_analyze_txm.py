"""`nanostrain analyze` on a TXM-XANES tomography: the block-wise reduction on dask (arrays
in a zarr store, bounded pieces per task) equals the live reducer's derived run."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from nanostrain.analyze import AnalyzeError, dask_client
from nanostrain.analyze_txm import plan, reduce, slabs
from nanostrain.beamline import connect_devices, detector_path_provider
from nanostrain.cli import main
from nanostrain.devices.txm import SimTxm
from nanostrain.session import make_session
from nanostrain.sim.txm import charged_particle, particle_sample

from ..conftest import API_KEY, stored_derived_run

pytestmark = pytest.mark.slow

ENERGIES = np.arange(8340.0, 8360.5, 2.0)
ANGLES = np.linspace(0.0, 180.0, 19)
SIDE = 32
TASK_BYTES = 8 * 4 * SIDE * SIDE * len(ENERGIES)  # slabs of 8 rows: 4 per volume


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A session with a 32^3 charged SC-NM91 particle and its stored XANES tomography."""
    session = make_session(data_dir=tmp_path_factory.mktemp("txm") / "data", api_key=API_KEY, persist_metadata=False)
    sample = particle_sample(charged_particle("NM91"), (SIDE, SIDE, SIDE), 0.16)
    session.devices["txm"] = SimTxm(detector_path_provider(session.settings.detector_dir), sample,
                                    shape=(SIDE, SIDE), pixel_size_um=0.16, name="txm")
    connect_devices({"txm": session.devices["txm"]})
    (uid,) = session.RE(session.plans["txm_xanes_tomo"](session.devices["txm"], ENERGIES, ANGLES, n_flats=2,
                                                         n_darks=2, sample={"name": "charged SC-NM91"}))
    live = stored_derived_run(session, uid, "txm_xanes")
    yield session, uid, live
    session.close()


def _job(scan, store):
    session, uid, _ = scan
    return plan(session.catalog[uid], session.server.uri, API_KEY, store, session.derived, task_bytes=TASK_BYTES)


def _assert_equals_live(result, live):
    store = zarr.open_group(result.store, mode="r")
    whiteline = live["whiteline"].read()
    wl, mask = np.asarray(whiteline["wl_eV"])[0], np.asarray(whiteline["mask"])[0].astype(bool)
    assert np.array_equal(store["mask"][:], mask)
    np.testing.assert_allclose(store["wl_eV"][:], wl, rtol=0, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(store["edge_jump"][:], np.asarray(whiteline["edge_jump"])[0], rtol=1e-5, atol=1e-6)
    assert result.center_px == pytest.approx(float(whiteline["center_px"][0]), abs=1e-9)
    stats = live["statistics"].read()
    assert result.statistics.mean_eV == pytest.approx(float(stats["wl_mean_eV"][0]), abs=1e-5)
    assert result.statistics.sigma_eV == pytest.approx(float(stats["wl_sigma_eV"][0]), abs=1e-5)
    assert result.statistics.n_voxels == int(stats["n_voxels"][0]) > 100
    assert result.n_components == int(stats["n_pca_components"][0])
    shifts = live["registration"].read()
    np.testing.assert_allclose(result.shifts_px, np.stack([shifts["shift_rows_px"], shifts["shift_cols_px"]], 1),
                               atol=1e-9)


def test_the_slabs_are_whole_reconstruction_batches():
    assert slabs(32, 1000, 8000) == [(0, 8), (8, 16), (16, 24), (24, 32)]
    assert slabs(30, 1000, 16000) == [(0, 16), (16, 30)]
    assert slabs(30, 10**9, 1) == [(0, 8), (8, 16), (16, 24), (24, 30)]  # never below one batch


def test_block_wise_in_one_process_equals_the_live_reducer(scan, tmp_path):
    job = _job(scan, tmp_path / "store.zarr")
    assert len(job.energy_frames) == len(ENERGIES) and job.n_frames == len(ENERGIES) * len(ANGLES)
    _assert_equals_live(reduce(job, progress=False), scan[2])


def test_block_wise_on_two_dask_workers_equals_the_live_reducer(scan, tmp_path):
    with dask_client(workers=2) as client:
        result = reduce(_job(scan, tmp_path / "store.zarr"), client, progress=False)
    _assert_equals_live(result, scan[2])


def test_a_store_that_holds_data_is_refused(scan, tmp_path):
    (tmp_path / "store.zarr").mkdir()
    (tmp_path / "store.zarr" / "x").write_text("")
    with pytest.raises(AnalyzeError, match="not empty"):
        _job(scan, tmp_path / "store.zarr")


def test_the_cli_analyses_a_txm_run_into_a_store(scan, tmp_path, capsys):
    session, uid, _ = scan
    code = main(["analyze", uid, "--catalog", session.server.uri, "--api-key", API_KEY, "--workers", "1",
                 "--store", str(tmp_path / "cli.zarr"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "white line" in out and str(tmp_path / "cli.zarr") in out
    assert zarr.open_group(tmp_path / "cli.zarr", mode="r")["wl_eV"].shape == (SIDE, SIDE, SIDE)
