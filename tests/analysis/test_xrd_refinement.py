"""Known answers of the sequential Pawley refinement (analysis.xrd_refinement): frames drawn
by `sim.powder.PowderRenderer` from cells of known a, c, H3 fraction and microstrain,
integrated once, refined with instrument terms measured on a CeO2 frame of the same
simulator (`ring_widths` -> `gsas_profile`), as the beamline measures them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nanostrain.analysis.xrd import GsasProfile, gsas_profile, hexagonal_d, second_phase_rejection
from nanostrain.analysis.xrd_calibration import ring_widths
from nanostrain.analysis.xrd_refinement import PawleyModel, SequentialRefinement
from nanostrain.sim.cathode import LatticeState

SIZE_A = 2e4  # instrument-limited lines
EPS = 0.002
TWO_PHASES = [(2.815, 14.30, 0.6), (2.812, 13.75, 0.4)]


@pytest.fixture(scope="module")
def instrument(geometry, renderer) -> GsasProfile:
    """Caglioti terms from the ring widths of a simulated CeO2 frame."""
    widths = ring_widths(renderer.render_calibrant(1.0, np.random.default_rng(1)), geometry, "CeO2", tuple(range(12)))
    return gsas_profile(*zip(*((w.two_theta_deg, w.gaussian_fwhm_deg, w.lorentzian_fwhm_deg) for w in widths)))


def pattern(renderer, integrator, shells, eps=EPS, exposure_s=1.0, seed=0):
    """I(Q) of a frame of the cells [(a, c, weight)] and its Poisson esd."""
    a, c, w = (np.array(x, dtype=float) for x in zip(*shells))
    frame = renderer.render(LatticeState(a, c, w), eps, SIZE_A, exposure_s, np.random.default_rng(seed))
    _, intensity = integrator(frame)
    return intensity, np.sqrt(np.clip(intensity, 0, None) / np.maximum(integrator.pixel_weight, 1e-12))


def refinement(integrator, instrument, **kwargs) -> SequentialRefinement:
    edges = np.linspace(*integrator.q_range, integrator.npt + 1)
    return SequentialRefinement(integrator.q, integrator.wavelength_A, instrument, bin_edges=edges, **kwargs)


def test_model_lists_r3m_families_and_al_lines(integrator, instrument):
    """(003), (101), (006), (012), (104) of the pristine cell and Al (111), (200), with
    Q = 2 pi / d of the hexagonal metric."""
    families = [(0, 0, 3), (1, 0, 1), (0, 0, 6), (0, 1, 2), (1, 0, 4)]
    model = PawleyModel(integrator.q, integrator.wavelength_A, instrument, 1, families, (1.0, 5.0))
    expected = 2 * np.pi / hexagonal_d(*np.array(families).T, 2.87, 14.2)
    assert model.layered_q(2.87, 14.2) == pytest.approx(expected, rel=1e-12)
    assert {(1, 1, 1), (2, 0, 0), (2, 2, 0)} <= set(model.al_hkl)


def test_model_lines_have_unit_area(integrator, instrument):
    """Each layered column carries (Q0/Q)^2 of a unit-area line (whole line inside the range)."""
    model = PawleyModel(integrator.q, integrator.wavelength_A, instrument, 1, [(0, 0, 3), (1, 0, 4)], (1.0, 5.0))
    theta = np.array([2.87, 14.2, 1e-4, 0.002, 4.0495])
    columns = model.basis(theta)[:, :2]
    areas = (columns * model.width[:, None]).sum(axis=0)
    assert areas == pytest.approx((1.0 / model.layered_q(2.87, 14.2)) ** 2, rel=0.03)  # tails cut at 20 FWHM


def test_single_phase_frame_gives_a_c_and_microstrain(renderer, integrator, instrument):
    intensity, esd = pattern(renderer, integrator, [(2.850, 14.30, 1.0)])
    result = refinement(integrator, instrument, start_a_A=2.83).add(intensity, esd)
    assert result.n_phases == 1
    assert result.a_A == pytest.approx(2.850, abs=1e-4)
    assert result.c_A == pytest.approx(14.30, abs=1e-3)
    assert result.microstrain == pytest.approx(EPS, rel=0.02)
    assert result.a_al_A == pytest.approx(4.0495, abs=1e-4)
    assert result.rwp < 0.01 and 0.8 < result.gof < 3


def test_two_phase_frame_gives_both_cells_and_the_fraction(renderer, integrator, instrument):
    """Fraction tolerance 0.01: f counts cells with one set of intensities for both
    phases, while the line areas of H3 sit at higher Q (|F|^2 lower by ~1 %)."""
    intensity, esd = pattern(renderer, integrator, TWO_PHASES)
    result = refinement(integrator, instrument, start_a_A=2.82).add(intensity, esd)
    assert result.n_phases == 2 and result.note == ""
    assert result.a_A == pytest.approx(2.815, abs=2e-4) and result.c_A == pytest.approx(14.30, abs=2e-3)
    assert result.a2_A == pytest.approx(2.812, abs=2e-4) and result.c2_A == pytest.approx(13.75, abs=2e-3)
    assert result.fraction_phase2 == pytest.approx(0.4, abs=0.01)
    assert result.microstrain == pytest.approx(EPS, rel=0.03)


def test_uncertainties_cover_the_truth(renderer, integrator, instrument):
    """Ten noise realizations of a short exposure (0.01 s, counting noise above the model
    mismatch): a and c within 1 sigma in >= half the cases (68 % expected) and within
    3 sigma in all."""
    z = []
    for seed in range(10):
        intensity, esd = pattern(renderer, integrator, [(2.850, 14.30, 1.0)], exposure_s=0.01, seed=100 + seed)
        r = refinement(integrator, instrument, start_a_A=2.83).add(intensity, esd)
        z += [(r.a_A - 2.850) / r.sigma_a_A, (r.c_A - 14.30) / r.sigma_c_A]
    z = np.abs(z)
    assert np.mean(z < 1) >= 0.5
    assert np.all(z < 3.5)


def test_a_sequence_follows_the_cell_and_splits_only_where_h3_appears(renderer, integrator, instrument):
    """Frames seeded one from the other: c grows (H2), then H3 appears at 30 %."""
    steps = [[(2.850, 14.30, 1.0)], [(2.830, 14.40, 1.0)], [(2.818, 14.40, 0.7), (2.814, 13.80, 0.3)]]
    seq = refinement(integrator, instrument, start_a_A=2.85)
    results = [seq.add(*pattern(renderer, integrator, shells, seed=i)) for i, shells in enumerate(steps)]
    assert [r.n_phases for r in results] == [1, 1, 2]
    assert results[1].a_A == pytest.approx(2.830, abs=2e-4) and results[1].c_A == pytest.approx(14.40, abs=2e-3)
    assert results[2].c2_A == pytest.approx(13.80, abs=2e-3) and results[2].fraction_phase2 == pytest.approx(0.3, abs=0.01)
    assert results[0].note.startswith("(003):")


def test_forced_two_phases_on_one_phase_is_rejected_in_auto(renderer, integrator, instrument):
    """n_phases=2 always reports two; the same frame in 'auto' keeps one."""
    intensity, esd = pattern(renderer, integrator, [(2.850, 14.30, 1.0)])
    forced = refinement(integrator, instrument, start_a_A=2.85, n_phases=2).add(intensity, esd)
    auto = refinement(integrator, instrument, start_a_A=2.85).add(intensity, esd)
    assert forced.n_phases == 2 and math.isfinite(forced.c2_A)
    assert auto.n_phases == 1 and math.isnan(auto.c2_A) and auto.fraction_phase2 == 0.0


def test_bad_input_is_refused(integrator, instrument):
    with pytest.raises(ValueError, match="contain the \\(003\\) window"):
        refinement(integrator, instrument, q_window=(2.0, 5.0))
    with pytest.raises(ValueError, match="shape"):
        refinement(integrator, instrument).add(np.ones(10))
    with pytest.raises(ValueError, match="bin_edges"):
        SequentialRefinement(integrator.q, integrator.wavelength_A, instrument, bin_edges=integrator.q)
    with pytest.raises(ValueError, match="n_phases"):
        refinement(integrator, instrument, n_phases=3)


@pytest.mark.parametrize(
    "bic, areas, centres, errors, note",
    [
        ({1: 0.0, 2: 1.0}, (1, 1), (1.30, 1.40), (1e-4, 1e-4), "BIC prefers one phase"),
        ({1: 1.0, 2: 0.0}, (0.02, 1), (1.30, 1.40), (1e-4, 1e-4), "less than 5%"),
        ({1: 1.0, 2: 0.0}, (1, 1), (1.30, 1.305), (1e-4, 1e-4), "FWHM apart"),
        ({1: 1.0, 2: 0.0}, (1, 1), (1.30, 1.40), (0.02, 0.02), "sigma apart"),
        ({1: 1.0, 2: 0.0}, (1, 1), (1.30, 1.40), (1e-4, 1e-4), ""),
    ],
)
def test_second_phase_rejection_names_the_failed_test(bic, areas, centres, errors, note):
    result = second_phase_rejection(bic, areas, centres, (0.01, 0.01), errors)
    assert (note in result) if note else result == ""
