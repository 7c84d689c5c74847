"""Known-answer tests of the per-voxel Ni K-edge XANES analysis."""

import numpy as np
import pytest
from scipy.special import erf

from nanostrain.analysis.xanes import (
    foil_edge_energy,
    normalize_xanes,
    pca_denoise,
    whiteline_energy,
    whiteline_operator,
    whiteline_statistics,
)
from nanostrain.sim.xanes_model import ni_k_edge_xanes

ENERGIES = np.arange(8340.0, 8361.0)  # the 18-ID FXI scan: 21 energies, 1 eV steps
NOISE = 0.01  # 1 % of the edge step


@pytest.fixture(scope="module")
def population():
    """20000 voxels, WL energies 8350 +- 0.5 eV, model spectra with 1 % noise."""
    rng = np.random.default_rng(7)
    truth = rng.normal(8350.0, 0.5, 20000)
    noise = NOISE * rng.standard_normal((truth.size, ENERGIES.size))
    return truth, ni_k_edge_xanes(ENERGIES, truth) + noise


def rms(error):
    return float(np.sqrt(np.mean(error**2)))


@pytest.mark.parametrize("method", ["subspace", "quadratic"])
def test_whiteline_is_exact_to_quadratic_spectra(method):
    truth = np.array([8345.37, 8350.0, 8353.91])
    mu = 2.0 - 0.03 * (ENERGIES - truth[:, None]) ** 2
    wl, quality = whiteline_energy(mu, ENERGIES, method=method)
    np.testing.assert_allclose(wl, truth, atol=1e-5)  # float32 operators for "subspace"
    np.testing.assert_allclose(quality, -0.06, rtol=1e-4)  # d^2 mu / dE^2


def test_whiteline_noise_free_model_is_exact_for_subspace_biased_for_quadratic():
    truth = np.linspace(8347.0, 8353.0, 61)
    spectra = ni_k_edge_xanes(ENERGIES, truth)
    subspace, _ = whiteline_energy(spectra, ENERGIES)
    quadratic, _ = whiteline_energy(spectra, ENERGIES, method="quadratic")
    assert np.max(np.abs(subspace - truth)) < 0.003  # measured 0.0009 (the spline's error)
    assert 0.01 < np.mean(quadratic - truth) < 0.05  # 5-point quadratic: +0.013 ... +0.050 eV


def test_whiteline_quadratic_precision_at_1_percent_noise_per_voxel(population):
    truth, noisy = population
    wl, _ = whiteline_energy(noisy, ENERGIES, method="quadratic")
    assert rms(wl - truth) < 0.09  # measured 0.071 (bias +0.033)


@pytest.mark.parametrize("lorentz_fraction", [0.0, 0.5])
def test_whiteline_within_0_04_eV_rms_and_0_01_eV_bias_at_1_percent_noise(lorentz_fraction):
    # the white line sits on the rising edge: asymmetric about its maximum
    rng = np.random.default_rng(7)
    truth = rng.normal(8350.0, 0.5, 20000)
    noise = NOISE * rng.standard_normal((truth.size, ENERGIES.size))
    noisy = ni_k_edge_xanes(ENERGIES, truth, lorentz_fraction=lorentz_fraction) + noise
    wl, quality = whiteline_energy(noisy, ENERGIES)
    assert not np.isnan(wl).any() and np.all(quality < 0)
    assert rms(wl - truth) <= 0.04  # measured 0.021 (Gaussian), 0.025 (half Lorentzian)
    assert abs(np.mean(wl - truth)) <= 0.01  # measured |bias| <= 0.005 over seeds


def test_whiteline_subspace_follows_a_population_spread_over_several_windows():
    rng = np.random.default_rng(5)
    truth = rng.uniform(8345.0, 8355.0, 20000)  # 10 eV: windows of +-2 eV on both sides
    noisy = ni_k_edge_xanes(ENERGIES, truth) + NOISE * rng.standard_normal((truth.size, ENERGIES.size))
    wl, _ = whiteline_energy(noisy, ENERGIES)
    assert np.isnan(wl).sum() == 0
    assert rms(wl - truth) < 0.1  # measured 0.072: a 10 eV spread needs more components
    assert abs(np.mean(wl - truth)) < 0.01


