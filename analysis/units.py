"""Units and conventions shared by every technique (DESIGN.md, "Conventions").

Lengths (lattice, d) in angstrom, Q in 1/angstrom, photon energies in eV, angles in
degrees at every public interface (radians only inside a function). Relations::

    lambda[A] = hc / E = 12398.419843320026 / E[eV]        (hc in eV * angstrom)
    K = 2 pi / lambda                                      (1/A)
    Q = 2 pi / d = 4 pi sin(theta) / lambda                (Bragg)

Libraries that want other units (pyFAI: metres and 1/nm; xraylarch, xrayutilities: eV)
are converted at their boundary, with the constants here.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike

HC_EV_A = 12398.419843320026
"""h c in eV * angstrom (CODATA 2018): lambda[A] = HC_EV_A / E[eV]."""

M_PER_A = 1e-10
"""Metres per angstrom (pyFAI lengths and wavelengths are in metres)."""

INV_NM_PER_INV_A = 10.0
"""Q[1/nm] = 10 Q[1/A] (pyFAI's q_nm^-1 unit)."""

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
"""Full width at half maximum of a Gaussian in units of its standard deviation, 2 sqrt(2 ln 2)."""


def wavelength_A(energy_eV: ArrayLike) -> np.ndarray:
    """lambda = hc / E, angstrom, of a photon energy in eV."""
    energy = np.asarray(energy_eV, dtype=float)
    if np.any(energy <= 0):
        raise ValueError(f"photon energy must be > 0 eV, got {energy_eV}")
    return HC_EV_A / energy


def energy_eV(wavelength: ArrayLike) -> np.ndarray:
    """E = hc / lambda, eV, of a wavelength in angstrom."""
    wl = np.asarray(wavelength, dtype=float)
    if np.any(wl <= 0):
        raise ValueError(f"wavelength must be > 0 A, got {wavelength}")
    return HC_EV_A / wl


def wavenumber_invA(energy: ArrayLike) -> np.ndarray:
    """K = 2 pi / lambda (1/A) of a photon energy in eV."""
    return 2.0 * np.pi / wavelength_A(energy)


def d_to_q(d_A: ArrayLike) -> np.ndarray:
    """Q = 2 pi / d. d in angstrom -> Q in 1/angstrom."""
    return 2.0 * np.pi / np.asarray(d_A, dtype=float)


def q_to_d(q: ArrayLike) -> np.ndarray:
    """d = 2 pi / Q. Q in 1/angstrom -> d in angstrom."""
    return 2.0 * np.pi / np.asarray(q, dtype=float)


def q_to_two_theta(q: ArrayLike, wavelength: float) -> np.ndarray:
    """2 theta = 2 arcsin(Q lambda / (4 pi)), in degrees. Q in 1/A, lambda in A.

    Raises ValueError for Q beyond the Ewald limit 4 pi / lambda.
    """
    s = np.asarray(q, dtype=float) * wavelength / (4.0 * np.pi)
    if np.any(np.abs(s) > 1.0):
        raise ValueError(f"Q above 4 pi / lambda = {4 * np.pi / wavelength:.4g} 1/A")
    return np.degrees(2.0 * np.arcsin(s))


def two_theta_to_q(two_theta_deg: ArrayLike, wavelength: float) -> np.ndarray:
    """Q = 4 pi sin(theta) / lambda, in 1/A. 2 theta in degrees, lambda in A."""
    theta = np.radians(np.asarray(two_theta_deg, dtype=float)) / 2.0
    return 4.0 * np.pi * np.sin(theta) / wavelength


def d_to_two_theta(d_A: ArrayLike, wavelength: float) -> np.ndarray:
    """Bragg angle 2 theta = 2 arcsin(lambda / (2 d)), in degrees. d and lambda in A."""
    return q_to_two_theta(d_to_q(d_A), wavelength)


def two_theta_to_d(two_theta_deg: ArrayLike, wavelength: float) -> np.ndarray:
    """d = lambda / (2 sin theta), in A. 2 theta in degrees, lambda in A."""
    return q_to_d(two_theta_to_q(two_theta_deg, wavelength))


def fwhm_q_to_two_theta(fwhm_q: ArrayLike, q: ArrayLike, wavelength: float) -> np.ndarray:
    """Width of a peak at Q, converted from 1/A of Q to degrees of 2 theta.

    Exact difference 2theta(Q + w/2) - 2theta(Q - w/2), not the first-order
    w * lambda / (4 pi cos theta) * 2 (they agree for narrow peaks).
    """
    w = np.asarray(fwhm_q, dtype=float)
    q = np.asarray(q, dtype=float)
    return q_to_two_theta(q + w / 2, wavelength) - q_to_two_theta(q - w / 2, wavelength)
