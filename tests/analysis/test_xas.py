"""Ex situ XAS analysis (xraylarch): known answers on simulated spectra.

The spectra come from `nanostrain.sim.xas_model` (an ensemble of Gaussian-distributed
Ni-O distances per shell, FEFF's amplitude and phase, summed by its own code), the
analysis from larch's pre_edge / autobk / xftf / feffit: the fit's cumulant model is not
the simulator's code path. Measured on these spectra (1e9 photons/s, k^2-weighted dwell,
two noise seeds): energy alignment within 0.01 eV, edge shift within 0.03 eV of the
white-line shift, R within 0.0025 A (-0.002 A bias), sigma^2 within 0.0004 A^2 (-0.0003
to +0.0001 A^2 bias, from the background and edge-step estimates); the tolerances below
hold those with margin.
"""

from __future__ import annotations

import numpy as np
import pytest

from nanostrain.analysis.xas import (
    ETOK_EV_A2,
    NI_O_FEFF_PATH,
    XasAccumulator,
    XasOptions,
    absorbance,
    fit_first_shell,
    read_feff_path,
    reduce_xas,
)
from nanostrain.plans.xas import MAX_EDGE_SAMPLE_EV
from nanostrain.schema.sample import SampleRecord
from nanostrain.sim.xas_model import XasSpecimen, electrode_specimen, ni_foil_absorbance

E0 = 8350.0
ENERGIES = np.concatenate([E0 + np.arange(-150.0, -20.0, 10.0), E0 + np.arange(-19.5, 30.01, 0.5),
                           E0 + ETOK_EV_A2 * np.arange(2.85, 14.0001, 0.05) ** 2])
R_TOLERANCE_A = 0.005
SIGMA2_TOLERANCE_A2 = 0.0006


def counts(specimen: XasSpecimen, offset_eV: float = 0.0, seed: int = 1, flux: float = 1e9):
    """I0, It, Iref as the simulated chambers count them (k^2-weighted dwell) when the
    true energy is the DCM's reading + offset_eV."""
    true = ENERGIES + offset_eV
    mu = specimen.absorbance(true)
    mu_ref = np.array([ni_foil_absorbance(e) for e in true])
    k = np.sqrt(np.clip(ENERGIES - E0, 0.0, None) / ETOK_EV_A2)
    photons = flux * np.where(k > 2.85, (k / 2.85) ** 2, 1.0)
    rng = np.random.default_rng(seed)
    return (rng.poisson(0.1 * photons).astype(float), rng.poisson(0.5 * photons * np.exp(-mu)).astype(float),
            rng.poisson(0.5 * photons * np.exp(-mu - mu_ref)).astype(float))


def specimen(**state) -> XasSpecimen:
    material = state.pop("material", "NM91")
    return electrode_specimen(SampleRecord(name=material, material=material, morphology="SC", **state))


def test_feff_table_reads_as_larch_reads_it():
    from larch.xafs import feffpath

    ours, larch_path = read_feff_path(NI_O_FEFF_PATH), feffpath(str(NI_O_FEFF_PATH))
    data = larch_path._feffdat
    np.testing.assert_allclose(ours["k"], data.k)
    np.testing.assert_allclose(ours["mag"] * ours["red_factor"], data.amp)
    np.testing.assert_allclose(ours["phc2"] + ours["phase"], data.pha)
    assert float(ours["reff"]) == pytest.approx(data.reff) and float(ours["degen"]) == data.degen


@pytest.mark.parametrize("sigma2", [0.003, 0.006, 0.009])
def test_first_shell_fit_recovers_an_exact_chi(sigma2):
    shell = XasSpecimen(np.array([3.0]), np.array([1.0]), np.array([1.95]), np.array([sigma2]))
    k = np.arange(0.0, 16.0, 0.05)
    fit = fit_first_shell(k, shell.chi(k, 0))
    assert fit.r_A == pytest.approx(1.95, abs=0.001)
    assert fit.sigma2_A2 == pytest.approx(sigma2, abs=1e-4)
    assert abs(fit.delta_e0_eV) < 0.1 and fit.r_err_A > 0 and fit.sigma2_err_A2 > 0


