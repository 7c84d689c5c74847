"""Material and morphology data for the simulated Ni-rich cathode particle.

Every curve is a function of the Li site fraction ``x`` of Li_xMO2 (x = 1 pristine,
x = 0 fully delithiated) and is written as one closed-form equation whose parameters
carry their units in their names. The parameters were calibrated against the behaviour
summarised in SCIENCE.md (first-charge capacity, H1 -> H2 -> H3 lattice evolution, the
PC-NC91 / PC-NM91 c contraction and volume shrinkage, the retention after 100 cycles);
they are a plausible, self-consistent parameter set, not measured values.

The two materials differ only in parameter values: there is no per-material branch in
the model. What makes SC-NM91 split into H2 + H3 while SC-NC91 stays single-phase is
the diffusivity minimum at the H2 -> H3 transition (3e-13 cm^2/s for NM91, two orders of
magnitude below NC91's 5e-11) acting on a 2 um diffusion length, see
`nanostrain.sim.cathode`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from math import exp
from types import MappingProxyType

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import cumulative_trapezoid
from scipy.special import expit

FARADAY_C_MOL = 96485.33212
GAS_CONSTANT_J_MOL_K = 8.314462618
BOLTZMANN_EV_K = 8.617333262e-5
REFERENCE_TEMPERATURE_K = 298.15

Array = NDArray[np.float64]


@dataclass(frozen=True)
class OCVCurve:
    """Open-circuit potential U(x) in V vs Li/Li+.

    U(x) = E0 - slope*x + sum_k A_k tanh((x_k - x)/w_k)
           + B_empty exp(-x/l_empty) - B_full exp((x - 1)/l_full)

    Every term decreases with x, so U is strictly decreasing (tested). The parameters
    are a least-squares fit to typical Ni-rich first-charge OCV points (~3.65 V at
    x = 0.9, ~3.95 V at 0.5, the H2 -> H3 plateau at 4.15-4.2 V over x ~ 0.2-0.28 for
    NC91 and ~0.25-0.32 for NM91, 4.5 V at x ~ 0.10 / 0.14), not a measurement of these
    materials: the tanh steps shape the H1 -> M, M -> H2 -> H3 and high-voltage regions,
    the exponentials make U rise towards 5 V as x -> 0 and fall below 2.7 V as x -> 1.
    Units: E0, slope, A_k, B_* in V; x_k, w_k, l_* dimensionless (Li fraction).
    """

    e0_V: float
    slope_V: float
    steps: tuple[tuple[float, float, float], ...]  # (A_k [V], x_k [-], w_k [-])
    b_empty_V: float
    l_empty: float
    b_full_V: float
    l_full: float

    def __call__(self, x: ArrayLike) -> Array:
        """U(x) in V; x is clipped to [0, 1]."""
        x = np.minimum(np.maximum(np.asarray(x, dtype=float), 0.0), 1.0)
        u = self.e0_V - self.slope_V * x
        for amplitude, centre, width in self.steps:
            u = u + amplitude * np.tanh((centre - x) / width)
        return u + self.b_empty_V * np.exp(-x / self.l_empty) - self.b_full_V * np.exp(
            (x - 1.0) / self.l_full
        )


@dataclass(frozen=True)
class DiffusivityCurve:
    """Chemical diffusion coefficient D(x, T) of Li in the layered oxide, cm^2/s.

    log10 D(x, 298.15 K) = log10_d_max - dip_decades exp(-((x - x_dip)/sigma_dip)^2)
                            - full_decades exp((x - 1)/l_full)
    D(x, T) = D(x, 298.15 K) exp(-Ea/k_B (1/T - 1/298.15 K))

    The Gaussian dip (in decades) sits at the H2 -> H3 transition, where the
    thermodynamic factor of a two-phase region collapses; the last term is the familiar
    drop of D as the lattice fills up (x -> 1), which ends the discharge of a large
    particle early. log10_d_max is log10 of cm^2/s; Ea in eV; the rest dimensionless.
    Calibrated values: NC91 2e-10 (max), 5e-11 (dip at x = 0.24), 1e-11 (x = 1); NM91
    3.2e-11, 3.2e-13 (dip at x = 0.28, narrow), 1.6e-12 - about 10x below NC91 on
    average over x, 150x at the dip.
    """

    log10_d_max: float
    dip_decades: float
    x_dip: float
    sigma_dip: float
    full_decades: float
    l_full: float
    activation_eV: float

    def __call__(self, x: ArrayLike, temperature_K: float = REFERENCE_TEMPERATURE_K) -> Array:
        """D(x, T) in cm^2/s; x is clipped to [0, 1]."""
        x = np.clip(np.asarray(x, dtype=float), 0.0, 1.0)
        return self.at_reference_temperature(x) * self.arrhenius_factor(temperature_K)

    def at_reference_temperature(self, x: Array) -> Array:
        """D(x, 298.15 K) in cm^2/s, unclipped (smooth and finite for any real x)."""
        log10_d = (
            self.log10_d_max
            - self.dip_decades * np.exp(-(((x - self.x_dip) / self.sigma_dip) ** 2))
            - self.full_decades * np.exp((x - 1.0) / self.l_full)
        )
        return np.power(10.0, log10_d)

    @cached_property
    def _table(self) -> tuple[Array, Array, Array]:
        """x grid on [-0.1, 1.1] (step 1e-4), D(x, 298.15 K) and Phi(x) (trapezoidal)."""
        x = np.linspace(-0.1, 1.1, 12001)
        d = self.at_reference_temperature(x)
        return x, d, cumulative_trapezoid(d, x, initial=0.0)

    def kirchhoff(self, x: ArrayLike) -> Array:
        """Phi(x) = int_(-0.1)^x D(x', 298.15 K) dx' in cm^2/s (tabulated, interpolated)."""
        grid, _, phi = self._table
        return np.interp(x, grid, phi)

    def kirchhoff_inverse(self, phi: ArrayLike) -> Array:
        """x with Phi(x) = phi (Phi increases strictly; clamped to the table)."""
        grid, _, table = self._table
        return np.interp(phi, table, grid)

    def mean_between(self, x1: Array, x2: Array) -> Array:
        """<D> = (Phi(x2) - Phi(x1)) / (x2 - x1) in cm^2/s at 298.15 K; D(x1) if x1 = x2.

        The exact steady flux between two points of a medium with D(x) is
        -<D> (x2 - x1) / distance: used for the face conductances of the finite volumes.
        """
        grid, d, phi = self._table
        dx = x2 - x1
        distinct = np.abs(dx) > 1e-9
        mean = (np.interp(x2, grid, phi) - np.interp(x1, grid, phi)) / np.where(distinct, dx, 1.0)
        return np.where(distinct, mean, np.interp(x1, grid, d))

    def arrhenius_factor(self, temperature_K: float) -> float:
        """D(x, T) / D(x, 298.15 K) = exp(-Ea/k_B (1/T - 1/298.15 K))."""
        inverse_temperatures = 1.0 / temperature_K - 1.0 / REFERENCE_TEMPERATURE_K
        return exp(-self.activation_eV / BOLTZMANN_EV_K * inverse_temperatures)


@dataclass(frozen=True)
class LatticeCurve:
    """Hexagonal (R-3m) lattice parameters a(x), c(x) in angstrom through H1 -> H2 -> H3.

    a(x)    = a0 - da_dx (1 - x)                       (Vegard-like, Ni3+ -> Ni4+)
    c_H2(x) = c0 + dc_dx_h2 (1 - x)                     (O-O repulsion opens the gap)
    c_H3(x) = c_h3_A - dc_dx_h3 (x_h3 - x)              (collapsed, keeps shrinking)
    s(x)    = 1 / (1 + exp((x - x_h3)/w_h3))            (H3 fraction, logistic)
    c(x)    = (1 - s) c_H2(x) + s c_H3(x)

    The collapse is steep (w_h3 ~ 0.02 in x), so a Li gradient across a particle that
    straddles x_h3 gives two c populations rather than a smear. c_h3, dc_dx_h3 and
    da_dx are calibrated so that a homogeneous (PC, 20 mA/g) particle charged to 4.5 V
    shows the reported c contraction (max c in H2 -> top of charge: NC91 6.0 %, NM91
    3.6 %) and cell-volume shrinkage (pristine -> top of charge: 7.8 %, 5.9 %).
    """

    a0_A: float
    da_dx_A: float
    c0_A: float
    dc_dx_h2_A: float
    c_h3_A: float
    dc_dx_h3_A: float
    x_h3: float
    w_h3: float

    def a(self, x: ArrayLike) -> Array:
        """a(x) in angstrom."""
        return self.a0_A - self.da_dx_A * (1.0 - np.asarray(x, dtype=float))

    def h3_fraction(self, x: ArrayLike) -> Array:
        """s(x): local H3 character, 0 (H1/H2) to 1 (H3)."""
        return expit((self.x_h3 - np.asarray(x, dtype=float)) / self.w_h3)

    def c(self, x: ArrayLike) -> Array:
        """c(x) in angstrom."""
        x = np.asarray(x, dtype=float)
        s = self.h3_fraction(x)
        c_h2 = self.c0_A + self.dc_dx_h2_A * (1.0 - x)
        c_h3 = self.c_h3_A - self.dc_dx_h3_A * (self.x_h3 - x)
        return (1.0 - s) * c_h2 + s * c_h3


@dataclass(frozen=True)
class CathodeMaterial:
    """One layered-oxide composition Li_x Ni_f M_(1-f) O2 (M = Co or Mn).

    Theoretical capacity (x: 1 -> 0) Q_th = F / (3.6 M) in mAh/g with M in g/mol.
    Charge-transfer kinetics: j0(x) = 2 j0_ref sqrt(x (1 - x)), j0_ref =
    exchange_current_A_cm2 in A/cm^2. density_g_cm3 converts the specific current into
    a current density on the particle surface. Ni valence from charge balance with
    ni_fraction = f (Ni per formula unit), see `ni_valence`.
    """

    name: str
    formula: str
    molar_mass_g_mol: float
    density_g_cm3: float
    ocv: OCVCurve
    diffusivity: DiffusivityCurve
    lattice: LatticeCurve
    exchange_current_A_cm2: float
    ni_fraction: float
    ni_valence_pristine: float
    ni_redox_share: float

    @property
    def theoretical_capacity_mAh_g(self) -> float:
        """Q_th = F / (3.6 M): one Li per formula unit, mAh/g."""
        return FARADAY_C_MOL / (3.6 * self.molar_mass_g_mol)

    def ni_valence(self, x: ArrayLike) -> Array:
        """Mean Ni oxidation state v_Ni(x) = v_Ni(1) + share (1 - x) / f_Ni.

        share is the fraction of the removed electrons that Ni supplies. NC91: Co3+ and
        Ni3+ oxidise together (share = f_Ni = 0.9, v_Ni = 3 + (1 - x), +3.9 at x = 0.1).
        NM91: Mn stays 4+, which makes the pristine Ni partly 2+ (v_Ni(1) = 2.6/0.9 =
        2.889) and Ni supplies every electron (share = 1, +3.889 at x = 0.1).
        """
        x = np.asarray(x, dtype=float)
        return self.ni_valence_pristine + self.ni_redox_share * (1.0 - x) / self.ni_fraction


NC91 = CathodeMaterial(
    name="NC91",
    formula="LiNi0.9Co0.1O2",
    molar_mass_g_mol=97.65,
    density_g_cm3=4.78,
    ocv=OCVCurve(
        e0_V=4.4117,
        slope_V=0.6337,
        steps=((0.0310, 0.5751, 0.0858), (0.1411, 0.1169, 0.0387), (0.0238, 0.3034, 0.0100)),
        b_empty_V=0.4941,
        l_empty=0.0472,
        b_full_V=0.9820,
        l_full=0.0051,
    ),
    diffusivity=DiffusivityCurve(
        log10_d_max=-9.7,
        dip_decades=0.6,
        x_dip=0.24,
        sigma_dip=0.06,
        full_decades=1.3,
        l_full=0.05,
        activation_eV=0.40,
    ),
    lattice=LatticeCurve(
        a0_A=2.872,
        da_dx_A=0.0561,
        c0_A=14.20,
        dc_dx_h2_A=0.34,
        c_h3_A=13.81,
        dc_dx_h3_A=2.0,
        x_h3=0.23,
        w_h3=0.02,
    ),
    exchange_current_A_cm2=1.0e-4,
    ni_fraction=0.9,
    ni_valence_pristine=3.0,
    ni_redox_share=0.9,
)

NM91 = CathodeMaterial(
    name="NM91",
    formula="LiNi0.9Mn0.1O2",
    molar_mass_g_mol=97.26,
    density_g_cm3=4.75,
    ocv=OCVCurve(
        e0_V=4.4395,
        slope_V=0.6368,
        steps=((0.0257, 0.5979, 0.0203), (0.1492, 0.1456, 0.0387), (0.0355, 0.3696, 0.0350)),
        b_empty_V=0.4611,
        l_empty=0.0611,
        b_full_V=0.9821,
        l_full=0.0051,
    ),
    diffusivity=DiffusivityCurve(
        log10_d_max=-10.5,
        dip_decades=2.0,
        x_dip=0.28,
        sigma_dip=0.03,
        full_decades=1.3,
        l_full=0.05,
        activation_eV=0.40,
    ),
    lattice=LatticeCurve(
        a0_A=2.877,
        da_dx_A=0.0643,
        c0_A=14.21,
        dc_dx_h2_A=0.33,
        c_h3_A=13.96,
        dc_dx_h3_A=0.5,
        x_h3=0.26,
        w_h3=0.02,
    ),
    exchange_current_A_cm2=1.0e-4,
    ni_fraction=0.9,
    ni_valence_pristine=2.6 / 0.9,
    ni_redox_share=1.0,
)

MATERIALS: Mapping[str, CathodeMaterial] = MappingProxyType({"NC91": NC91, "NM91": NM91})


def material(name: str) -> CathodeMaterial:
    """The material called `name` ("NC91" or "NM91")."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise ValueError(f"unknown material {name!r}; known: {sorted(MATERIALS)}") from None


@dataclass(frozen=True)
class Morphology:
    """Particle architecture.

    diffusion_radius_um: radius of the sphere Li diffuses through (the single crystal, or
    one primary grain of a polycrystal, whose grain boundaries the electrolyte reaches).
    particle_radius_um: radius of the whole particle as an imaging method sees it.
    """

    name: str
    diffusion_radius_um: float
    particle_radius_um: float


SC = Morphology(name="SC", diffusion_radius_um=2.0, particle_radius_um=2.0)
PC = Morphology(name="PC", diffusion_radius_um=0.25, particle_radius_um=3.25)
MORPHOLOGIES: Mapping[str, Morphology] = MappingProxyType({"SC": SC, "PC": PC})


def morphology(name: str) -> Morphology:
    """The morphology called `name` ("SC" or "PC")."""
    try:
        return MORPHOLOGIES[name]
    except KeyError:
        raise ValueError(f"unknown morphology {name!r}; known: {sorted(MORPHOLOGIES)}") from None


@dataclass(frozen=True)
class FadeRates:
    """Phenomenological per-cycle degradation, applied by `CathodeParticle.age`.

    After n cycles: active fraction f = (1 - active_loss_per_cycle)^n (isolated or
    rock-salt-converted material: the specific capacity scales with f) and diffusivity
    factor g = (1 - diffusivity_loss_per_cycle)^n (D -> g D: surface reconstruction,
    lattice defects).
    """

    active_loss_per_cycle: float
    diffusivity_loss_per_cycle: float


FADE_RATES: Mapping[tuple[str, str], FadeRates] = MappingProxyType(
    {
        ("NC91", "PC"): FadeRates(active_loss_per_cycle=0.00515, diffusivity_loss_per_cycle=0.01),
        ("NM91", "PC"): FadeRates(active_loss_per_cycle=0.00181, diffusivity_loss_per_cycle=0.01),
        ("NC91", "SC"): FadeRates(active_loss_per_cycle=0.00095, diffusivity_loss_per_cycle=0.01),
        ("NM91", "SC"): FadeRates(active_loss_per_cycle=0.00193, diffusivity_loss_per_cycle=0.01),
    }
)
"""Calibrated fade rates, keyed by (material name, morphology name).

The diffusivity loss (1 %/cycle, D x 0.37 after 100 cycles) is one shared guess; the
active loss per cycle is fitted per material and morphology so that the simulated
discharge capacity at 100 mA/g after `age(100)`, relative to the fresh particle, matches
the reported retention (PC-NC91 59.7 %, PC-NM91 83.1 %, SC-NC91 89.2 %, SC-NM91 75.9 %).
This is a fitted phenomenological model, not a prediction: the retention ranking is put
in here (e.g. PC-NC91 cracking, which the model does not describe), not derived. Only
the part of the fade that the slower diffusion causes (largest for SC-NM91, ~6 %) and
the growth of the H2/H3 heterogeneity with ageing come out of the particle model."""
