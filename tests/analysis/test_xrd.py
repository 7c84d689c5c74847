"""Known-answer tests of nanostrain.analysis.xrd: integration, fitting, crystallography."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pyFAI.detectors import detector_factory
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from nanostrain.analysis import units, xrd

pytestmark = pytest.mark.filterwarnings("error")

WAVELENGTH_A = 0.1665
A_PRISTINE, C_PRISTINE = 2.87, 14.2
FWHM_Q = 0.015  # 1/A, a few pixels at 1 m
NPT = 2000


# ----------------------------------------------------------------------------------------
# A simulated PerkinElmer frame with the R-3m rings of (a, c) at known d
# ----------------------------------------------------------------------------------------
def ring_pattern(q: np.ndarray, lines: list[xrd.Reflection]) -> np.ndarray:
    """1D pattern: a smooth background and one pseudo-Voigt per line."""
    pattern = 20.0 + 30.0 * np.exp(-q / 3.0)
    for line in lines:
        pattern += xrd.pseudo_voigt(q, line.q, FWHM_Q, 0.3, area=2.0 * line.multiplicity)
    return pattern


@pytest.fixture(scope="module")
def geometry():
    return xrd.perkinelmer_geometry(1.0, WAVELENGTH_A)


@pytest.fixture(scope="module")
def lines():
    return xrd.r3m_reflections(A_PRISTINE, C_PRISTINE, (0.5, 6.0))


@pytest.fixture(scope="module")
def frame(geometry, lines):
    """Poisson counts of the pattern rendered at every pixel's centre Q."""
    expected = ring_pattern(xrd.pixel_q(geometry), lines)
    return np.random.default_rng(7).poisson(expected).astype(np.float32)


@pytest.fixture(scope="module")
def integrator(geometry):
    return xrd.Integrator(geometry, npt=NPT)


@pytest.fixture(scope="module")
def integrated(integrator, frame):
    return integrator(frame)


# ----------------------------------------------------------------------------------------
# Conversions
# ----------------------------------------------------------------------------------------
def test_q_two_theta_d_conversions_agree_with_bragg():
    d = 2.0
    two_theta = units.d_to_two_theta(d, WAVELENGTH_A)
    assert two_theta == pytest.approx(math.degrees(2 * math.asin(WAVELENGTH_A / (2 * d))), rel=1e-12)
    assert units.two_theta_to_q(two_theta, WAVELENGTH_A) == pytest.approx(math.pi, rel=1e-12)
    assert units.q_to_two_theta(math.pi, WAVELENGTH_A) == pytest.approx(two_theta, rel=1e-12)
    assert units.two_theta_to_d(two_theta, WAVELENGTH_A) == pytest.approx(d, rel=1e-12)
    assert units.q_to_d(units.d_to_q(d)) == pytest.approx(d, rel=1e-12)


def test_q_beyond_ewald_limit_is_rejected():
    with pytest.raises(ValueError, match="lambda"):
        units.q_to_two_theta(4 * np.pi / WAVELENGTH_A * 1.01, WAVELENGTH_A)


def test_fwhm_in_q_converts_to_two_theta_by_the_bragg_derivative():
    q, width = 3.0, 1e-4
    theta = math.asin(q * WAVELENGTH_A / (4 * math.pi))
    first_order = math.degrees(2 * width * WAVELENGTH_A / (4 * math.pi * math.cos(theta)))
    assert units.fwhm_q_to_two_theta(width, q, WAVELENGTH_A) == pytest.approx(first_order, rel=1e-6)


# ----------------------------------------------------------------------------------------
# Crystallography
# ----------------------------------------------------------------------------------------
def test_hexagonal_d_of_basal_and_in_plane_reflections():
    d = xrd.hexagonal_d([0, 1, 1], [0, 1, 0], [3, 0, 4], A_PRISTINE, C_PRISTINE)
    d104 = 1 / math.sqrt(4 / (3 * A_PRISTINE**2) + 16 / C_PRISTINE**2)
    np.testing.assert_allclose(d, [C_PRISTINE / 3, A_PRISTINE / 2, d104], rtol=1e-12)