def test_reduction_aligns_the_energy_on_the_foil_and_recovers_the_shell():
    truth = specimen()
    result = reduce_xas(ENERGIES, *counts(truth, offset_eV=-0.8))
    assert result.energy_shift_eV == pytest.approx(-0.8, abs=0.03)
    assert result.reference_e0_eV == pytest.approx(8333.8, abs=0.03)
    assert result.fit.r_A == pytest.approx(truth.bond_length_A, abs=R_TOLERANCE_A)
    assert result.fit.sigma2_A2 == pytest.approx(truth.sigma2_A2, abs=SIGMA2_TOLERANCE_A2)
    assert 0 < result.fit.r_err_A < 0.01 and 0 < result.fit.sigma2_err_A2 < 0.001
    peak = result.r_A[np.argmax(result.chir_mag)]
    assert 1.2 < peak < 1.8  # |chi(R)| of the Ni-O shell, phase shift ~ -0.4 A
    assert result.norm[-1] == pytest.approx(1.0, abs=0.1) and result.norm[0] == pytest.approx(0.0, abs=0.05)


def test_edge_shift_and_bond_change_over_a_charge():
    # the white line moves 2 eV per unit of valence: the edge shift between pristine and
    # 4.5 V charged NM91 follows it; R contracts by 0.09 A per unit of valence
    pristine, charged = specimen(), specimen(charge_V=4.5, current_mA_g=20.0)
    results = [reduce_xas(ENERGIES, *counts(s, offset_eV=0.4, seed=3)) for s in (pristine, charged)]
    wl_shift = float(np.sum(charged.weights * charged.whiteline_eV) - np.sum(pristine.weights * pristine.whiteline_eV))
    assert results[1].edge_shift_eV - results[0].edge_shift_eV == pytest.approx(wl_shift, abs=0.05)
    assert results[1].fit.r_A - results[0].fit.r_A == pytest.approx(
        charged.bond_length_A - pristine.bond_length_A, abs=0.004)


def test_cycled_nm91_disorder_rises_more_than_nc91():
    fresh = {m: reduce_xas(ENERGIES, *counts(specimen(material=m), seed=4)).fit for m in ("NC91", "NM91")}
    aged = {m: reduce_xas(ENERGIES, *counts(specimen(material=m, cycles=100), seed=5)).fit for m in ("NC91", "NM91")}
    rise = {m: aged[m].sigma2_A2 - fresh[m].sigma2_A2 for m in fresh}
    assert rise["NM91"] > 2 * rise["NC91"] > 0
    assert aged["NM91"].r_A < fresh["NM91"].r_A - 0.01


def test_accumulator_takes_points_in_any_order():
    i0, it, iref = counts(specimen())
    order = np.random.default_rng(0).permutation(ENERGIES.size)
    accumulator = XasAccumulator()
    for index in order:
        assert accumulator.add(ENERGIES[index], i0[index], it[index], iref[index]) == pytest.approx(
            np.log(i0[index] / it[index]))
    streamed, direct = accumulator.result(), reduce_xas(ENERGIES, i0, it, iref)
    assert streamed.fit == direct.fit and streamed.e0_eV == direct.e0_eV


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="i0/it"):
        absorbance([1.0, 0.0], [1.0, 1.0], "i0/it")
    with pytest.raises(ValueError, match="increase strictly"):
        reduce_xas(ENERGIES[::-1], *counts(specimen()))
    with pytest.raises(ValueError, match=">= 20 points"):
        XasAccumulator().result()
    with pytest.raises(ValueError, match="k_range"):
        XasOptions(k_range=(12.8, 3.0))


