"""The cathode particle model: conservation, curves, and the behaviour of the reference study."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import pytest

from nanostrain.sim.cathode import (
    CathodeParticle,
    Crack,
    LatticeState,
    SurfaceLayer,
    c_populations,
    galvanostatic_cycle,
    radial_field_to_grid,
    simulate_galvanostatic,
)
from nanostrain.sim.materials import NC91, NM91, CathodeMaterial, material

HIGH_POTENTIAL_V = 4.1  # SC-NM91 splits from ~4.1-4.3 V (SCIENCE.md section 1)


@dataclass(frozen=True)
class ChargePoint:
    potential_V: float
    capacity_mAh_g: float
    lattice: LatticeState


@cache
def first_charge(
    mat: CathodeMaterial | str, morphology: str, current_mA_g: float, aged_cycles: int = 0
) -> tuple[ChargePoint, ...]:
    """Lattice states recorded every 1 mAh/g from pristine to the 4.5 V cut-off."""
    particle = CathodeParticle(mat, morphology)
    if aged_cycles:
        particle.age(aged_cycles)
    points = []
    for point in galvanostatic_cycle(particle, current_mA_g, record_every_s=3600 / current_mA_g):
        if point.segment < 0:
            break
        points.append(ChargePoint(point.potential_V, point.capacity_mAh_g, particle.lattice()))
    return tuple(points)


def high_potential(points: tuple[ChargePoint, ...]) -> list[ChargePoint]:
    return [p for p in points if p.potential_V >= HIGH_POTENTIAL_V]


def c_spread_A(lattice: LatticeState) -> float:
    """Volume-weighted standard deviation of c."""
    return float(np.sqrt(np.dot(lattice.weight, (lattice.c_A - lattice.mean_c_A) ** 2)))


def bimodal_window_mAh_g(points: list[ChargePoint]) -> float:
    """Charge passed while H2 and H3 coexist (two populations with >= 10 % each)."""
    bimodal = [p.capacity_mAh_g for p in points if c_populations(p.lattice).is_bimodal()]
    return max(bimodal) - min(bimodal) if bimodal else 0.0


def max_splitting_A(points: list[ChargePoint]) -> float:
    splits = [c_populations(p.lattice) for p in points]
    return max((s.splitting_A for s in splits if s.is_bimodal()), default=0.0)


# --- material curves --------------------------------------------------------------


@pytest.mark.parametrize("mat", [NC91, NM91], ids=lambda m: m.name)
def test_ocv_decreases_strictly_with_li_fraction(mat):
    x = np.linspace(0.0, 1.0, 5001)
    assert np.all(np.diff(mat.ocv(x)) < 0.0)


@pytest.mark.parametrize("mat", [NC91, NM91], ids=lambda m: m.name)
def test_ocv_has_ni_rich_landmarks(mat):
    x = np.linspace(0.0, 1.0, 10001)
    u = mat.ocv(x)
    h2_h3 = x[(u >= 4.15) & (u <= 4.20)]  # plateau: 50 mV over >= 0.05 in x
    assert h2_h3.max() - h2_h3.min() >= 0.05 and 0.15 <= h2_h3.min() < h2_h3.max() <= 0.35
    assert 3.6 <= mat.ocv(0.9) <= 3.7
    assert mat.ocv(0.2) < 4.5 < mat.ocv(0.1)
    assert mat.ocv(1.0) < 2.7


@pytest.mark.parametrize("mat", [NC91, NM91], ids=lambda m: m.name)
def test_theoretical_capacity_is_one_li_per_formula_unit(mat):
    assert mat.theoretical_capacity_mAh_g == pytest.approx(275.0, abs=2.0)


def test_nm91_diffuses_an_order_of_magnitude_slower_with_a_deep_minimum():
    x = np.linspace(0.05, 0.95, 181)
    log_ratio = np.mean(np.log10(NC91.diffusivity(x)) - np.log10(NM91.diffusivity(x)))
    assert 0.8 <= log_ratio <= 1.3
    assert NM91.diffusivity(x).min() < 1e-12 < 1e-11 < NC91.diffusivity(x).min()
    assert x[np.argmin(NM91.diffusivity(x))] < 0.35  # at high delithiation


def test_diffusivity_follows_arrhenius():
    ratio = NC91.diffusivity(0.5, 318.15) / NC91.diffusivity(0.5, 298.15)
    expected = np.exp(0.40 / 8.617333262e-5 * (1 / 298.15 - 1 / 318.15))
    assert ratio == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("mat", [NC91, NM91], ids=lambda m: m.name)
def test_lattice_goes_through_h1_h2_h3(mat):
    x = np.linspace(0.05, 1.0, 951)
    c = mat.lattice.c(x)
    assert mat.lattice.a(1.0) == pytest.approx(2.87, abs=0.01)
    assert c[-1] == pytest.approx(14.2, abs=0.02)
    assert 14.4 <= c.max() <= 14.5
    assert np.all(np.diff(mat.lattice.a(x)) > 0)  # a shrinks on delithiation
    x_h3, w = mat.lattice.x_h3, mat.lattice.w_h3
    assert mat.lattice.c(x_h3 + 3 * w) - mat.lattice.c(x_h3 - 3 * w) > 0.3  # steep collapse


def test_ni_valence_by_charge_balance():
    assert NC91.ni_valence(np.array([1.0, 0.1])) == pytest.approx([3.0, 3.9])
    assert NM91.ni_valence(np.array([1.0, 0.1])) == pytest.approx([2.6 / 0.9, 3.5 / 0.9])


# --- numerics ---------------------------------------------------------------------


def test_charge_passed_equals_li_removed():
    particle = CathodeParticle("NM91", "SC")
    for current, dt in [(200.0, 2000.0), (0.0, 500.0), (-50.0, 1000.0), (20.0, 7200.0), (0.0, 1e5)]:
        particle.step(current, dt)
    shells = particle.shells
    removed = particle.specific_capacity_mAh_g * (1.0 - shells.x @ shells.volume_fraction)
    assert particle.capacity_mAh_g == pytest.approx(removed, rel=1e-10)
    assert particle.capacity_mAh_g == pytest.approx((200 * 2000 - 50 * 1000 + 20 * 7200) / 3600)


def test_one_long_step_matches_many_short_steps():
    long, short = CathodeParticle("NM91", "SC"), CathodeParticle("NM91", "SC")
    long.step(100.0, 3600.0)
    for _ in range(360):
        short.step(100.0, 10.0)
    assert long.x_mean == pytest.approx(short.x_mean, abs=1e-12)
    np.testing.assert_allclose(long.shells.x, short.shells.x, atol=2e-3)


def test_relaxation_removes_the_gradient_and_keeps_the_inventory():
    particle = CathodeParticle("NM91", "SC")
    particle.step(200.0, 1800.0)
    x_mean = particle.x_mean
    assert np.ptp(particle.shells.x) > 0.01
    particle.relax(1e7)  # one huge implicit step is stable
    assert np.ptp(particle.shells.x) < 1e-6
    assert particle.x_mean == pytest.approx(x_mean, abs=1e-12)


def test_potential_is_ocv_plus_a_signed_overpotential():
    particle = CathodeParticle("NC91", "SC")
    particle.step(100.0, 3600.0)
    charging = particle.potential_V - particle.open_circuit_potential_V
    particle.step(-100.0, 60.0)
    discharging = particle.potential_V - particle.open_circuit_potential_V
    particle.relax(60.0)
    assert charging > 0.01 and discharging < -0.01
    assert particle.potential_V == particle.open_circuit_potential_V


def test_shells_partition_the_sphere():
    shells = CathodeParticle("NC91", "PC", n_shells=20).shells
    assert shells.volume_fraction.sum() == pytest.approx(1.0)
    assert shells.radius_um[-1] == pytest.approx(0.25 * 39 / 40)


def test_bad_input_is_refused_before_the_state_changes():
    particle = CathodeParticle("NC91", "SC", x_initial=0.5)
    with pytest.raises(ValueError, match="outside"):
        particle.step(-20.0, 1e6)  # would need more Li than the lattice holds
    with pytest.raises(ValueError):
        particle.step(20.0, -1.0)
    assert particle.x_mean == pytest.approx(0.5) and particle.capacity_mAh_g == 0.0
    with pytest.raises(ValueError, match="unknown material"):
        material("NCM811")
    with pytest.raises(ValueError):
        CathodeParticle("NC91", "XX")
    with pytest.raises(ValueError):
        CathodeParticle("NC91", n_shells=2)
    with pytest.raises(ValueError, match="no calibrated fade"):
        CathodeParticle(replace(NC91, name="custom")).age(10)


# --- electrochemistry -------------------------------------------------------------


def test_galvanostatic_cycle_runs_between_the_cut_offs():
    result = simulate_galvanostatic(CathodeParticle("NC91", "PC"), 100.0)
    on_charge = result.segment > 0
    assert result.potential_V[on_charge][-1] >= 4.5
    assert result.potential_V[on_charge][:-1].max() < 4.5
    assert result.potential_V[-1] <= 2.7
    assert 0 < result.discharge_capacity_mAh_g <= result.charge_capacity_mAh_g
    assert np.all(np.diff(result.time_s) > 0)


def test_potential_is_monotonic_through_the_reaction_front():
    """The outer shell crossing the D minimum must not show up as a potential spike."""
    result = simulate_galvanostatic(CathodeParticle("NM91", "SC"), 200.0)
    on_charge = result.segment > 0
    assert np.all(np.diff(result.potential_V[on_charge]) > -1e-3)
    assert np.all(np.diff(result.potential_V[~on_charge]) < 1e-3)


@pytest.mark.parametrize("name", ["NC91", "NM91"])
def test_pc_first_charge_capacity_at_20_mA_g(name):
    capacity = first_charge(name, "PC", 20.0)[-1].capacity_mAh_g
    assert 230.0 <= capacity <= 250.0


def test_sc_nm91_loses_capacity_at_high_rate():
    slow = first_charge("NM91", "SC", 20.0)[-1].capacity_mAh_g
    fast = first_charge("NM91", "SC", 200.0)[-1].capacity_mAh_g
    assert fast < slow - 5.0


def test_sc_nm91_loses_more_capacity_at_high_rate_than_sc_nc91():
    def loss(name: str) -> float:
        slow, fast = first_charge(name, "SC", 20.0), first_charge(name, "SC", 200.0)
        return slow[-1].capacity_mAh_g - fast[-1].capacity_mAh_g

    assert loss("NM91") > 1.5 * loss("NC91")


# --- emergent structure: the reference study --------------------------------------


def test_sc_nm91_splits_into_h2_and_h3_at_high_potential():
    points = high_potential(first_charge("NM91", "SC", 200.0))
    split = [c_populations(p.lattice) for p in points]
    bimodal = [s for s in split if s.is_bimodal(min_fraction=0.1, max_dip_ratio=0.5)]
    assert bimodal, "no H2 + H3 coexistence above 4.1 V"
    widest = max(bimodal, key=lambda s: s.splitting_A)
    assert widest.splitting_A > 0.3
    assert min(sorted(widest.fraction)[-2:]) >= 0.1


def test_sc_nm91_coexistence_grows_with_rate():
    slow = high_potential(first_charge("NM91", "SC", 20.0))
    fast = high_potential(first_charge("NM91", "SC", 200.0))
    assert max_splitting_A(fast) > max_splitting_A(slow) + 0.05
    assert bimodal_window_mAh_g(fast) > 1.5 * bimodal_window_mAh_g(slow)


@pytest.mark.parametrize("current", [20.0, 200.0])
def test_sc_nc91_stays_single_phase(current):
    points = high_potential(first_charge("NC91", "SC", current))
    assert not any(c_populations(p.lattice).is_bimodal() for p in points)
    assert max(c_spread_A(p.lattice) for p in points) < 0.08


def test_the_split_follows_the_diffusivity_not_the_composition():
    """Swap the diffusivity curves: NC91 splits, NM91 stays single-phase."""
    nc91_slow = replace(NC91, name="NC91 with NM91 diffusivity", diffusivity=NM91.diffusivity)
    nm91_fast = replace(NM91, name="NM91 with NC91 diffusivity", diffusivity=NC91.diffusivity)
    assert max_splitting_A(high_potential(first_charge(nc91_slow, "SC", 200.0))) > 0.3
    assert max_splitting_A(high_potential(first_charge(nm91_fast, "SC", 200.0))) == 0.0


def test_sc_nm91_c_spread_exceeds_sc_nc91_by_far():
    nm91 = max(c_spread_A(p.lattice) for p in high_potential(first_charge("NM91", "SC", 200.0)))
    nc91 = max(c_spread_A(p.lattice) for p in high_potential(first_charge("NC91", "SC", 200.0)))
    assert nm91 > 3 * nc91


def test_pc_nm91_stays_single_phase_where_sc_nm91_splits():
    """Same material, 8x shorter diffusion length: the grains stay homogeneous."""
    points = high_potential(first_charge("NM91", "PC", 20.0))
    assert not any(c_populations(p.lattice).is_bimodal() for p in points)


@pytest.mark.parametrize(
    ("name", "c_contraction", "volume_shrinkage"), [("NC91", 6.0, 7.8), ("NM91", 3.6, 5.9)]
)
def test_pc_contraction_at_top_of_charge_matches_reference(name, c_contraction, volume_shrinkage):
    """c: from the H2 maximum to the 4.5 V top of charge; V: pristine to top of charge."""
    points = first_charge(name, "PC", 20.0)
    c_max = max(p.lattice.mean_c_A for p in points)
    top, pristine = points[-1].lattice, points[0].lattice
    assert 100 * (1 - top.mean_c_A / c_max) == pytest.approx(c_contraction, abs=0.5)
    shrinkage = 100 * (1 - top.mean_cell_volume_A3 / pristine.mean_cell_volume_A3)
    assert shrinkage == pytest.approx(volume_shrinkage, abs=0.5)


# --- ageing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "morph", "retention"),
    [("NC91", "PC", 0.597), ("NM91", "PC", 0.831), ("NC91", "SC", 0.892), ("NM91", "SC", 0.759)],
)
def test_retention_after_100_cycles_at_100_mA_g(name, morph, retention):
    fresh = simulate_galvanostatic(CathodeParticle(name, morph), 100.0)
    aged_particle = CathodeParticle(name, morph)
    aged_particle.age(100)
    aged = simulate_galvanostatic(aged_particle, 100.0)
    ratio = aged.discharge_capacity_mAh_g / fresh.discharge_capacity_mAh_g
    assert ratio == pytest.approx(retention, abs=0.01)


def test_ageing_increases_sc_nm91_heterogeneity():
    fresh = high_potential(first_charge("NM91", "SC", 100.0))
    aged = high_potential(first_charge("NM91", "SC", 100.0, aged_cycles=100))
    assert c_spread_A(aged[-1].lattice) > 10 * c_spread_A(fresh[-1].lattice)
    assert max(c_spread_A(p.lattice) for p in aged) > max(c_spread_A(p.lattice) for p in fresh)


# --- observables for the imaging simulators ---------------------------------------


def test_microstrain_is_zero_when_homogeneous_and_grows_with_the_gradient():
    particle = CathodeParticle("NM91", "SC")
    assert np.all(particle.microstrain() < 1e-12)
    particle.step(200.0, 3600.0)
    eps = particle.microstrain(coherence_um=0.1)
    assert eps.max() > 1e-4
    np.testing.assert_allclose(particle.microstrain(coherence_um=0.2), 2 * eps)


def test_c_populations_finds_two_separated_groups():
    c = np.r_[np.full(30, 14.40), np.full(20, 13.90)]
    weight = np.r_[np.full(30, 0.7 / 30), np.full(20, 0.3 / 20)]
    pops = c_populations(LatticeState(a_A=np.full(50, 2.83), c_A=c, weight=weight))
    assert pops.is_bimodal()
    assert pops.c_A == pytest.approx((14.40, 13.90), abs=0.005)
    assert pops.fraction == pytest.approx((0.7, 0.3), abs=0.01)
    assert pops.splitting_A == pytest.approx(0.5, abs=0.01)


def test_c_populations_sees_a_smooth_spread_as_one_population():
    c = np.linspace(14.30, 14.36, 50)
    pops = c_populations(LatticeState(a_A=np.full(50, 2.83), c_A=c, weight=np.full(50, 0.02)))
    assert not pops.is_bimodal()
    assert len(pops.c_A) == 1


def test_radial_field_to_grid_maps_the_profile_onto_a_sphere():
    values = np.linspace(1.0, 2.0, 10)  # shell i at r = (i + 0.5) * 0.1 um
    grid = radial_field_to_grid(values, (25, 25, 25), voxel_um=0.1, radius_um=1.0, outside=-1.0)
    assert grid.shape == (25, 25, 25)
    assert grid[12, 12, 12] == pytest.approx(1.0)  # centre voxel, r = 0: innermost shell
    assert grid[12, 12, 17] == pytest.approx(np.interp(0.5, np.arange(10) * 0.1 + 0.05, values))
    assert grid[12, 17, 12] == grid[17, 12, 12] == grid[12, 12, 17]  # spherical
    assert grid[0, 0, 0] == -1.0  # r = 2.08 um
    cross_section = radial_field_to_grid(values, (40, 40), voxel_um=0.1, radius_um=1.0)
    assert np.isnan(cross_section[0, 0]) and np.isfinite(cross_section[20, 20])


def test_radial_field_to_grid_surface_layer_and_crack():
    values = np.ones(10)
    grid = radial_field_to_grid(
        values,
        (41, 41),
        voxel_um=0.05,
        radius_um=1.0,
        outside=0.0,
        surface_layer=SurfaceLayer(thickness_um=0.1, value=5.0),
        crack=Crack(normal=(0.0, 1.0), width_um=0.1),
    )
    assert grid[20, 20] == 0.0  # the crack plane x = 0 runs through the centre
    assert grid[20, 10] == 1.0  # r = 0.5 um
    assert grid[20, 1] == 5.0  # r = 0.95 um, in the 0.1 um surface layer
    assert grid[0, 0] == 0.0  # r = 1.41 um, outside
