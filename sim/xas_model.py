"""Ex situ Ni K-edge XAS of a cathode electrode: mu(E) with edge, white line and the EXAFS
of the Ni-O shell (SCIENCE.md section 5). A forward model with known answers for
`analysis.xas`.

The electrode is the cathode simulator's particle (`sim.samples.cathode_particle`): each
radial shell j (volume fraction w_j) holds Ni of mean valence v_j
(`CathodeParticle.ni_valence`), which sets

* its edge and white line: the unit-step XANES `sim.xanes_model.ni_k_edge_xanes` with
  the white line at E_wl(v) = 8349.6 + 2.0 (v - 3) eV (`sim.txm.whiteline_from_valence`,
  the TXM's relation), the edge 7 eV below it;
* its Ni-O bond length R(v) = R_NI3_A + R_PER_VALENCE_A (v - 3) (2.055 A for Ni2+,
  1.965 A for Ni3+, 1.875 A for Ni4+: the ionic radii's trend, as layered Ni-rich oxides
  show on charge), minus a fatigue contraction;
* its bond-length variance sigma_j^2 = SIGMA2_THERMAL_A2 (at -25 C) + SIGMA2_JT_A2 f3(v)
  (the unresolved Jahn-Teller distortion of Ni3+O6, f3 the Ni3+ fraction) + fatigue.

Fatigue after n cycles, g(n) = 1 - exp(-n / FATIGUE_CYCLES): sigma^2 += s_m g(n) and
R -= c_m g(n), with s_m, c_m per material (`FATIGUE`): Co-free NM91 accumulates more
local disorder and a contracted Ni-O bond than NC91 (the study's fatigued phases).

The EXAFS of the Ni-O shell is the ensemble average over a Gaussian distribution of
distances r in every shell j (quadrature, `DISTANCE_NODES` nodes over +-4 sigma_j), with
the FEFF amplitude |f(k)| (mag x reduction factor), phase delta(k) (2 phc + phase) and
mean free path lambda(k) of `analysis.xas.NI_O_FEFF_PATH` (FEFF6, NiO6):

    chi(k) = sum_j w_j sum_r P_j(r) N S0^2 |f(k)| / (k r^2) exp(-2 r / lambda(k))
             sin(2 k R_eff + delta(k) + 2 p(k) (r - R_eff)),

N = 6, S0^2 = 0.8, k = sqrt((E - E_k) / 3.80998) 1/A from E_k = the shell's white line
energy, P_j the Gaussian weights of the distances r. FEFF's phase delta(k) holds for its
path length R_eff; a path of length r adds 2 p (r - R_eff), with p (FEFF's real[p]) the
photoelectron's wavenumber inside the material, which exceeds k near the edge (so the
ensemble's disorder damps as exp(-2 p^2 sigma^2): this is the textbook equation
chi = N S0^2 |f| / (k R^2) exp(-2 k^2 sigma^2) exp(-2 R / lambda) sin(2 k R + delta) with
FEFF's momentum in the disorder and distance terms). The ensemble's mean distance and variance (`XasSpecimen.bond_length_A`,
`XasSpecimen.sigma2_A2`) are the ground truth a first-shell fit must recover; nothing here
uses the fit's cumulant expansion. Absorbance (mu t of the electrode):

    mu t (E) = MATRIX_MU_T (E / 8350 eV)^-3 + J [ xanes(E) + chi(k(E)) s(k) ],

with J = ``edge_step``, s(k) = 1 - exp(-k^2 / 2) switching the EXAFS on above the edge.
The Ni reference foil (`ni_foil_absorbance`) is `sim.txm.NiFoil`'s, its edge at 8333 eV.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike

from nanostrain.analysis.xas import ETOK_EV_A2, NI_O_FEFF_PATH, read_feff_path
from nanostrain.schema.sample import SampleRecord

from .samples import cathode_particle
from .txm import NiFoil, whiteline_from_valence
from .xanes_model import ni_k_edge_xanes

__all__ = ["FATIGUE", "XasSpecimen", "electrode_specimen", "ni_foil_absorbance", "shell_parameters"]

#: Ni-O distance of Ni3+ in a layered oxide, A.
R_NI3_A = 1.965
#: Change of the Ni-O distance per unit of Ni valence, A.
R_PER_VALENCE_A = -0.09
#: Thermal Ni-O bond-length variance at -25 C, A^2.
SIGMA2_THERMAL_A2 = 0.0040
#: Bond-length variance of the unresolved Jahn-Teller distortion of pure Ni3+O6, A^2.
SIGMA2_JT_A2 = 0.0020
#: Cycles over which fatigue saturates (1 - 1/e of it).
FATIGUE_CYCLES = 20.0
#: Coordination number and amplitude reduction of the Ni-O shell.
COORDINATION = 6
S02 = 0.8
#: Non-resonant absorbance of the electrode (and its Kapton) at 8350 eV.
MATRIX_MU_T = 0.6
#: Quadrature nodes over the Gaussian distance distribution of each shell.
DISTANCE_NODES = 41
#: Energies per vectorised block of `XasSpecimen.absorbance` (bounds its memory).
ABSORBANCE_CHUNK = 256


@dataclass(frozen=True)
class Fatigue:
    """Saturated fatigue of a material: bond-length variance added (A^2), Ni-O contraction (A)."""

    sigma2_A2: float
    contraction_A: float


#: Fatigue per cathode material (module docstring).
FATIGUE = {"NC91": Fatigue(sigma2_A2=0.0008, contraction_A=0.004), "NM91": Fatigue(sigma2_A2=0.0030, contraction_A=0.015)}


def _ni3_fraction(valence: np.ndarray) -> np.ndarray:
    """Fraction of Ni3+ for mean valence v between Ni2+/Ni3+ and Ni3+/Ni4+ mixtures."""
    return np.clip(1.0 - np.abs(valence - 3.0), 0.0, 1.0)


def shell_parameters(valence: ArrayLike, material: str, cycles: int) -> tuple[np.ndarray, np.ndarray]:
    """(R_A, sigma2_A2) of the Ni-O bond in shells of Ni valence ``valence`` of ``material``
    aged ``cycles`` cycles (module docstring)."""
    if material not in FATIGUE:
        raise ValueError(f"no XAS model for material {material!r}; known: {sorted(FATIGUE)}")
    valence = np.asarray(valence, dtype=np.float64)
    fatigue, aged = FATIGUE[material], 1.0 - np.exp(-max(cycles, 0) / FATIGUE_CYCLES)
    bond = R_NI3_A + R_PER_VALENCE_A * (valence - 3.0) - fatigue.contraction_A * aged
    sigma2 = SIGMA2_THERMAL_A2 + SIGMA2_JT_A2 * _ni3_fraction(valence) + fatigue.sigma2_A2 * aged
    return bond, sigma2


@lru_cache(maxsize=1)
def _scattering() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """FEFF tables of the Ni-O path: k (1/A), |f| (mag x reduction), delta (rad), lambda (A),
    p (1/A), and its R_eff (A)."""
    table = read_feff_path(NI_O_FEFF_PATH)
    return (table["k"], table["mag"] * table["red_factor"], table["phc2"] + table["phase"], table["lambda"],
            table["real_p"], float(table["reff"]))


@dataclass(frozen=True)
class XasSpecimen:
    """An electrode: per-shell Ni valence, volume fraction, Ni-O distance (A) and variance (A^2)."""

    valence: np.ndarray
    weights: np.ndarray
    bond_A: np.ndarray
    sigma2_shell_A2: np.ndarray
    edge_step: float = 1.0
    name: str = "electrode"

    @property
    def bond_length_A(self) -> float:
        """Mean Ni-O distance of the whole electrode, A (ground truth of a fit's R)."""
        return float(np.sum(self.weights * self.bond_A))

    @property
    def sigma2_A2(self) -> float:
        """Variance of the Ni-O distance over the electrode, A^2: shell variances plus the
        spread of the shells' mean distances (ground truth of a fit's sigma^2)."""
        spread = np.sum(self.weights * (self.bond_A - self.bond_length_A) ** 2)
        return float(np.sum(self.weights * self.sigma2_shell_A2) + spread)

    @property
    def mean_valence(self) -> float:
        return float(np.sum(self.weights * self.valence))

    @property
    def whiteline_eV(self) -> np.ndarray:
        """White-line energy of each shell, eV."""
        return whiteline_from_valence(self.valence)

    def chi(self, k: ArrayLike, shell: int) -> np.ndarray:
        """chi(k) of shell ``shell`` (module docstring), k in 1/A."""
        k = np.asarray(k, dtype=np.float64)
        return self._chi_shells(k[..., None], np.array([shell]))[..., 0]

    def _chi_shells(self, k: np.ndarray, shells: np.ndarray) -> np.ndarray:
        """chi of the shells ``shells`` (indices) at k (1/A, shape (..., len(shells)): each
        shell's own k), vectorised over both."""
        table_k, amplitude, phase, mean_free_path, momentum, reff = _scattering()
        f, delta, lam, p = (np.interp(k, table_k, column) for column in (amplitude, phase, mean_free_path, momentum))
        sigma = np.sqrt(self.sigma2_shell_A2[shells])
        offsets = np.linspace(-4.0, 4.0, DISTANCE_NODES)
        density = np.exp(-0.5 * offsets**2)
        density /= density.sum()
        r = self.bond_A[shells][:, None] + sigma[:, None] * offsets
        kk = np.where(k > 1e-6, k, 1e-6)[..., None]
        phase = 2.0 * kk * reff + delta[..., None] + 2.0 * p[..., None] * (r - reff)
        terms = density * np.exp(-2.0 * r / lam[..., None]) * np.sin(phase) / r**2
        return COORDINATION * S02 * f / kk[..., 0] * terms.sum(axis=-1)

    def absorbance(self, energies_eV: ArrayLike) -> np.ndarray:
        """mu t of the electrode at ``energies_eV`` (module docstring; any shape)."""
        energies = np.asarray(energies_eV, dtype=np.float64)
        whiteline = self.whiteline_eV
        flat, exafs = energies.reshape(-1), np.empty(energies.size)
        total = (self.weights @ ni_k_edge_xanes(flat, whiteline)).reshape(energies.shape)
        shells = np.arange(self.weights.size)
        for begin in range(0, flat.size, ABSORBANCE_CHUNK):
            part = flat[begin:begin + ABSORBANCE_CHUNK, None]
            k = np.sqrt(np.clip(part - whiteline, 0.0, None) / ETOK_EV_A2)
            switched = self._chi_shells(k, shells) * (1.0 - np.exp(-0.5 * k**2))
            exafs[begin:begin + ABSORBANCE_CHUNK] = switched @ self.weights
        return MATRIX_MU_T * (energies / 8350.0) ** -3 + self.edge_step * (total + exafs.reshape(energies.shape))


def electrode_specimen(record: SampleRecord, edge_step: float = 1.0) -> XasSpecimen:
    """The electrode of ``record`` (a cathode; its state as `sim.samples.cathode_particle`
    makes it): shells' valence and volume fractions, bond parameters after
    ``record.cycles`` cycles."""
    particle = cathode_particle(record)
    shells = particle.shells
    valence = np.asarray(particle.ni_valence(), dtype=np.float64)
    bond, sigma2 = shell_parameters(valence, record.material, record.cycles)
    return XasSpecimen(valence, np.asarray(shells.volume_fraction, dtype=np.float64), bond, sigma2,
                       edge_step=edge_step, name=record.name)


def ni_foil_absorbance(energy_eV: float) -> float:
    """Absorbance of the 5 um Ni reference foil (`sim.txm.NiFoil`, edge at 8333 eV)."""
    return _NI_FOIL.absorbance(energy_eV)


_NI_FOIL = NiFoil(shape=(1, 1, 1))