def test_whiteline_subspace_alone_per_voxel_without_projection(population):
    truth, noisy = population
    operator = whiteline_operator(noisy, ENERGIES, n_components=ENERGIES.size)
    wl, _ = operator(noisy)
    error = (wl - truth)[np.isfinite(wl)]
    assert operator.n_components == ENERGIES.size
    assert error.size > 0.99 * truth.size
    # the spline follows each voxel's noise: measured 0.22 eV RMS (the 5-point quadratic 0.071)
    assert 0.1 < rms(error) < 0.3
    assert abs(np.mean(error)) < 0.02


def test_whiteline_after_pca_denoise(population):
    truth, noisy = population
    denoised, n_components = pca_denoise(noisy)
    wl, _ = whiteline_energy(denoised, ENERGIES, method="quadratic", half_width=1)
    assert n_components >= 1
    assert rms(wl - truth) < 0.05  # measured 0.023
    assert abs(np.mean(wl - truth)) < 0.02


@pytest.mark.parametrize("method", ["subspace", "quadratic"])
def test_whiteline_is_vectorised_over_a_volume(population, method):
    truth, noisy = population
    volume = noisy[:4 * 5 * 6].reshape(4, 5, 6, ENERGIES.size)
    wl, quality = whiteline_energy(volume, ENERGIES, method=method)
    flat_wl, flat_quality = whiteline_energy(noisy[:120], ENERGIES, method=method)
    assert wl.shape == quality.shape == (4, 5, 6)
    np.testing.assert_array_equal(wl.ravel(), flat_wl)
    np.testing.assert_array_equal(quality.ravel(), flat_quality)


@pytest.mark.parametrize("method", ["subspace", "quadratic"])
def test_whiteline_float32_matches_float64(population, method):
    _, noisy = population
    wl64, _ = whiteline_energy(noisy, ENERGIES, method=method)
    wl32, _ = whiteline_energy(noisy.astype(np.float32), ENERGIES, method=method)
    np.testing.assert_allclose(wl32, wl64, atol=1e-3)


@pytest.mark.parametrize("method", ["subspace", "quadratic"])
def test_whiteline_on_a_non_uniform_energy_grid(method):
    energies = np.concatenate([np.arange(8330.0, 8346.0, 2.0), np.arange(8346.0, 8355.0, 0.5),
                               np.arange(8356.0, 8371.0, 2.0)])
    truth = np.linspace(8348.0, 8352.0, 41)
    wl, _ = whiteline_energy(ni_k_edge_xanes(energies, truth), energies, method=method)
    assert np.max(np.abs(wl - truth)) < 0.02  # subspace: measured 0.0003


@pytest.mark.parametrize("method", ["subspace", "quadratic"])
def test_whiteline_window_excludes_a_stronger_peak_outside(method):
    mu = ni_k_edge_xanes(ENERGIES, 8350.0) + 5.0 * np.exp(-0.5 * ((ENERGIES - 8358.0) / 1.0) ** 2)
    wl, _ = whiteline_energy(mu, ENERGIES, window=(8344.0, 8355.0), method=method)
    assert wl == pytest.approx(8350.0, abs=0.1)


@pytest.mark.parametrize("method", ["subspace", "quadratic"])
def test_whiteline_nan_where_no_maximum_inside_the_window(method):
    rising = np.stack([ENERGIES - 8340.0, -((ENERGIES - 8350.0) ** 2)])
    wl, quality = whiteline_energy(rising, ENERGIES, method=method)
    assert np.isnan(wl[0]) and np.isnan(quality[0])
    assert wl[1] == pytest.approx(8350.0)


def test_whiteline_rejects_a_window_too_small_or_an_unknown_method():
    with pytest.raises(ValueError, match="window"):
        whiteline_energy(np.zeros((2, ENERGIES.size)), ENERGIES, window=(8349.0, 8353.0), method="quadratic")
    with pytest.raises(ValueError, match="window"):
        whiteline_energy(np.zeros((2, ENERGIES.size)), ENERGIES, window=(8359.0, 8370.0))
    with pytest.raises(ValueError, match="method"):
        whiteline_energy(np.zeros((2, ENERGIES.size)), ENERGIES, method="gaussian")


