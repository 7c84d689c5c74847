"""XRD conventions cross-checked against pyFAI on a tilted PerkinElmer panel.

Our forward model (`sim.powder`) and our inverse (`analysis.xrd.Integrator`) both take
pixel Q from `analysis.xrd.pixel_q`, so an error there (a unit, 2 pi, theta for 2 theta)
would cancel between them. These tests pin every convention to something independent:
the PONI geometry written out from its definition, pyFAI's own arrays and units, and
pyFAI's own forward model (``Calibrant.fake_calibration_image``) and inverse
(``integrate1d``) facing ours.
"""

from __future__ import annotations

import math

import numpy as np
import pyFAI.units
import pytest
from pyFAI.calibrant import get_calibrant

from nanostrain.analysis import units
from nanostrain.analysis.xrd import Integrator, fit_reflection, perkinelmer_geometry, pixel_q
from nanostrain.sim.powder import PowderRenderer

pytestmark = pytest.mark.filterwarnings("error")

WAVELENGTH_A = 0.1665
#: detector tilt of the issue's calibration target (rad); rot3 turns the panel in its
#: own plane and leaves 2 theta alone
TILT = {"rot1": 0.01, "rot2": -0.005, "rot3": 0.02}
NPT = 800
Q_RANGE = (1.0, 5.0)
#: pyFAI computes Q per pixel in float32: |error| <= eps32 Q_max ~ 1e-6 1/A (1e-6 of the
#: (003), a hundredth of the smallest strain of interest); 2 theta and d are float64
Q_ATOL = 2e-6


@pytest.fixture(scope="module")
def tilted():
    """PerkinElmer binned 2x (1024 x 1024, 400 um) at 1.2 m, beam off centre, tilted."""
    ai = perkinelmer_geometry(1.2, WAVELENGTH_A, binning=2, center_px=(480.3, 540.7))
    for name, value in TILT.items():
        setattr(ai, name, value)
    return ai


@pytest.fixture(scope="module")
def integrator(tilted):
    return Integrator(tilted, npt=NPT, q_range=Q_RANGE)


@pytest.fixture(scope="module")
def ceo2():
    calibrant = get_calibrant("CeO2")
    calibrant.wavelength = WAVELENGTH_A * units.M_PER_A
    return calibrant


def poni_two_theta(ai) -> np.ndarray:
    """2 theta (rad) of every pixel centre from the PONI definition: the pixel at
    t = (d1 - poni1, d2 - poni2, L) in the detector frame is seen at
    cos(2 theta) = (t1 sin rot2 - t2 cos rot2 sin rot1 + L cos rot1 cos rot2) / |t|."""
    rows, cols = ai.detector.shape
    d1 = (np.arange(rows)[:, None] + 0.5) * ai.detector.pixel1
    d2 = (np.arange(cols)[None, :] + 0.5) * ai.detector.pixel2
    t1, t2, length = d1 - ai.poni1, d2 - ai.poni2, ai.dist
    along_beam = (t1 * math.sin(ai.rot2) - t2 * math.cos(ai.rot2) * math.sin(ai.rot1)
                  + length * math.cos(ai.rot1) * math.cos(ai.rot2))
    return np.arccos(along_beam / np.sqrt(t1**2 + t2**2 + length**2))


def isolated_ceo2_q(calibrant, q_range, gap: float = 0.15) -> list[float]:
    """Q (1/A) of the CeO2 lines in q_range with no other line closer than gap."""
    q = [2 * math.pi / d for d in calibrant.dspacing]
    return [x for x in q if q_range[0] + gap < x < q_range[1] - gap and sorted(abs(x - y) for y in q)[1] > gap]


# --------------------------------------------------------------------------------------
# Per pixel
# --------------------------------------------------------------------------------------
def test_pyfai_two_theta_is_the_poni_geometry_as_defined(tilted):
    np.testing.assert_allclose(tilted.center_array(unit="2th_rad"), poni_two_theta(tilted), rtol=0, atol=1e-10)


def test_pixel_q_is_pyfai_q_in_inverse_angstrom(tilted):
    np.testing.assert_allclose(pixel_q(tilted), tilted.array_from_unit(unit="q_A^-1"), rtol=1e-12)


def test_pixel_q_is_four_pi_sin_theta_over_lambda_of_the_poni_two_theta(tilted):
    expected = 4 * math.pi * np.sin(poni_two_theta(tilted) / 2) / WAVELENGTH_A
    np.testing.assert_allclose(pixel_q(tilted), expected, rtol=0, atol=Q_ATOL)


