"""TXM-XANES live analysis: the callback on simulated scans, known answers from the
simulated microscope's ground truth (the white-line energy it gave every voxel, the jitter
it gave every energy); the reducer's own tests are in tests/analysis/test_txm.py."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from bluesky.run_engine import call_in_bluesky_event_loop

from nanostrain.analysis.xanes import whiteline_energy
from nanostrain.beamline import connect_devices, detector_path_provider
from nanostrain.callbacks.txm import TxmXanesCallback
from nanostrain.callbacks.txm_plots import TxmLivePlot, comparison_figure
from nanostrain.devices.txm import SimTxm
from nanostrain.plans.txm import txm_xanes_2d, txm_xanes_tomo
from nanostrain.sim.txm import charged_particle, particle_sample

ENERGIES = np.arange(8340.0, 8360.5, 2.0)  # 11 energies
ANGLES = np.linspace(0.0, 180.0, 19)  # 10 deg steps
SHAPE = (32, 32, 32)
VOXEL_UM = 0.16  # the 4 um SC particle spans 25 voxels


@pytest.fixture(scope="module")
def nm91():
    """Charged SC-NM91 (a reaction front: WL sigma 0.09 eV) on 32^3 voxels."""
    return particle_sample(charged_particle("NM91"), SHAPE, VOXEL_UM)


def stream(docs, name):
    """The data of the derived run's events in stream ``name``."""
    uids = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == name}
    return [d["data"] for n, d in docs if n == "event" and d["descriptor"] in uids]


def interior(sample, mask):
    """Voxels in the analysis mask that hold a ground truth."""
    return mask & sample.mask


# ------------------------------------------------------------------ parameters


def test_parameters_rebuild_an_equal_analysis():
    callback = TxmXanesCallback(smooth_voxels=0.5, mask_erosion=2, denoise=False, registration_angles=4, bins=40,
                                stream="primary")
    parameters = json.loads(json.dumps(callback.parameters()))  # JSON-able
    assert parameters == {"image_key": None, "stream": "primary", "smooth_voxels": 0.5, "mask_erosion": 2,
                          "denoise": False, "registration_angles": 4, "bins": 40}
    rebuilt = TxmXanesCallback(**parameters)
    assert rebuilt.parameters() == parameters and rebuilt.options == callback.options


def test_unknown_or_bad_options_are_refused():
    with pytest.raises(TypeError):
        TxmXanesCallback(smoothing=2.0)
    with pytest.raises(ValueError, match="mask_erosion"):
        TxmXanesCallback(mask_erosion=-1)


# ------------------------------------------------------------------ live, on a scan


@pytest.fixture
def txm(RE, tmp_path):
    microscope = SimTxm(detector_path_provider(tmp_path / "det"), shape=SHAPE[1:], pixel_size_um=VOXEL_UM, name="txm")
    connect_devices({"txm": microscope})
    return microscope


def analyse(RE, plan, callback=None):
    callback = callback or TxmXanesCallback()
    raw, derived = [], []
    callback.subscribe(lambda name, doc: derived.append((name, doc)))
    RE(plan, lambda name, doc: (raw.append((name, doc)), callback(name, doc)))
    return raw, derived, callback


@pytest.mark.slow
def test_live_tomography_recovers_the_particle_whiteline_map(RE, txm, nm91):
    txm.mount(nm91)
    raw, derived, callback = analyse(RE, txm_xanes_tomo(txm, ENERGIES, ANGLES, n_flats=2, n_darks=2))
    (start,) = [d for n, d in derived if n == "start"]
    assert start["derived_from"] == raw[0][1]["uid"] and start["analysis"] == "txm_xanes"
    previews = stream(derived, "preview")
    assert [p["energy_eV"] for p in previews] == pytest.approx(list(ENERGIES))
    assert np.asarray(previews[-1]["image"]).shape == SHAPE[1:]
    # registration: the shifts undo the settling jitter the simulator drew per energy
    jitter = np.array([txm.scene.jitter[round(e, 3)] for e in ENERGIES])
    shifts = np.array([[r["shift_rows_px"], r["shift_cols_px"]] for r in stream(derived, "registration")])
    reference = int(np.argmin(np.abs(shifts).sum(axis=1)))
    np.testing.assert_allclose(shifts, -(jitter - jitter[reference]), atol=0.2)
    (whiteline,) = stream(derived, "whiteline")
    (stats,) = stream(derived, "statistics")
    wl = np.asarray(whiteline["wl_eV"], dtype=float)
    mask = np.asarray(whiteline["mask"], dtype=bool)
    inside = interior(nm91, mask)
    assert np.sqrt(np.mean((wl - nm91.whiteline_eV)[inside] ** 2)) < 0.12  # eV per voxel; measured ~0.06
    assert stats["wl_sigma_eV"] == pytest.approx(np.std(nm91.whiteline_eV[inside], ddof=1), abs=0.06)
    assert stats["n_voxels"] == mask.sum() and sum(stats["counts"]) == stats["n_voxels"]
    assert call_in_bluesky_event_loop(callback.signals["wl_sigma_eV"].get_value()) == stats["wl_sigma_eV"]
    assert call_in_bluesky_event_loop(callback.signals["energies_done"].get_value()) == len(ENERGIES)
    assert [d for n, d in derived if n == "stop"][0]["exit_status"] == "success"