def test_lattice_parameters_recovers_a_and_c_from_exact_spacings():
    hkls = [(0, 0, 3), (1, 0, 1), (1, 0, 4), (1, 1, 0), (1, 1, 3)]
    spacings = {hkl: float(xrd.hexagonal_d(*hkl, 2.8123, 13.9876)) for hkl in hkls}
    a, c = xrd.lattice_parameters(spacings)
    assert (a, c) == pytest.approx((2.8123, 13.9876), rel=1e-10)


def test_lattice_parameters_needs_an_in_plane_reflection():
    with pytest.raises(ValueError, match="at least one reflection"):
        xrd.lattice_parameters({(0, 0, 3): 4.7, (0, 0, 6): 2.35})


def test_cell_volume_of_the_pristine_cell():
    assert xrd.cell_volume(A_PRISTINE, C_PRISTINE) == pytest.approx(101.2939, abs=1e-3)


def test_r3m_reflections_obey_the_rhombohedral_condition_in_order(lines):
    assert [line.hkl for line in lines[:5]] == [(0, 0, 3), (1, 0, 1), (0, 0, 6), (0, 1, 2), (1, 0, 4)]
    assert all((-h + k + l) % 3 == 0 for h, k, l in (line.hkl for line in lines))
    assert all(a.q < b.q for a, b in zip(lines, lines[1:]))
    assert lines[0].multiplicity == 2 and lines[4].multiplicity == 6


def test_al_reflections_are_the_fcc_lines():
    al = xrd.al_reflections((2.0, 5.0))
    assert [line.hkl for line in al] == [(1, 1, 1), (2, 0, 0), (2, 2, 0)]
    np.testing.assert_allclose(
        [line.q for line in al], 2 * np.pi / xrd.AL_LATTICE_A * np.sqrt([3, 4, 8]), rtol=1e-12
    )


# ----------------------------------------------------------------------------------------
# Williamson-Hall (eq. 4)
# ----------------------------------------------------------------------------------------
def test_williamson_hall_recovers_size_and_microstrain():
    size_A, eps, K = 600.0, 1.5e-3, 0.9
    two_theta = units.d_to_two_theta([4.73, 2.45, 2.04, 1.44, 1.20], WAVELENGTH_A)
    theta = np.radians(two_theta) / 2
    beta = K * WAVELENGTH_A / (size_A * np.cos(theta)) + 4 * eps * np.tan(theta)
    result = xrd.williamson_hall(two_theta, np.degrees(beta), WAVELENGTH_A, K=K)
    assert result.size_A == pytest.approx(size_A, rel=1e-9)
    assert result.microstrain == pytest.approx(eps, rel=1e-9)


def test_williamson_hall_without_size_broadening_gives_nan_size_never_inf():
    two_theta = np.array([3.0, 6.0, 9.0])
    beta = 4 * 1e-3 * np.tan(np.radians(two_theta) / 2)
    for widths in (beta, beta * (1 + np.array([1e-3, -1e-3, 1e-3])), beta - 1e-6, np.zeros(3)):
        result = xrd.williamson_hall(two_theta, np.degrees(widths), WAVELENGTH_A)
        assert math.isnan(result.size_A)
    assert xrd.williamson_hall(two_theta, np.degrees(beta), WAVELENGTH_A).microstrain == pytest.approx(1e-3)
    # two lines: only the sign of the intercept decides
    assert math.isnan(xrd.williamson_hall(two_theta[:2], np.degrees(beta[:2] - 1e-6), WAVELENGTH_A).size_A)


# ----------------------------------------------------------------------------------------
# Geometry and integration
# ----------------------------------------------------------------------------------------
def test_perkinelmer_geometry_puts_the_beam_at_the_requested_pixel():
    ai = xrd.perkinelmer_geometry(0.5, 0.452, center_px=(1000.5, 900.5))
    q = xrd.pixel_q(ai)
    assert q.shape == (2048, 2048)
    assert np.unravel_index(np.argmin(q), q.shape) == (1000, 900)
    assert ai.wavelength == pytest.approx(0.452e-10)
    # 100 pixels (20 mm) off the beam at 0.5 m: 2 theta = atan(20 / 500)
    expected = units.two_theta_to_q(math.degrees(math.atan(20 / 500)), 0.452)
    assert q[1000, 1000] == pytest.approx(expected, rel=1e-6)


