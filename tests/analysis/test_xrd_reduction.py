"""Known answers of the operando XRD reducer (analysis.xrd_reduction), without bluesky:
frames drawn by `sim.powder.PowderRenderer` from cells of known a, c, phase mix,
microstrain and size, reduced frame by frame by `XrdReducer`."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from nanostrain.analysis.xrd import cell_volume
from nanostrain.analysis.xrd_reduction import (
    Q003_WINDOW,
    SIZE_UNRESOLVED,
    XrdFrame,
    XrdReducer,
    default_npt,
    isolated_reflections,
)
from nanostrain.sim.cathode import CathodeParticle, LatticeState, c_populations

LARGE_GRAINS_A = 2e4  # crystallite size that leaves the lines instrument-limited


def lattice(*shells: tuple[float, float, float]) -> LatticeState:
    """LatticeState from (a, c, weight) shells."""
    a, c, w = (np.array(x, dtype=float) for x in zip(*shells))
    return LatticeState(a_A=a, c_A=c, weight=w)


def draw(renderer, shells, microstrain=0.0, size_A=LARGE_GRAINS_A, seed=0):
    return renderer.render(lattice(*shells), microstrain, size_A, 1.0, np.random.default_rng(seed))


def test_default_bins_are_one_pixel_wide(geometry, integrator):
    """dQ = (2 pi / lambda) p / D = 37.7 x 400e-6 / 1.5 = 0.01006 1/A over 0.5..5 1/A."""
    assert default_npt(geometry, 5.0) == int(4.5 / (2 * math.pi / 0.1665 * 400e-6 / 1.5)) == 447
    assert integrator.npt == 447 and integrator.q_range == (0.5, 5.0)


def test_isolated_reflections_keep_only_uncrowded_lines():
    """Pristine cell (2.87, 14.2 A), Q in 1/A: (101) 2.566 is 0.089 from (006) 2.655;
    (104) 3.086 is 0.017 from Al (200) 3.103; (015) 3.359 and (113) 4.575 are > 0.19
    from any line; (006)/(012), (009)/(107), (018)/(110)/Al (220) are pairs < 0.03 apart."""
    assert {line.hkl for line in isolated_reflections(2.87, 14.2, (1.46, 5.0), 0.1)} == {(0, 1, 5), (1, 1, 3)}
    assert {line.hkl for line in isolated_reflections(2.87, 14.2, (1.46, 5.0), 0.05)} == {
        (1, 0, 1), (0, 1, 5), (1, 1, 3)}
    assert isolated_reflections(2.87, 14.2, (1.0, 1.46), 0.05) == []  # (003) alone, excluded


def test_a_single_phase_frame_gives_a_c_and_volume(renderer, integrator):
    result = XrdReducer(integrator).add(draw(renderer, [(2.870, 14.20, 1.0)]))
    assert result.n_phases == 1
    assert result.a_A == pytest.approx(2.870, abs=5e-4)
    assert result.c_A == pytest.approx(14.20, abs=2e-3)
    assert result.volume_A3 == pytest.approx(float(cell_volume(2.870, 14.20)), rel=5e-4)
    assert result.q003 == pytest.approx(2 * math.pi * 3 / 14.20, rel=2e-4)
    assert result.n_reflections >= 3
    assert math.isnan(result.c_phase2) and result.phase_separation_A == 0.0
    assert result.intensity.shape == (integrator.npt,)


def test_coexisting_h2_and_h3_are_two_phases_with_their_c_and_area_fraction(renderer, integrator):
    shells = [(2.82, 14.40, 0.6), (2.82, 13.90, 0.4)]
    result = XrdReducer(integrator).add(draw(renderer, shells))
    # the (003) area of each phase alone, from the noise-free pattern the frames sample
    q = integrator.q
    window = (q >= Q003_WINDOW[0]) & (q <= Q003_WINDOW[1])
    without_cathode = renderer.render_pattern_1d(q, None)
    areas = [w * np.trapezoid((renderer.render_pattern_1d(q, lattice((a, c, 1.0))) - without_cathode)[window], q[window])
             for a, c, w in shells]
    assert result.n_phases == 2
    assert result.c_phase1 == pytest.approx(14.40, abs=2e-3)
    assert result.c_phase2 == pytest.approx(13.90, abs=2e-3)
    assert result.phase_separation_A == pytest.approx(0.50, abs=3e-3)
    assert result.fraction_phase2 == pytest.approx(areas[1] / sum(areas), abs=0.005)


DEMO_EXPOSURE_S = 0.5  # the demo's operando frames


def cycled_particle(material: str, charge_to_V: float, discharge_to_V: float | None = None) -> CathodeParticle:
    """A single-crystal particle charged at 200 mA/g to charge_to_V, then discharged to
    discharge_to_V if given (0.25 mAh/g steps)."""
    particle = CathodeParticle(material, "SC")
    dt_s = 0.25 * 3600.0 / 200.0
    while particle.potential_V < charge_to_V:
        particle.step(200.0, dt_s)
    while discharge_to_V is not None and particle.potential_V > discharge_to_V:
        particle.step(-200.0, dt_s)
    return particle


@pytest.mark.parametrize(("material", "charge_to_V", "discharge_to_V"),
                         [("NC91", 3.6, None), ("NM91", 3.65, None), ("NC91", 4.3, 3.6), ("NM91", 4.3, 3.4)])
def test_single_phase_frames_at_low_state_of_charge_are_never_two_phase(renderer, integrator, material,
                                                                        charge_to_V, discharge_to_V):
    """Particles whose c varies across the shells by < 0.03 A (one population at the
    resolution of (003), `c_populations`) over 12 noise draws of 0.5 s frames: a second
    phase is never reported. (BIC alone split up to half of such frames, dc ~0.1 A.)"""
    particle = cycled_particle(material, charge_to_V, discharge_to_V)
    lattice_state, microstrain = particle.lattice(), particle.microstrain()
    assert not c_populations(lattice_state).is_bimodal() and np.ptp(lattice_state.c_A) < 0.03
    size_A = 2e4 * particle.radius_um
    for seed in range(12):
        frame = renderer.render(lattice_state, microstrain, size_A, DEMO_EXPOSURE_S, np.random.default_rng(seed))
        result = XrdReducer(integrator).add(frame)
        assert result.n_phases == 1 and result.phase_separation_A == 0.0, (seed, result.c_phase1, result.c_phase2)


@pytest.mark.parametrize("dc_A", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("fraction_h3", [0.2, 0.5, 0.8])
def test_genuinely_split_h2_h3_frames_are_two_phase(renderer, integrator, dc_A, fraction_h3):
    """H2 (c = 14.40 A) and H3 (14.40 - dc) coexisting, dc 0.3-0.7 A, over 3 noise draws."""
    shells = [(2.82, 14.40, 1 - fraction_h3), (2.82, 14.40 - dc_A, fraction_h3)]
    for seed in range(3):
        frame = renderer.render(lattice(*shells), 0.0, LARGE_GRAINS_A, DEMO_EXPOSURE_S, np.random.default_rng(seed))
        result = XrdReducer(integrator).add(frame)
        assert result.n_phases == 2, seed
        assert result.phase_separation_A == pytest.approx(dc_A, abs=0.01)


def test_the_simulated_h2_h3_reaction_front_is_two_phase(renderer, integrator):
    """SC-NM91 charged to 4.3 V holds an H3 shell over an H2 core (`c_populations`
    bimodal): two phases, split by the populations' splitting."""
    particle = cycled_particle("NM91", 4.3)
    populations = c_populations(particle.lattice())
    assert populations.is_bimodal()
    frame = renderer.render(particle.lattice(), particle.microstrain(), 2e4 * particle.radius_um, DEMO_EXPOSURE_S,
                            np.random.default_rng(0))
    result = XrdReducer(integrator).add(frame)
    assert result.n_phases == 2
    assert result.phase_separation_A == pytest.approx(populations.splitting_A, abs=0.03)