def test_pca_denoise_finds_the_rank_and_removes_noise():
    rng = np.random.default_rng(3)
    basis = np.stack([np.sin(ENERGIES / 3.0), np.cos(ENERGIES / 5.0)])
    clean = 1.0 + rng.normal(size=(5000, 2)) @ basis * 0.1
    noisy = clean + NOISE * rng.standard_normal(clean.shape)
    denoised, n_components = pca_denoise(noisy)
    assert n_components == 2
    assert rms(denoised - clean) < 0.4 * rms(noisy - clean)


def test_pca_denoise_needs_more_spectra_than_energies():
    with pytest.raises(ValueError, match="more spectra"):
        pca_denoise(np.zeros((ENERGIES.size, ENERGIES.size)))


def edge(energies, e0, step, pre_offset, pre_slope, post_slope=0.0):
    """Pre-edge line + step x (erf edge of width 1 eV) + post-edge slope above E0."""
    x = energies - e0
    rise = 0.5 * (1.0 + erf(x / 1.0))
    return pre_offset + pre_slope * x + step * rise + post_slope * np.maximum(x, 0.0) * rise


def test_normalize_xanes_recovers_edge_step_and_unit_post_edge():
    energies = np.arange(8330.0, 8371.0)
    e0 = np.array([[8343.0], [8345.0]])
    step = np.array([[0.8], [2.5]])
    mu = edge(energies, e0, step, pre_offset=0.3, pre_slope=-0.004)
    result = normalize_xanes(mu, energies)
    np.testing.assert_allclose(result.edge_step, step[:, 0], rtol=1e-3)
    np.testing.assert_allclose(result.e0_eV, e0[:, 0], atol=0.5)
    post = energies >= 8365.0
    pre = energies <= 8335.0
    np.testing.assert_allclose(result.normalized[:, post], 1.0, atol=1e-3)
    np.testing.assert_allclose(result.normalized[:, pre], 0.0, atol=1e-3)


def test_normalize_xanes_flattens_a_sloped_post_edge():
    energies = np.arange(8330.0, 8371.0)
    mu = edge(energies, 8344.0, 1.5, pre_offset=0.1, pre_slope=0.002, post_slope=0.01)
    result = normalize_xanes(mu, energies, e0=8344.0)
    post = energies >= 8364.0
    assert result.edge_step == pytest.approx(1.5, rel=2e-3)
    assert np.ptp(result.normalized[post]) > 0.02
    np.testing.assert_allclose(result.flattened[post], 1.0, atol=2e-3)


def test_normalize_xanes_is_vectorised_over_a_volume():
    energies = np.arange(8330.0, 8371.0)
    step = np.linspace(0.5, 2.0, 24).reshape(2, 3, 4, 1)
    result = normalize_xanes(edge(energies, 8344.0, step, 0.2, 0.0), energies)
    assert result.normalized.shape == (2, 3, 4, energies.size)
    np.testing.assert_allclose(result.edge_step, step[..., 0], rtol=1e-3)


def test_normalize_xanes_needs_pre_and_post_edge_points_in_a_given_range():
    with pytest.raises(ValueError, match="pre_edge"):
        normalize_xanes(ni_k_edge_xanes(ENERGIES, 8350.0), ENERGIES, pre_edge=(-50.0, -8.0))
    with pytest.raises(ValueError, match="post_edge"):
        normalize_xanes(ni_k_edge_xanes(ENERGIES, 8350.0), ENERGIES, post_edge=(20.0, 80.0))


