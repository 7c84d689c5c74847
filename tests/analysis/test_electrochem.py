"""Known-answer tests of nanostrain.analysis.electrochem: GITT (eq. 2 and the rest's
relaxation), four-point probe (eq. 3), capacities, coulombic efficiency, retention, dQ/dV."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nanostrain.analysis import electrochem as ec

pytestmark = pytest.mark.filterwarnings("error")

MASS_G = 0.004 * 1.54  # ~4 mg/cm2 on a 14 mm disc


# ----------------------------------------------------------------------------------------
# GITT
# ----------------------------------------------------------------------------------------
RADIUS_CM = 2e-4  # 2 um single crystals
TAU_S, REST_S = 1200, 8400  # 20 min pulse, 140 min rest, 1 s sampling
PULSE_A = 20e-3 * MASS_G  # 20 mA/g
SLOPE = 5e-3  # V / s^0.5
D_TRUE = np.array([2e-12, 1e-12, 5e-13, 2e-13, 1e-13])  # cm^2/s, falling with charge


def gitt_record(noise_V: float = 2e-4, seed: int = 3):
    """A charging GITT record built from the Weppner-Huggins short-time solution.

    During pulse k: E = E_k + IR + SLOPE sqrt(t') + a fast transient that dies out
    before sqrt(t') = 10 (outside the fit window); the relaxed potential then steps by
    dEs_k = SLOPE tau / r * sqrt(9 pi D_k / 4), which is eq. 2 solved for dEs.
    """
    delta_es = SLOPE * TAU_S / RADIUS_CM * np.sqrt(9 * np.pi * D_TRUE / 4)
    period = TAU_S + REST_S
    t = np.arange(REST_S + D_TRUE.size * period, dtype=float)
    current = np.zeros_like(t)
    potential = np.empty_like(t)
    relaxed = 3.7
    potential[:REST_S] = relaxed
    for k, step in enumerate(delta_es):
        start = REST_S + k * period
        pulse = np.arange(TAU_S, dtype=float)
        current[start : start + TAU_S] = PULSE_A
        potential[start : start + TAU_S] = relaxed + 0.02 + SLOPE * np.sqrt(pulse) + 0.01 * np.exp(-pulse / 10)
        end_of_pulse = relaxed + SLOPE * np.sqrt(TAU_S)
        relaxed += step
        rest = np.arange(REST_S, dtype=float)
        potential[start + TAU_S : start + period] = relaxed + (end_of_pulse - relaxed) * np.exp(-rest / 600)
    potential += np.random.default_rng(seed).normal(0, noise_V, t.size)
    return t, potential, current


def test_gitt_recovers_the_diffusion_coefficient_of_each_titration():
    table = ec.gitt_diffusion(*gitt_record(), radius_cm=RADIUS_CM)
    np.testing.assert_allclose(table["D"], D_TRUE, rtol=0.02)
    np.testing.assert_allclose(table["tau_s"], TAU_S)
    np.testing.assert_allclose(table["dE_dsqrt_t"], SLOPE, rtol=0.01)


def test_gitt_state_of_charge_grows_in_equal_steps_to_one():
    table = ec.gitt_diffusion(*gitt_record(), radius_cm=RADIUS_CM)
    np.testing.assert_allclose(table["soc"], np.arange(1, D_TRUE.size + 1) / D_TRUE.size)
    np.testing.assert_allclose(table["charge_mAh"], np.cumsum([PULSE_A * TAU_S / 3.6] * D_TRUE.size))


def test_gitt_slope_window_excludes_the_early_transient():
    """Fitting from sqrt(t) = 0 would take in the transient and miss D."""
    record = gitt_record(noise_V=0.0)
    fitted = ec.gitt_diffusion(*record, radius_cm=RADIUS_CM)
    early = ec.gitt_diffusion(*record, radius_cm=RADIUS_CM, sqrt_t_window=(0, 20))
    np.testing.assert_allclose(fitted["D"], D_TRUE, rtol=1e-3)
    assert np.all(np.abs(early["D"] / D_TRUE - 1) > 0.05)


def test_gitt_leaves_out_a_pulse_cut_by_the_end_of_the_record():
    t, potential, current = gitt_record()
    cut = REST_S + 4 * (TAU_S + REST_S) + TAU_S // 2
    table = ec.gitt_diffusion(t[:cut], potential[:cut], current[:cut], radius_cm=RADIUS_CM)
    assert table["pulse"].tolist() == [0, 1, 2, 3]


SPHERE_ROOTS = (4.493409457909064, 7.725251836937707, 10.904121659428899)  # tan(a) = a (Crank table 6.x)
D_RELAX = np.array([3e-11, 1e-11, 3e-12])  # cm^2/s


def relaxing_gitt_record(noise_V: float = 1e-4, seed: int = 4, sample_s: float = 1.0):
    """Charging titrations whose rests relax as a sphere does: after pulse k,
    E(t) = E_k + sum_n c_n exp(-a_n^2 D_k t / r^2), c = (6, 3, 2) mV on the three slowest modes."""
    period = TAU_S + REST_S
    t = np.arange(0.0, REST_S + D_RELAX.size * period, sample_s)
    current = np.where((t >= REST_S) & ((t - REST_S) % period < TAU_S), PULSE_A, 0.0)
    potential = np.full(t.shape, 3.7)
    for k, d in enumerate(D_RELAX):
        start = REST_S + k * period
        pulse = (t >= start) & (t < start + TAU_S)
        potential[pulse] = 3.72 + 0.01 * k + 1e-3 * np.sqrt(t[pulse] - start)
        rest = (t >= start + TAU_S) & (t < start + period)
        since = t[rest] - (start + TAU_S)
        potential[rest] = 3.71 + 0.01 * k + sum(
            c * np.exp(-a**2 * d * since / RADIUS_CM**2) for c, a in zip((6e-3, 3e-3, 2e-3), SPHERE_ROOTS))
    potential += np.random.default_rng(seed).normal(0, noise_V, t.size)
    return t, potential, current


def test_sphere_slowest_root_solves_tan_a_equals_a():
    assert ec.SPHERE_SLOWEST_ROOT == pytest.approx(SPHERE_ROOTS[0], rel=1e-12)
    assert math.tan(ec.SPHERE_SLOWEST_ROOT) == pytest.approx(ec.SPHERE_SLOWEST_ROOT, rel=1e-9)


def test_gitt_relaxation_recovers_the_diffusivity_of_each_rest():
    table = ec.gitt_diffusion(*relaxing_gitt_record(), radius_cm=RADIUS_CM)
    np.testing.assert_allclose(table["D_relaxation"], D_RELAX, rtol=0.03)
    np.testing.assert_allclose(table["relaxation_rate_per_s"],
                               SPHERE_ROOTS[0] ** 2 * D_RELAX / RADIUS_CM**2, rtol=0.03)


def test_gitt_relaxation_sampled_slower_than_its_decay_is_nan():
    """1 / k = r^2 / (a_1^2 D) = 66 s for D = 3e-11: 120 s sampling cannot follow it."""
    table = ec.gitt_diffusion(*relaxing_gitt_record(sample_s=120.0), radius_cm=RADIUS_CM)
    assert np.isnan(table["D_relaxation"][0]) and np.isfinite(table["D_relaxation"][2])


# ----------------------------------------------------------------------------------------
# Four-point probe
# ----------------------------------------------------------------------------------------
def test_film_resistivity_is_pi_t_over_ln2_times_v_over_i():
    sigma, rho = ec.four_point_conductivity(2e-3, 1e-3, thickness_cm=1e-4)
    assert rho == pytest.approx(math.pi * 1e-4 / math.log(2) * 2.0, rel=1e-12)
    assert sigma == pytest.approx(1 / rho, rel=1e-12)


def test_pellet_resistivity_is_w_l_over_t_times_v_over_i():
    result = ec.four_point_conductivity(
        [0.5, 1.0], [1e-3, 1e-3], thickness_cm=0.1, geometry="pellet", width_cm=1.0, length_cm=0.5
    )
    np.testing.assert_allclose(result.resistivity_ohm_cm, [2500.0, 5000.0], rtol=1e-12)
    np.testing.assert_allclose(result.sigma_S_per_cm, [4e-4, 2e-4], rtol=1e-12)


def test_pellet_without_dimensions_is_rejected():
    with pytest.raises(ValueError, match="width_cm and length_cm"):
        ec.four_point_conductivity(1.0, 1e-3, thickness_cm=0.1, geometry="pellet")


# ----------------------------------------------------------------------------------------
# Capacities, coulombic efficiency, retention
# ----------------------------------------------------------------------------------------
CHARGE_S = np.array([7200, 7000, 6900])
DISCHARGE_S = np.array([6600, 6800, 6700])
CYCLE_A = 0.5e-3
DT = 10.0


def cycling_record():
    """Three cycles of constant-current charge, rest, discharge, rest, 10 s sampling."""
    currents = []
    for charge_s, discharge_s in zip(CHARGE_S, DISCHARGE_S):
        for duration, current in [(charge_s, CYCLE_A), (600, 0.0), (discharge_s, -CYCLE_A), (600, 0.0)]:
            currents.append(np.full(int(duration / DT), current))
    current = np.concatenate(currents)
    return np.arange(current.size) * DT, current


def mAh_per_g(seconds) -> np.ndarray:
    return CYCLE_A * np.asarray(seconds, dtype=float) / 3.6 / MASS_G


def test_specific_capacity_integrates_the_current():
    t, current = cycling_record()
    capacity = ec.specific_capacity(t, current, MASS_G)
    first_charge_end = int(CHARGE_S[0] / DT)
    assert capacity[0] == 0.0
    assert capacity[first_charge_end] == pytest.approx(mAh_per_g(CHARGE_S[0]), rel=1e-12)
    assert capacity[-1] == pytest.approx(mAh_per_g(CHARGE_S.sum() - DISCHARGE_S.sum()), rel=1e-9)


def test_cycles_detected_from_the_current_sign():
    t, current = cycling_record()
    cycles = ec.cycle_capacities(t, current, MASS_G)
    assert cycles.cycle.tolist() == [0, 1, 2]
    np.testing.assert_allclose(cycles.charge, mAh_per_g(CHARGE_S), rtol=1e-12)
    np.testing.assert_allclose(cycles.discharge, mAh_per_g(DISCHARGE_S), rtol=1e-12)


def test_cycles_from_the_cycler_index_match_detection():
    t, current = cycling_record()
    index = np.repeat([1, 2, 3], (CHARGE_S + DISCHARGE_S + 1200) // int(DT))
    cycles = ec.cycle_capacities(t, current, MASS_G, cycle_index=index)
    assert cycles.cycle.tolist() == [1, 2, 3]
    np.testing.assert_allclose(cycles.discharge, mAh_per_g(DISCHARGE_S), rtol=1e-12)


def test_coulombic_efficiency_is_discharge_over_charge_in_percent():
    np.testing.assert_allclose(ec.coulombic_efficiency([220.0, 200.0], [198.0, 199.0]), [90.0, 99.5])


def test_capacity_retention_relative_to_a_reference_cycle():
    discharge = 200.0 * (1 - 0.002 * np.arange(104))  # 3 formation cycles, then 100 cycles
    retention = ec.capacity_retention(discharge, reference=3)
    assert retention[3] == 100.0
    assert retention[103] == pytest.approx(100 * (1 - 0.206) / (1 - 0.006), rel=1e-12)


# ----------------------------------------------------------------------------------------
# dQ/dV
# ----------------------------------------------------------------------------------------
def plateau_branch(noise_V: float, seed: int = 5):
    """Charge through a two-phase plateau: Q(V) = 150 / (1 + exp(-(V - 3.9) / 0.01)),
    so dQ/dV peaks at 3.9 V with height 150 / (4 * 0.01) and area 150."""
    capacity = np.linspace(1.0, 149.0, 4000)
    voltage = 3.9 + 0.01 * np.log(capacity / (150.0 - capacity))
    voltage = voltage + np.random.default_rng(seed).normal(0, noise_V, voltage.size)
    return capacity, voltage


def test_dqdv_peak_sits_at_the_plateau_and_keeps_the_area():
    capacity, voltage = plateau_branch(noise_V=0.0)
    v, dq_dv = ec.dqdv(capacity, voltage, dv_V=0.002, smoothing_V=0.004)
    assert v[np.argmax(dq_dv)] == pytest.approx(3.9, abs=0.002)
    assert np.sum(dq_dv) * 0.002 == pytest.approx(capacity[-1] - capacity[0], rel=1e-9)


def test_dqdv_survives_non_monotonic_voltage_noise():
    """1 mV noise makes the voltage go back and forth; binning does not blow up."""
    clean = ec.dqdv(*plateau_branch(noise_V=0.0), dv_V=0.002, smoothing_V=0.005)[1]
    capacity, voltage = plateau_branch(noise_V=1e-3)
    assert np.any(np.diff(voltage) < 0)
    v, noisy = ec.dqdv(capacity, voltage, dv_V=0.002, smoothing_V=0.005)
    assert noisy.max() == pytest.approx(clean.max(), rel=0.1)
    assert v[np.argmax(noisy)] == pytest.approx(3.9, abs=0.003)
    assert noisy.min() > -0.01 * noisy.max()


def test_dqdv_of_a_discharge_is_negative():
    capacity, voltage = plateau_branch(noise_V=0.0)
    _, dq_dv = ec.dqdv(capacity, voltage[::-1])  # discharged capacity grows as V falls
    assert dq_dv.min() < 0 and dq_dv.max() <= 0


def test_cumulative_time_chains_the_step_clocks():
    t = ec.cumulative_time(np.array([0.0, 10, 20, 0, 5, 0, 30]), np.array([0, 0, 0, 1, 1, 2, 2]))
    assert t.tolist() == [0, 10, 20, 20, 25, 25, 55]


def test_cycling_accumulator_streams_readings_into_capacities_per_cycle():
    """Two cycles read step by step (each step's clock restarts at 0, the step's last
    reading and the next step's first share an instant): charge 1 mA for 1 h, discharge
    0.9 mA then 0.6 mA for 1 h, 5 mg -> 200, 180, 200, 120 mAh/g."""
    reducer = ec.CyclingAccumulator(mass_g=0.005)
    for step, (cycle, milliamps) in enumerate([(1, 1.0), (1, -0.9), (2, 1.0), (2, -0.6)]):
        for t in np.linspace(0, 3600, 13):
            reducer.add(t, step, cycle, 3.8, milliamps)
    summary = reducer.result()
    assert summary.capacities.cycle.tolist() == [1, 2]
    assert summary.capacities.charge == pytest.approx([200.0, 200.0], rel=1e-9)
    assert summary.capacities.discharge == pytest.approx([180.0, 120.0], rel=1e-9)
    assert summary.coulombic_efficiency_pct == pytest.approx([90.0, 60.0], rel=1e-9)
    assert summary.retention_pct == pytest.approx([100.0, 100 * 120 / 180], rel=1e-9)
    assert summary.gitt is None


def test_cycling_accumulator_books_the_time_before_a_steps_first_reading_to_that_step():
    """A log as the simulated channel writes it: before each step the state it starts
    from (the previous step's readings, at its last instant), then readings 250 s, 500 s,
    ... into the step: charge 1 mA for 3600 s, discharge 0.9 mA for 3000 s, then a new
    cycle's charge of 1 mA for 1800 s; 5 mg -> 200, 150, 100 mAh/g, none lost or misbooked."""
    reducer = ec.CyclingAccumulator(mass_g=0.005)
    reducer.add(0.0, 0, 0, 3.5, 0.0)  # at rest, before the first step
    previous = (0, 0, 0.0, 0.0)
    for step, cycle, milliamps, duration in [(1, 0, 1.0, 3600.0), (2, 0, -0.9, 3000.0), (3, 1, 1.0, 1800.0)]:
        reducer.add(previous[2], previous[0], previous[1], 3.8, previous[3])  # the state the step starts from
        for t in [*np.arange(250.0, duration, 250.0), duration]:
            reducer.add(t, step, cycle, 3.8, milliamps)
        previous = (step, cycle, duration, milliamps)
    capacities = reducer.result().capacities
    assert capacities.cycle.tolist() == [0, 1]
    assert capacities.charge == pytest.approx([200.0, 100.0], rel=1e-9)
    assert capacities.discharge == pytest.approx([150.0, 0.0], abs=1e-9)


def test_cycling_accumulator_refuses_too_few_readings_and_a_bad_mass():
    reducer = ec.CyclingAccumulator(mass_g=0.005)
    reducer.add(0.0, 0, 1, 3.8, 1.0)
    with pytest.raises(ValueError, match=">= 2 readings"):
        reducer.result()
    for mass in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="mass_g"):
            ec.CyclingAccumulator(mass_g=mass)