def fly_counts(specimen: XasSpecimen, velocities_eV_s, interval_s: float, offset_eV: float = 0.0, seed: int = 1,
               flux: float = 1e10, dead_s: float = 0.03):
    """A fly scan's samples as the simulated chambers count them: the DCM sweeps 8200 eV to
    k = 14 1/A in four segments (pre-edge, edge -20 to +30 eV, k 2.8-6 and 6-14 1/A) at
    ``velocities_eV_s``, counts of ``interval_s`` back to back with ``dead_s`` between
    them; each count's transmissions are averaged over its sweep (32 nodes). Returns the
    mean energies (eV, the DCM's reading) and I0, It, Iref."""
    bounds = [E0 - 150.0, E0 - 20.0, E0 + 30.0, E0 + ETOK_EV_A2 * 6.0**2, E0 + ETOK_EV_A2 * 14.0**2]
    starts, widths = [], []
    for (low, high), velocity in zip(zip(bounds[:-1], bounds[1:]), velocities_eV_s, strict=True):
        width, pitch = velocity * interval_s, velocity * (interval_s + dead_s)
        begin = low + pitch * np.arange(int((high - low - width) / pitch) + 1)
        starts.append(begin)
        widths.append(np.full(begin.size, width))
    starts, widths = np.concatenate(starts), np.concatenate(widths)
    nodes = (np.arange(32) + 0.5) / 32
    swept = starts[:, None] + widths[:, None] * nodes + offset_eV
    sample = np.exp(-specimen.absorbance(swept)).mean(axis=1)
    foil = np.exp(-np.vectorize(ni_foil_absorbance)(swept))
    both = (np.exp(-specimen.absorbance(swept)) * foil).mean(axis=1)
    photons = flux * interval_s
    rng = np.random.default_rng(seed)
    return (starts + widths / 2, rng.poisson(0.1 * photons, starts.size).astype(float),
            rng.poisson(0.5 * photons * sample).astype(float), rng.poisson(0.5 * photons * both).astype(float))


def test_sweep_blur_stays_below_its_bound_at_the_edge():
    # a sample of width w (velocity x interval) measures -ln <exp(-mu)> over w; to second
    # order it departs from mu at its centre by w^2/24 (|mu''| + mu'^2), bounded by
    # w^2/12 max(|mu''| + mu'^2) over the edge. Measured on the charged electrode: 0.0014
    # at the default fly scan's 0.2 eV, 0.0018 at the edge limit (0.25 eV), 0.0041 at 0.5 eV
    truth = specimen(charge_V=4.5, current_mA_g=20.0)
    fine = np.arange(E0 - 20.0, E0 + 30.0, 0.01)
    mu = truth.absorbance(fine)
    first, second = np.gradient(mu, fine), np.gradient(np.gradient(mu, fine), fine)
    nodes = (np.arange(64) + 0.5) / 64 - 0.5
    for width, limit in ((0.2, 0.002), (MAX_EDGE_SAMPLE_EV, 0.0025)):
        blurred = -np.log(np.exp(-truth.absorbance(fine[:, None] + width * nodes)).mean(axis=1))
        bound = width**2 / 12 * np.max(np.abs(second) + first**2)
        assert np.max(np.abs(blurred - mu)) <= min(bound, limit)


@pytest.mark.parametrize(("velocities_eV_s", "interval_s"), [((20.0, 2.0, 8.0, 20.0), 0.1),
                                                             ((50.0, 5.0, 20.0, 40.0), 0.05)])
def test_a_fly_spectrum_gives_the_step_answers(velocities_eV_s, interval_s):
    # the default fly scan (0.2 eV samples across the edge, <= 0.05 1/A in the EXAFS,
    # constant count time) and a fast one (0.25 eV, 2.5 eV in the pre-edge): the step
    # scan's alignment within 0.03 eV, its edge within 0.05 eV, R and sigma^2 within the
    # step tolerances of the truth and of the step fit (measured: sigma^2 0.0003 A^2
    # above the truth, 0.0002 A^2 above the step fit)
    truth = specimen(charge_V=4.5, current_mA_g=20.0)
    step = reduce_xas(ENERGIES, *counts(truth, offset_eV=0.6, seed=2))
    energies, *fly_chambers = fly_counts(truth, velocities_eV_s, interval_s, offset_eV=0.6, seed=2)
    fly = reduce_xas(energies, *fly_chambers)
    assert fly.energy_shift_eV == pytest.approx(0.6, abs=0.03)
    assert fly.edge_shift_eV == pytest.approx(step.edge_shift_eV, abs=0.05)
    assert fly.fit.r_A == pytest.approx(truth.bond_length_A, abs=R_TOLERANCE_A)
    assert fly.fit.sigma2_A2 == pytest.approx(truth.sigma2_A2, abs=SIGMA2_TOLERANCE_A2)
    assert fly.fit.r_A == pytest.approx(step.fit.r_A, abs=R_TOLERANCE_A)
    assert fly.fit.sigma2_A2 == pytest.approx(step.fit.sigma2_A2, abs=SIGMA2_TOLERANCE_A2)
