"""Powder frames with known answers: rendered, integrated (analysis.xrd.Integrator) and
fitted, they must show the lattice, phases, widths and counting statistics put in."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyFAI.calibrant import get_calibrant

from nanostrain.analysis.xrd import (
    AL_LATTICE_A,
    Integrator,
    fit_reflection,
    perkinelmer_geometry,
    r3m_reflections,
    williamson_hall,
)
from nanostrain.analysis.units import fwhm_q_to_two_theta, q_to_two_theta
from nanostrain.sim.cathode import LatticeState
from nanostrain.sim.powder import (
    CEO2_LATTICE_A,
    LAYERED_OXIDE_RELATIVE_AREAS,
    SCHERRER_K,
    PowderRenderer,
)

WAVELENGTH_A = 0.1665


def lattice(*shells: tuple[float, float, float]) -> LatticeState:
    """LatticeState from (a, c, weight) shells."""
    a, c, w = (np.array(x, dtype=float) for x in zip(*shells))
    return LatticeState(a_A=a, c_A=c, weight=w)


@pytest.fixture(scope="module")
def geometry():
    """PerkinElmer binned 4x (512 x 512, 800 um) at 1.5 m, 0.1665 A."""
    return perkinelmer_geometry(1.5, WAVELENGTH_A, binning=4)


@pytest.fixture(scope="module")
def renderer(geometry):
    return PowderRenderer(geometry)


@pytest.fixture(scope="module")
def integrate(geometry):
    return Integrator(geometry, npt=700, q_range=(0.5, 5.0))


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def line_q(hkl, a, c) -> float:
    (line,) = [x for x in r3m_reflections(a, c, (0.5, 6.0)) if x.hkl == hkl]
    return line.q


def test_003_sits_at_2pi_3_over_c(renderer, integrate, rng):
    frame = renderer.render(lattice((2.870, 14.20, 1.0)), 0.0, 4e4, 1.0, rng)

    fit = fit_reflection(*integrate(frame), (1.22, 1.44))

    assert fit.centers[0] == pytest.approx(2 * math.pi * 3 / 14.20, abs=3e-4)
    assert 3 * fit.d[0] == pytest.approx(14.20, abs=0.003)


def test_two_shells_give_two_003_peaks_at_their_c(renderer, integrate, rng):
    frame = renderer.render(lattice((2.870, 14.40, 0.6), (2.840, 13.70, 0.4)), 0.0, 4e4, 1.0, rng)

    fit = fit_reflection(*integrate(frame), (1.22, 1.46), n_phases="auto")

    assert fit.n_phases == 2
    assert sorted(3 * d for d in fit.d) == pytest.approx([13.70, 14.40], abs=0.005)
    # areas follow the volume weights (x the 1/Q^2 Lorentz factor: the H3 line is at higher Q)
    assert fit.fractions[0] == pytest.approx(0.6, abs=0.05)


def test_al_current_collector_lines_at_fcc_positions(geometry, integrate, rng):
    frame = PowderRenderer(geometry, cathode_area=0.0).render(None, 0.0, 4e4, 1.0, rng)
    q, intensity = integrate(frame)

    for hkl in ((1, 1, 1), (2, 0, 0), (2, 2, 0)):
        expected = 2 * math.pi * math.sqrt(sum(i * i for i in hkl)) / AL_LATTICE_A
        fit = fit_reflection(q, intensity, (expected - 0.08, expected + 0.08))
        assert fit.centers[0] == pytest.approx(expected, abs=3e-4), hkl


def test_calibrant_lines_at_pyfai_ceo2_d_spacings(geometry, integrate, rng):
    frame = PowderRenderer(geometry).render_calibrant(1.0, rng)
    q, intensity = integrate(frame)

    for d in get_calibrant("CeO2").dspacing[:4]:
        fit = fit_reflection(q, intensity, (2 * math.pi / d - 0.06, 2 * math.pi / d + 0.06))
        assert fit.d[0] == pytest.approx(d, rel=2e-4)
    assert get_calibrant("CeO2").dspacing[0] == pytest.approx(CEO2_LATTICE_A / math.sqrt(3))


def test_microstrain_and_size_broaden_lines_by_williamson_hall():
    """1D pattern of the full-resolution panel: the Lorentzian widths of isolated lines
    are 2 pi K / D + 2 eps Q, and Williamson-Hall gives back D and eps."""
    renderer = PowderRenderer(perkinelmer_geometry(1.5, WAVELENGTH_A), al_area=0.0)
    q = np.linspace(1.0, 5.0, 16000)
    eps, size = 2e-3, 2000.0
    pattern = renderer.render_pattern_1d(q, lattice((2.87, 14.2, 1.0)), eps, size)

    centres, widths = [], []
    for hkl in ((0, 0, 3), (1, 0, 1), (1, 0, 4), (1, 1, 3)):
        expected_q = line_q(hkl, 2.87, 14.2)
        fit = fit_reflection(q, pattern, (expected_q - 0.05, expected_q + 0.05))
        assert fit.fwhm_lorentzian[0] == pytest.approx(2 * math.pi * SCHERRER_K / size + 2 * eps * expected_q, rel=0.03)
        centres.append(fit.centers[0])
        widths.append(fit.fwhm_lorentzian[0])
    result = williamson_hall(
        q_to_two_theta(centres, WAVELENGTH_A), fwhm_q_to_two_theta(widths, centres, WAVELENGTH_A), WAVELENGTH_A
    )

    assert result.microstrain == pytest.approx(eps, rel=0.05)
    assert result.size_A == pytest.approx(size, rel=0.1)


def test_line_areas_follow_the_documented_table(geometry):
    q = np.linspace(1.0, 4.0, 12000)
    pattern = PowderRenderer(geometry, al_area=0.0).render_pattern_1d(q, lattice((2.87, 14.2, 1.0)), 0.0, 1e5)
    areas = {}
    for hkl in ((0, 0, 3), (1, 0, 1), (1, 0, 4)):
        centre = line_q(hkl, 2.87, 14.2)
        areas[hkl] = fit_reflection(q, pattern, (centre - 0.05, centre + 0.05)).areas[0]

    for hkl in ((1, 0, 1), (1, 0, 4)):
        ratio = 100 * areas[hkl] / areas[(0, 0, 3)]
        assert ratio == pytest.approx(LAYERED_OXIDE_RELATIVE_AREAS[hkl], rel=0.05)
    assert max(LAYERED_OXIDE_RELATIVE_AREAS, key=LAYERED_OXIDE_RELATIVE_AREAS.get) == (0, 0, 3)


@pytest.mark.parametrize("exposure_s", [0.002, 2.0])  # mean counts ~6 (Poisson draws), ~6000 (normal)
def test_counts_are_poisson_around_the_expected_frame(geometry, rng, exposure_s):
    renderer = PowderRenderer(geometry, cathode_area=0.0, al_area=0.0)
    expected = renderer.expected_frame(None, 0.0, 4e4, exposure_s).astype(float)

    z = (renderer.render(None, 0.0, 4e4, exposure_s, rng) - expected) / np.sqrt(expected)

    assert z.mean() == pytest.approx(0.0, abs=0.01)
    assert z.std() == pytest.approx(1.0, abs=0.02)


def test_expected_counts_scale_with_exposure_and_flux(geometry):
    renderer = PowderRenderer(geometry, dark_rate=20.0)
    cell = lattice((2.87, 14.2, 1.0))
    one = renderer.expected_frame(cell, 0.0, 4e4, 1.0)

    np.testing.assert_allclose(renderer.expected_frame(cell, 0.0, 4e4, 3.0), 3 * one, rtol=1e-5)
    half = renderer.expected_frame(cell, 0.0, 4e4, 1.0, flux_scale=0.5)
    np.testing.assert_allclose(half - 20.0, (one - 20.0) / 2, rtol=1e-4)  # the dark does not halve
    np.testing.assert_allclose(renderer.expected_frame(cell, 0.0, 4e4, 2.0, flux_scale=0.0), 40.0)


def test_bad_inputs_are_refused(renderer, rng):
    with pytest.raises(ValueError, match="crystallite_size_A"):
        renderer.render(lattice((2.87, 14.2, 1.0)), 0.0, 0.0, 1.0, rng)
    with pytest.raises(ValueError, match="microstrain"):
        renderer.render(lattice((2.87, 14.2, 1.0)), -1e-3, 4e4, 1.0, rng)
    with pytest.raises(ValueError, match="exposure_s"):
        renderer.render(lattice((2.87, 14.2, 1.0)), 0.0, 4e4, -1.0, rng)