@pytest.mark.parametrize(("microstrain", "size_A"), [(1.5e-3, 1000.0), (1.0e-3, 2000.0)])
def test_williamson_hall_gives_back_the_microstrain_and_size_drawn(renderer, integrator, microstrain, size_A):
    """Lorentzian sample widths 2 pi K / D + 2 eps Q on a Gaussian instrument width."""
    result = XrdReducer(integrator).add(draw(renderer, [(2.87, 14.2, 1.0)], microstrain, size_A))
    assert result.microstrain == pytest.approx(microstrain, rel=0.05)
    assert result.size_A == pytest.approx(size_A, rel=0.12)


@pytest.mark.parametrize(("size_A", "instrument_fwhm_deg"), [(math.inf, 0.0), (LARGE_GRAINS_A, 0.05)])
def test_size_is_nan_with_a_reason_never_inf_when_no_size_broadening_is_resolved(
        renderer, integrator, size_A, instrument_fwhm_deg):
    """Lines without size broadening (no microstrain either), or an instrument width
    (0.05 deg) wider than every line: 1/D is not resolved, size_A is NaN with the note."""
    reducer = XrdReducer(integrator, instrument_fwhm_deg=instrument_fwhm_deg)
    for seed in range(4):
        result = reducer.add(draw(renderer, [(2.87, 14.2, 1.0)], size_A=size_A, seed=seed))
        assert result.n_reflections >= 3 and result.reason == ""
        assert math.isnan(result.size_A) and result.size_note == SIZE_UNRESOLVED