def test_binned_perkinelmer_geometry_is_the_panel_binned():
    ai = xrd.perkinelmer_geometry(1.5, WAVELENGTH_A, binning=4)
    assert ai.detector.shape == (512, 512)
    assert ai.detector.pixel1 == pytest.approx(800e-6)
    assert (ai.poni1, ai.poni2) == pytest.approx((0.2048, 0.2048))  # the panel centre
    # binning changes the pixels, not the Q the panel sees at a given place
    full = xrd.pixel_q(xrd.perkinelmer_geometry(1.5, WAVELENGTH_A))
    np.testing.assert_allclose(xrd.pixel_q(ai)[100, 200], full[401:403, 801:803].mean(), rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{"binning": 3}, {"binning": 0}, {"distance_m": -1.0}, {"wavelength_A": 0.0}])
def test_perkinelmer_geometry_refuses_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="binning|positive"):
        xrd.perkinelmer_geometry(**kwargs)


def test_geometry_config_is_json_that_rebuilds_the_geometry():
    ai = xrd.perkinelmer_geometry(1.48, 0.4520, binning=4, center_px=(255.2, 257.9))
    ai.rot1 = 0.01
    config = xrd.geometry_config(ai)
    assert json.loads(json.dumps(config)) == config
    for source in (config, json.dumps(config)):
        rebuilt = xrd.pyfai_geometry(source)
        assert xrd.geometry_config(rebuilt) == config
        np.testing.assert_array_equal(xrd.pixel_q(rebuilt), xrd.pixel_q(ai))


def test_poni_text_round_trips_through_a_file(tmp_path):
    ai = xrd.perkinelmer_geometry(2.0, 0.4520, binning=4, center_px=(250.5, 260.25))
    path = tmp_path / "calib.poni"
    path.write_text(xrd.poni_text(ai))
    loaded = xrd.load_geometry(path)
    assert xrd.geometry_config(loaded) == xrd.geometry_config(ai)
    assert xrd.load_geometry(str(path)).dist == 2.0
    assert xrd.load_geometry(ai) is ai
    with pytest.raises(TypeError, match="PONI"):
        xrd.load_geometry(2.0)


def isolated(lines: list[xrd.Reflection], gap: float = 0.1) -> list[xrd.Reflection]:
    """The lines with no neighbour closer than gap (1/A): (003), (104), (015), (113)."""
    return [
        line for i, line in enumerate(lines)
        if min(abs(line.q - other.q) for other in lines[:i] + lines[i + 1 :]) > gap
    ]


def fit_line(q, intensity, line: xrd.Reflection) -> xrd.ReflectionFit:
    return xrd.fit_reflection(q, intensity, (line.q - 0.05, line.q + 0.05))


def test_integrated_rings_sit_at_the_known_d(integrated, lines):
    q, intensity = integrated
    for line in isolated(lines):
        assert fit_line(q, intensity, line).centers[0] == pytest.approx(line.q, abs=1e-4), line.hkl


def test_lattice_parameters_from_the_integrated_frame(integrated, lines):
    q, intensity = integrated
    spacings = {line.hkl: fit_line(q, intensity, line).d[0] for line in isolated(lines)}
    assert xrd.lattice_parameters(spacings) == pytest.approx((A_PRISTINE, C_PRISTINE), rel=1e-4)


def test_integrator_agrees_with_pyfai_without_pixel_splitting(geometry, integrator, frame, integrated):
    """The same sums: only pixels on a bin edge may fall on the other side (pyFAI
    computes their Q in float32)."""
    q, intensity = integrated
    reference = geometry.integrate1d(
        frame, NPT, unit="q_A^-1", method=("no", "histogram", "cython"), radial_range=integrator.q_range
    )
    filled = np.isfinite(intensity)
    assert filled.mean() > 0.99
    relative = np.abs(intensity[filled] / reference.intensity[filled] - 1)
    assert np.median(relative) < 1e-5
    assert relative.max() < 5e-3
    # full rings (not the beam centre, not the corners): mean pixel Q close to the centre
    rings = (q > 0.5) & (q < 7.5)
    bin_width = np.diff(integrator.q_range)[0] / NPT
    assert np.max(np.abs(q - reference.radial)[rings]) < 0.1 * bin_width


