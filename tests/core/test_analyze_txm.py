"""`nanostrain analyze` on a TXM-XANES tomography: the block-wise reduction on dask (arrays
in a zarr store, bounded pieces per task) equals the live reducer's derived run."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from nanostrain.analyze import AnalyzeError, dask_client
from nanostrain.analyze_txm import plan, publish, reduce, slabs
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
    run = stored_derived_run(session, uid, "txm_xanes")
    # read now: `analyze --write` below replaces this derived run
    live = {stream: run[stream].read() for stream in ("whiteline", "statistics", "registration", "preview")}
    yield session, uid, live
    session.close()


def _job(scan, store):
    session, uid, _ = scan
    return plan(session.catalog[uid], session.server.uri, API_KEY, store, session.derived, task_bytes=TASK_BYTES)


def _assert_equals_live(result, live):
    store = zarr.open_group(result.store, mode="r")
    whiteline = live["whiteline"]
    wl, mask = np.asarray(whiteline["wl_eV"])[0], np.asarray(whiteline["mask"])[0].astype(bool)
    assert np.array_equal(store["mask"][:], mask)
    np.testing.assert_allclose(store["wl_eV"][:], wl, rtol=0, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(store["edge_jump"][:], np.asarray(whiteline["edge_jump"])[0], rtol=1e-5, atol=1e-6)
    assert result.center_px == pytest.approx(float(whiteline["center_px"][0]), abs=1e-9)
    stats = live["statistics"]
    assert result.statistics.mean_eV == pytest.approx(float(stats["wl_mean_eV"][0]), abs=1e-5)
    assert result.statistics.sigma_eV == pytest.approx(float(stats["wl_sigma_eV"][0]), abs=1e-5)
    assert result.statistics.n_voxels == int(stats["n_voxels"][0]) > 100
    assert result.n_components == int(stats["n_pca_components"][0])
    shifts = live["registration"]
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


def test_a_result_published_without_a_writer_keeps_its_volumes_lazy(scan, tmp_path):
    job = _job(scan, tmp_path / "store.zarr")
    documents = publish(job, reduce(job, progress=False))
    names = [name for name, _ in documents]
    assert names[0] == "start" and names[-1] == "stop" and documents[-1][1]["exit_status"] == "success"
    (whiteline,) = [doc["data"] for name, doc in documents if name == "event" and "wl_eV" in doc["data"]]
    assert not isinstance(whiteline["wl_eV"], np.ndarray) and whiteline["wl_eV"].shape == (SIDE, SIDE, SIDE)


def test_the_cli_writes_the_derived_run_with_its_volumes_in_files(scan, tmp_path, capsys):
    """`analyze --write`: one txm_xanes derived run (the live one superseded) whose volumes
    are HDF5 files under <data-dir>/derived, read through the catalog equal to live; the
    scratch store is removed."""
    session, uid, live = scan
    store = tmp_path / "written.zarr"
    code = main(["analyze", uid, "--catalog", session.server.uri, "--api-key", API_KEY, "--workers", "1",
                 "--data-dir", str(session.settings.data_dir), "--store", str(store), "--write", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "written to the catalog" in out and not store.exists()
    (derived,) = [r for r in session.derived_runs(uid) if r.metadata["start"]["analysis"] == "txm_xanes"]
    assert derived.metadata["stop"]["exit_status"] == "success"
    new_uid = derived.metadata["start"]["uid"]
    assert (session.settings.data_dir / "derived" / new_uid / "whiteline.h5").is_file()
    whiteline = derived["whiteline"].read()
    np.testing.assert_allclose(np.asarray(whiteline["wl_eV"])[0], np.asarray(live["whiteline"]["wl_eV"])[0],
                               rtol=0, atol=1e-4, equal_nan=True)
    assert np.array_equal(np.asarray(whiteline["mask"])[0], np.asarray(live["whiteline"]["mask"])[0])
    np.testing.assert_allclose(np.asarray(derived["whiteline"]["edge_jump"][0, 3:5]),
                               np.asarray(live["whiteline"]["edge_jump"])[0, 3:5], rtol=1e-5, atol=1e-6)
    stats = derived["statistics"].read()
    for key in ("wl_mean_eV", "wl_sigma_eV", "n_voxels", "n_pca_components", "n_energies_incomplete"):
        assert float(stats[key][0]) == pytest.approx(float(live["statistics"][key][0]), abs=1e-5), key
    previews = derived["preview"].read()
    np.testing.assert_allclose(np.asarray(previews["energy_eV"]), np.asarray(live["preview"]["energy_eV"]))
    np.testing.assert_allclose(np.asarray(previews["image"]), np.asarray(live["preview"]["image"]), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(np.asarray(derived["registration"].read()["shift_cols_px"]),
                               np.asarray(live["registration"]["shift_cols_px"]), atol=1e-9)