def test_a_resolved_size_has_no_size_note(renderer, integrator):
    result = XrdReducer(integrator).add(draw(renderer, [(2.87, 14.2, 1.0)], 1.5e-3, 1000.0))
    assert math.isfinite(result.size_A) and result.size_note == ""


def test_strain_lattice_change_and_reference_follow_the_first_frame(renderer, integrator):
    reducer = XrdReducer(integrator)
    first = reducer.add(draw(renderer, [(2.870, 14.20, 1.0)], seed=1))
    second = reducer.add(draw(renderer, [(2.860, 14.35, 1.0)], seed=2))
    assert (first.strain_a, first.strain_c, first.strain_volume, first.lattice_change_A) == (0.0, 0.0, 0.0, 0.0)
    assert (reducer.a0, reducer.c0) == (first.a_A, first.c_A)
    assert second.strain_c == pytest.approx(14.35 / 14.20 - 1, abs=2e-4)
    assert second.strain_a == pytest.approx(2.860 / 2.870 - 1, abs=2e-4)
    expected_volume = float(cell_volume(2.860, 14.35) / cell_volume(2.870, 14.20)) - 1
    assert second.strain_volume == pytest.approx(expected_volume, abs=5e-4)
    assert second.lattice_change_A == pytest.approx(abs(second.c_A - first.c_A), abs=1e-12)
    assert second.lattice_change_A == pytest.approx(0.15, abs=3e-3)
    assert reducer.n_frames == 2


def test_a_given_reference_cell_is_the_zero_of_strain(renderer, integrator):
    reducer = XrdReducer(integrator, reference_a_A=2.880, reference_c_A=14.30)
    result = reducer.add(draw(renderer, [(2.870, 14.20, 1.0)]))
    assert result.strain_a == pytest.approx(2.870 / 2.880 - 1, abs=2e-4)
    assert result.strain_c == pytest.approx(14.20 / 14.30 - 1, abs=2e-4)
    assert (reducer.a0, reducer.c0) == (2.880, 14.30)


def test_instrument_width_is_removed_before_williamson_hall(renderer, integrator):
    """An instrumental FWHM w (2 theta) subtracted from every line lowers each
    beta cos(theta) / (K lambda) by w cos(theta) / (K lambda), ~w / (K lambda) at these
    small angles (cos theta > 0.99): 1/D drops by that much, the slope (microstrain) and
    the lattice stay."""
    frame = draw(renderer, [(2.87, 14.2, 1.0)], 1.5e-3, 1000.0)
    plain = XrdReducer(integrator).add(frame)
    corrected = XrdReducer(integrator, instrument_fwhm_deg=0.002).add(frame)
    assert 1 / plain.size_A - 1 / corrected.size_A == pytest.approx(math.radians(0.002) / (0.9 * 0.1665), rel=0.01)
    assert corrected.microstrain == pytest.approx(plain.microstrain, rel=0.01)
    assert (corrected.a_A, corrected.c_A) == (plain.a_A, plain.c_A)


def test_results_are_frozen_and_scalars_are_every_field_but_the_pattern(renderer, integrator):
    result = XrdReducer(integrator).add(draw(renderer, [(2.87, 14.2, 1.0)]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.c_A = 0.0
    names = [f.name for f in dataclasses.fields(XrdFrame)]
    assert list(result.scalars()) == names[:-4] and names[-4:] == ["intensity", "quality", "reason", "size_note"]


def test_bad_settings_are_refused(integrator):
    with pytest.raises(ValueError, match="q003_window"):
        XrdReducer(integrator, q003_window=(1.46, 1.24))
    with pytest.raises(ValueError, match="q003_window"):
        XrdReducer(integrator, q003_window=(0.2, 1.4))
    with pytest.raises(ValueError, match="instrument_fwhm_deg"):
        XrdReducer(integrator, instrument_fwhm_deg=-0.01)