def test_integrator_and_pyfai_default_give_the_same_reflections(geometry, integrator, frame, integrated, lines):
    q, intensity = integrated
    reference = geometry.integrate1d(frame, NPT, unit="q_A^-1", radial_range=integrator.q_range)
    for line in isolated(lines):
        ours = fit_line(q, intensity, line)
        theirs = fit_line(reference.radial, reference.intensity, line)
        assert ours.centers[0] == pytest.approx(theirs.centers[0], abs=1e-4), line.hkl
        assert ours.areas[0] == pytest.approx(theirs.areas[0], rel=0.02), line.hkl


@pytest.mark.parametrize("q_range", [None, (0.5, 5.0)])
def test_bbox_splitting_is_pyfai_integrate1d_default(geometry, frame, q_range):
    """pyFAI's default method (bbox pixel splitting, CSR) and conventions (solid angle,
    no polarization): the same bins and I(Q) to float32 rounding."""
    integrator = xrd.Integrator(geometry, npt=NPT, q_range=q_range, pixel_splitting="bbox")
    reference = geometry.integrate1d(frame, NPT, unit="q_A^-1", radial_range=q_range)
    q, intensity = integrator(frame)
    filled = np.isfinite(intensity) & (reference.intensity > 0)
    assert filled.mean() > 0.99
    relative = np.abs(intensity[filled] / reference.intensity[filled] - 1)
    assert np.median(relative) < 1e-5 and relative.max() < 1e-4
    edges = np.linspace(*integrator.q_range, NPT + 1)
    np.testing.assert_allclose((edges[1:] + edges[:-1]) / 2, reference.radial, rtol=1e-6)  # pyFAI: float32
    # the mean Q of a bin's pixel shares, which reach into the neighbours, is within a bin
    # (the end bins also take shares of pixels centred outside the range)
    inner = filled.copy()
    inner[[0, -1]] = False
    assert np.max(np.abs(q - reference.radial)[inner]) < edges[1] - edges[0]


def test_bbox_splitting_honours_a_frame_mask(geometry, frame):
    integrator = xrd.Integrator(geometry, npt=NPT, pixel_splitting="bbox")
    mask = np.zeros(frame.shape, dtype=bool)
    mask[:, :1024] = True
    spoiled = np.where(mask, 1e9, frame).astype(np.float32)
    reference = geometry.integrate1d(frame, NPT, unit="q_A^-1", mask=mask)
    _, intensity = integrator(spoiled, mask=mask)
    filled = np.isfinite(intensity) & (reference.intensity > 0)
    assert np.median(np.abs(intensity[filled] / reference.intensity[filled] - 1)) < 1e-5


@pytest.mark.parametrize("splitting", ["no", "bbox"])
def test_threads_give_the_single_thread_result(geometry, frame, splitting):
    one = xrd.Integrator(geometry, npt=NPT, pixel_splitting=splitting)
    two = xrd.Integrator(geometry, npt=NPT, pixel_splitting=splitting, threads=3)
    np.testing.assert_array_equal(one.q, two.q)
    np.testing.assert_allclose(two(frame)[1], one(frame)[1], rtol=1e-4)  # float32 sums, another order


@pytest.mark.parametrize("kwargs", [{"pixel_splitting": "full"}, {"threads": 0}])
def test_integrator_refuses_unknown_splitting_or_threads(geometry, kwargs):
    with pytest.raises(ValueError, match="pixel_splitting|threads"):
        xrd.Integrator(geometry, npt=100, **kwargs)


def test_integrator_reads_a_poni_file(tmp_path, geometry, frame, integrated):
    path = tmp_path / "perkinelmer.poni"
    geometry.save(str(path))
    q, intensity = xrd.Integrator(path, npt=NPT)(frame)
    np.testing.assert_allclose(q, integrated[0], rtol=1e-9)
    np.testing.assert_allclose(intensity, integrated[1], rtol=1e-6)


def test_masked_pixels_do_not_count(integrator, frame, integrated):
    mask = np.zeros(frame.shape, dtype=bool)
    mask[:, :1024] = True
    spoiled = frame.copy()
    spoiled[mask] = 1e9
    _, intensity = integrator(spoiled, mask=mask)
    rings = integrator.q > 0.5  # enough pixels per bin for counting noise < 10 %
    # the unmasked half of a ring holds the same pattern, up to counting noise
    np.testing.assert_allclose(intensity[rings], integrated[1][rings], rtol=0.1)