def test_normalize_xanes_defaults_on_the_plans_narrow_scan_keep_the_whiteline():
    # the TXM plans' scan, 8340-8360 eV: too narrow for the default lines, so constants
    truth = np.linspace(8348.0, 8352.0, 41)
    mu = 0.2 + 0.8 * ni_k_edge_xanes(ENERGIES, truth)  # offset and step 0.8
    result = normalize_xanes(mu, ENERGIES)
    x = ENERGIES - result.e0_eV[:, None]
    pre = (x <= -2.0) | (np.arange(ENERGIES.size) == 0)
    post = x >= (2.0 / 3.0) * x[:, -1:]
    np.testing.assert_allclose(np.sum(result.normalized * pre, 1) / pre.sum(1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(result.flattened * post, 1) / post.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(result.flattened, result.normalized)  # no slopes to flatten
    assert np.all((result.edge_step > 0.5 * 0.8) & (result.edge_step < 0.8))  # foot and tail: 0.66-0.94 x
    window = (8344.0, 8356.0)
    wl_mu, _ = whiteline_energy(mu, ENERGIES, window=window)
    wl_normalized, _ = whiteline_energy(result.normalized, ENERGIES, window=window)
    np.testing.assert_allclose(wl_normalized, wl_mu, atol=2e-3)  # an affine map: measured 0.0000
    np.testing.assert_allclose(wl_normalized, truth, atol=3e-3)


def test_normalize_xanes_on_a_wide_scan_moves_the_whiteline_by_its_slopes():
    energies = np.arange(8290.0, 8431.0)
    truth = np.linspace(8348.0, 8352.0, 41)
    result = normalize_xanes(ni_k_edge_xanes(energies, truth), energies)
    window = (8344.0, 8356.0)
    shift_normalized = whiteline_energy(result.normalized, energies, window=window)[0] - truth
    shift_flattened = whiteline_energy(result.flattened, energies, window=window)[0] - truth
    assert -0.02 < np.mean(shift_normalized) < -0.005  # measured -0.012 eV (the docstring's table)
    assert abs(np.mean(shift_flattened)) < 0.006  # measured -0.003 eV


def test_whiteline_statistics_of_a_known_distribution():
    rng = np.random.default_rng(11)
    wl = rng.normal(8350.2, 0.3, (40, 50, 50))
    mask = np.zeros(wl.shape, dtype=bool)
    mask[5:35] = True
    wl[10, 0, :7] = np.nan
    stats = whiteline_statistics(wl, mask, bins=np.arange(8348.0, 8352.01, 0.05))
    assert stats.n_voxels == 30 * 2500 - 7
    assert stats.n_failed == 7
    assert stats.counts.sum() == stats.n_voxels
    assert stats.mean_eV == pytest.approx(8350.2, abs=0.005)
    assert stats.median_eV == pytest.approx(8350.2, abs=0.01)
    assert stats.sigma_eV == pytest.approx(0.3, rel=0.02)


def test_whiteline_statistics_rejects_a_mask_of_another_shape():
    with pytest.raises(ValueError, match="mask shape"):
        whiteline_statistics(np.zeros((3, 3)), np.ones((3, 4), dtype=bool))


# ------------------------------------------------------------------ energy calibration

CALIBRATION_ENERGIES = np.arange(8318.0, 8348.1, 0.5)  # the plan's default scan


def foil_totals(energies, e0, dark=500.0):
    """Frame totals of a foil mu = 0.2 + 1.27 (1/2 + arctan((E - E0)/1 eV)/pi) (its steepest
    point is E0) and of a flat whose flux falls 0.1 % per eV: (foil, flat, mu)."""
    mu = 0.2 + 1.27 * (0.5 + np.arctan((energies - e0) / 1.0) / np.pi)
    flat = 1e6 * (1.0 - 1e-3 * (energies - 8333.0)) + dark
    return dark + (flat - dark) * np.exp(-mu), flat, mu


@pytest.mark.parametrize("e0", [8333.0, 8333.2, 8333.37, 8330.11])
def test_foil_edge_energy_recovers_mu_and_the_edge(e0):
    foil, flat, mu = foil_totals(CALIBRATION_ENERGIES, e0)
    edge = foil_edge_energy(foil, flat, [499.0, 501.0], CALIBRATION_ENERGIES)  # two darks, mean 500
    np.testing.assert_allclose(edge.mu, mu, rtol=1e-12)
    # on the grid exact; between grid points the parabola's bias, measured <= 0.012 eV
    assert edge.e0_eV == pytest.approx(e0, abs=0.02)


def test_foil_edge_energy_refuses_an_edge_outside_the_scan_or_no_beam():
    foil, flat, _ = foil_totals(CALIBRATION_ENERGIES, 8355.0)
    with pytest.raises(ValueError, match="not inside"):
        foil_edge_energy(foil, flat, 500.0, CALIBRATION_ENERGIES)
    with pytest.raises(ValueError, match="exceed the dark"):
        foil_edge_energy(foil, np.full_like(flat, 400.0), 500.0, CALIBRATION_ENERGIES)
    with pytest.raises(ValueError, match="strictly increasing"):
        foil_edge_energy(foil, flat, 500.0, CALIBRATION_ENERGIES[::-1])