def test_live_2d_map_matches_the_projected_spectra(RE, txm, nm91):
    txm.mount(nm91)
    txm.scene.jitter_px = 0.0
    raw, derived, _ = analyse(RE, txm_xanes_2d(txm, ENERGIES, angle_deg=0.0, n_flats=3, n_darks=2))
    (whiteline,) = stream(derived, "whiteline")
    wl = np.asarray(whiteline["wl_eV"], dtype=float)
    mask = np.asarray(whiteline["mask"], dtype=bool)
    # ground truth: the WL of each pixel's noise-free projected spectrum (a mix along the beam)
    projected = np.stack([nm91.projections(e, np.array([0.0]))[0] for e in ENERGIES], axis=-1)
    truth, _ = whiteline_energy(projected[mask], ENERGIES)  # as the analysis fits
    assert mask.sum() > 150
    # measured 0.103 eV here (2 eV steps, thin rim pixels); 0.04-0.10 over other noise seeds
    assert np.sqrt(np.nanmean((wl[mask] - truth) ** 2)) < 0.15
    assert np.isnan(whiteline["center_px"])


def test_a_scan_cut_short_fails_the_derived_run_with_a_reason(RE, txm, nm91):
    txm.mount(nm91)
    docs = []
    RE(txm_xanes_2d(txm, ENERGIES[:8], n_flats=1, n_darks=1), lambda name, doc: docs.append((name, doc)))
    # keep the darks, then 4 energies (flat + projection each): the rest never arrived
    kept = [(n, d) for n, d in docs if n != "event" or d["seq_num"] <= 1 + 2 * 4]
    callback, published = TxmXanesCallback(), []
    callback.subscribe(lambda name, doc: published.append((name, doc)))
    with pytest.raises(ValueError, match="only 4 of 8 energies"):
        for name, doc in kept:
            callback(name, doc)
    (stop,) = [d for n, d in published if n == "stop"]
    assert stop["exit_status"] == "fail" and "only 4 of 8" in stop["reason"]


# ------------------------------------------------------------------ figures


def test_comparison_figure_shows_slices_and_histograms_with_sigma():
    rng = np.random.default_rng(0)
    results = {}
    for label, sigma in (("NC91", 0.01), ("NM91", 0.1)):
        wl = np.where(rng.random((8, 8, 8)) < 0.8, 8351.0 + sigma * rng.standard_normal((8, 8, 8)), np.nan)
        counts, edges = np.histogram(wl[np.isfinite(wl)], bins=20)
        results[label] = {"wl_eV": wl, "counts": counts, "bin_edges_eV": edges, "sigma_eV": sigma, "voxel_um": 0.08}
    fig = comparison_figure(results)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 6  # three orthogonal slices per particle
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert legend == ["NC91: σ = 0.010 eV", "NM91: σ = 0.100 eV"]


def test_live_plot_draws_the_result_from_the_derived_run(RE, txm, nm91):
    txm.mount(nm91)
    callback = TxmXanesCallback()
    plot = TxmLivePlot()
    callback.subscribe(plot)
    analyse(RE, txm_xanes_2d(txm, ENERGIES, n_flats=1, n_darks=1), callback)
    titles = [ax.get_title() for ax in plot.figure.axes]
    assert "WL distribution" in titles