def test_integrator_integrates_a_stack_like_single_frames(integrator, frame, integrated):
    _, stacked = integrator(np.stack([frame, 2 * frame]))
    assert stacked.shape == (2, NPT)
    np.testing.assert_allclose(stacked, [integrated[1], 2 * integrated[1]], rtol=1e-6)


def test_integrator_needs_a_wavelength():
    ai = AzimuthalIntegrator(dist=1.0, detector=detector_factory("Perkin"))  # no wavelength
    with pytest.raises(ValueError, match="wavelength"):
        xrd.Integrator(ai, npt=100)


def test_integrator_rejects_a_frame_of_the_wrong_shape(integrator):
    with pytest.raises(ValueError, match="detector shape"):
        integrator(np.zeros((1024, 1024)))


# ----------------------------------------------------------------------------------------
# Reflection fitting on 1D patterns
# ----------------------------------------------------------------------------------------
Q_GRID = np.linspace(1.0, 1.8, 800)


def noisy(pattern: np.ndarray, seed: int = 1, sigma: float = 0.5) -> np.ndarray:
    return pattern + np.random.default_rng(seed).normal(0, sigma, pattern.size)


def test_single_peak_parameters_are_recovered():
    truth = 40 + 5 * Q_GRID + xrd.pseudo_voigt(Q_GRID, 1.3312, 0.012, 0.4, area=3.0)
    fit = xrd.fit_reflection(Q_GRID, noisy(truth), (1.2, 1.46))
    assert fit.n_phases == 1
    assert fit.centers[0] == pytest.approx(1.3312, abs=5 * fit.center_errors[0])
    assert fit.center_errors[0] < 1e-4
    assert fit.fwhm[0] == pytest.approx(0.012, rel=0.03)
    assert fit.eta == pytest.approx(0.4, abs=0.1)
    assert fit.areas[0] == pytest.approx(3.0, rel=0.03)
    assert fit.d[0] == pytest.approx(2 * np.pi / fit.centers[0])
    np.testing.assert_allclose(fit.model(Q_GRID), truth, atol=3 * 0.5)


def test_two_phase_peak_centres_and_fractions_are_recovered():
    truth = (
        40
        + xrd.pseudo_voigt(Q_GRID, 1.327, 0.012, 0.3, area=2.1)
        + xrd.pseudo_voigt(Q_GRID, 1.345, 0.012, 0.3, area=0.9)
    )
    fit = xrd.fit_reflection(Q_GRID, noisy(truth), (1.2, 1.46), n_phases=2)
    assert fit.centers == pytest.approx((1.327, 1.345), abs=3e-4)
    assert fit.fractions == pytest.approx((0.7, 0.3), abs=0.03)


@pytest.mark.parametrize("second_area, expected", [(0.0, 1), (1.0, 2)])
def test_auto_chooses_the_number_of_phases(second_area, expected):
    truth = (
        40
        + xrd.pseudo_voigt(Q_GRID, 1.327, 0.012, 0.3, area=2.0)
        + xrd.pseudo_voigt(Q_GRID, 1.350, 0.012, 0.3, area=second_area)
    )
    fit = xrd.fit_reflection(Q_GRID, noisy(truth), (1.2, 1.46), n_phases="auto")
    assert fit.n_phases == expected
    assert set(fit.bic) == {1, 2}
    assert (fit.note == "") == (expected == 2)


def test_a_second_phase_closer_than_one_fwhm_is_not_significant():
    """At low noise BIC splits a pair 0.6 FWHM apart, but it reads as one broadened
    peak; 1.5 FWHM apart the same pair is two phases."""
    def pair(dq):
        return (40 + xrd.pseudo_voigt(Q_GRID, 1.327, 0.012, 0.3, 2.0)
                + xrd.pseudo_voigt(Q_GRID, 1.327 + dq, 0.012, 0.3, 1.0))

    close = xrd.fit_reflection(Q_GRID, noisy(pair(0.0072), sigma=0.02), (1.2, 1.46), n_phases="auto")
    assert close.n_phases == 1 and close.bic[2] < close.bic[1] and "FWHM apart" in close.note
    apart = xrd.fit_reflection(Q_GRID, noisy(pair(0.018), sigma=0.02), (1.2, 1.46), n_phases="auto")
    assert apart.n_phases == 2 and apart.note == ""
    assert apart.centers == pytest.approx((1.327, 1.345), abs=5e-4)