def test_two_theta_from_pixel_q_is_pyfai_two_theta(tilted):
    ours = units.q_to_two_theta(pixel_q(tilted), WAVELENGTH_A)
    # dQ = 1e-6 1/A is d(2 theta) = lambda / (2 pi cos theta) dQ < 2e-6 degrees
    np.testing.assert_allclose(ours, tilted.array_from_unit(unit="2th_deg"), rtol=0, atol=5e-6)


# --------------------------------------------------------------------------------------
# analysis.units against pyFAI's units
# --------------------------------------------------------------------------------------
def test_hc_is_pyfai_hc():
    assert units.HC_EV_A == pytest.approx(pyFAI.units.hc * 1e3, rel=1e-15)  # pyFAI: keV * A


def test_wavelength_of_an_energy_is_pyfai_wavelength():
    ai = perkinelmer_geometry(binning=16)
    ai.energy = 74.5  # keV, 0.1665 A
    assert units.wavelength_A(74.5e3) == pytest.approx(ai.wavelength / units.M_PER_A, rel=1e-14)
    assert units.energy_eV(ai.wavelength / units.M_PER_A) == pytest.approx(74.5e3, rel=1e-14)


def test_q_d_and_two_theta_conversions_agree_with_pyfai_units(tilted):
    two_theta = tilted.array_from_unit(unit="2th_deg")
    d = tilted.array_from_unit(unit="d_A")
    q = tilted.array_from_unit(unit="q_A^-1")
    np.testing.assert_allclose(units.two_theta_to_d(two_theta, WAVELENGTH_A), d, rtol=1e-12)
    np.testing.assert_allclose(units.d_to_two_theta(d, WAVELENGTH_A), two_theta, rtol=1e-12)
    np.testing.assert_allclose(units.two_theta_to_q(two_theta, WAVELENGTH_A), q, rtol=0, atol=Q_ATOL)
    np.testing.assert_allclose(units.d_to_q(d), q, rtol=0, atol=Q_ATOL)
    np.testing.assert_allclose(units.q_to_d(units.d_to_q(d)), d, rtol=1e-14)
    np.testing.assert_allclose(1 / d**2, tilted.array_from_unit(unit="d*2_A^-2"), rtol=1e-12)


# --------------------------------------------------------------------------------------
# Integration and forward models, each against the other side's
# --------------------------------------------------------------------------------------
def test_integrator_q_axis_and_sums_match_pyfai_integrate1d(tilted, integrator, ceo2):
    """Same bins as pyFAI without pixel splitting: our bin Q (the mean Q of its pixels)
    within a tenth of a bin of pyFAI's bin centre, and the same averages."""
    frame = ceo2.fake_calibration_image(tilted, Imax=1000.0, Imin=10.0, resolution=0.06)
    q, intensity = integrator(frame)
    reference = tilted.integrate1d(frame, NPT, unit="q_A^-1", radial_range=Q_RANGE,
                                   method=("no", "histogram", "cython"))
    bin_width = (Q_RANGE[1] - Q_RANGE[0]) / NPT
    assert np.max(np.abs(q - reference.radial)) < 0.1 * bin_width
    filled = np.isfinite(intensity) & (reference.count > 0)
    assert filled.mean() > 0.99
    relative = np.abs(intensity[filled] / reference.intensity[filled] - 1)
    assert np.median(relative) < 1e-5


def test_rings_pyfai_draws_are_found_by_our_integration_at_their_d(tilted, integrator, ceo2):
    """pyFAI's forward model (its CeO2 rings on the tilted panel), our inverse."""
    frame = ceo2.fake_calibration_image(tilted, Imax=1000.0, Imin=10.0, resolution=0.06)
    q, intensity = integrator(frame)
    lines = isolated_ceo2_q(ceo2, Q_RANGE)
    assert len(lines) >= 4
    for line in lines:
        fit = fit_reflection(q, intensity, (line - 0.08, line + 0.08))
        assert fit.centers[0] == pytest.approx(line, rel=2e-5), line


def test_rings_we_draw_are_found_by_pyfai_integration_at_their_d(tilted, ceo2):
    """Our forward model (`sim.powder` CeO2 on the tilted panel), pyFAI's inverse."""
    frame = PowderRenderer(tilted).render_calibrant(1.0, np.random.default_rng(4))
    reference = tilted.integrate1d(frame, NPT, unit="q_A^-1", radial_range=Q_RANGE)
    lines = isolated_ceo2_q(ceo2, Q_RANGE)
    for line in lines:
        fit = fit_reflection(reference.radial, reference.intensity, (line - 0.06, line + 0.06))
        assert fit.centers[0] == pytest.approx(line, rel=2e-5), line