def test_a_second_phase_must_stand_out_of_its_centre_errors():
    """Resolved but buried in noise: BIC may prefer two peaks; their centres are then
    not several sigma apart, and one phase is kept."""
    truth = 40 + xrd.pseudo_voigt(Q_GRID, 1.327, 0.012, 0.3, 2.0) + xrd.pseudo_voigt(Q_GRID, 1.345, 0.012, 0.3, 0.3)
    fit = xrd.fit_reflection(Q_GRID, noisy(truth, sigma=0.5), (1.2, 1.46), n_phases="auto")
    assert fit.n_phases == 2
    separation = (fit.centers[1] - fit.centers[0]) / math.hypot(*fit.center_errors)
    strict = xrd.fit_reflection(Q_GRID, noisy(truth, sigma=0.5), (1.2, 1.46), n_phases="auto",
                                min_sigmas=1.1 * separation)
    assert strict.n_phases == 1 and strict.note.endswith(f"sigma apart (< {1.1 * separation})")


def test_auto_keeps_one_phase_for_an_unresolved_pair():
    """A shoulder closer than half a width reads as one broadened peak, not two phases."""
    truth = (
        40
        + xrd.pseudo_voigt(Q_GRID, 1.327, 0.012, 0.3, area=2.0)
        + xrd.pseudo_voigt(Q_GRID, 1.330, 0.012, 0.3, area=1.0)
    )
    fit = xrd.fit_reflection(Q_GRID, noisy(truth, sigma=0.05), (1.2, 1.46), n_phases="auto")
    assert fit.n_phases == 1


def test_excluding_the_al_line_keeps_the_fit_on_the_reflection():
    q = Q_GRID + 1.2
    al_111 = xrd.al_reflections((2.6, 2.8))[0].q
    data = noisy(
        30 + xrd.pseudo_voigt(q, 2.645, 0.012, 0.3, 2.0) + xrd.pseudo_voigt(q, al_111, 0.008, 0.1, 4.0)
    )
    window = (2.58, 2.74)
    excluded = xrd.fit_reflection(q, data, window, exclude=[(al_111 - 0.025, al_111 + 0.025)])
    included = xrd.fit_reflection(q, data, window)
    assert excluded.centers[0] == pytest.approx(2.645, abs=3e-4)
    assert abs(included.centers[0] - 2.645) > 3e-3


@pytest.mark.parametrize("eta, ratio", [(1.0, 1.0), (0.0, 0.0)])
def test_lorentzian_width_follows_the_mixing(eta, ratio):
    truth = 10 + xrd.pseudo_voigt(Q_GRID, 1.33, 0.012, eta, area=2.0)
    fit = xrd.fit_reflection(Q_GRID, noisy(truth, sigma=0.01), (1.2, 1.46))
    assert fit.fwhm_lorentzian[0] == pytest.approx(ratio * 0.012, abs=1e-4)


def test_fit_rejects_unknown_phase_count():
    with pytest.raises(ValueError, match="n_phases"):
        xrd.fit_reflection(Q_GRID, Q_GRID, (1.2, 1.46), n_phases=3)


def test_tch_gaussian_fwhm_inverts_the_thompson_cox_hastings_total():
    """G and L make a total FWHM by TCH's fifth-order sum; the total and L give G back."""
    from nanostrain.analysis.xrd import tch_gaussian_fwhm

    gauss = np.array([0.02, 0.05, 0.1, 0.1])
    lorentz = np.array([0.0, 0.01, 0.05, 0.2])
    total = (gauss**5 + 2.69269 * gauss**4 * lorentz + 2.42843 * gauss**3 * lorentz**2
             + 4.47163 * gauss**2 * lorentz**3 + 0.07842 * gauss * lorentz**4 + lorentz**5) ** 0.2

    np.testing.assert_allclose(tch_gaussian_fwhm(total, lorentz), gauss, rtol=1e-9)
    assert tch_gaussian_fwhm(0.05, 0.06) == 0.0  # a Lorentzian wider than the whole line
