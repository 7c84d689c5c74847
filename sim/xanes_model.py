"""Model Ni K-edge XANES spectra with a known white-line energy (SCIENCE.md section 4).

A forward model, not an analysis: `ni_k_edge_xanes` puts the maximum of mu(E) exactly at
the white-line (WL) energy it is given, so the simulated microscope (`sim.txm`), the
phantoms (`sim.phantoms`) and the tests of `analysis.xanes` have a known answer.
Energies in eV, absorbance in the units of ``edge_step``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq

from nanostrain.analysis.units import FWHM_PER_SIGMA

__all__ = ["ni_k_edge_xanes"]


def _pseudo_voigt_slope(x: float, fwhm: float, lorentz_fraction: float) -> float:
    """-d/dx of a unit-height pseudo-Voigt of full width ``fwhm`` at offset ``x``."""
    sigma = fwhm / FWHM_PER_SIGMA
    gamma = fwhm / 2.0
    gauss = x / sigma**2 * np.exp(-0.5 * (x / sigma) ** 2)
    lorentz = 2.0 * x / gamma**2 / (1.0 + (x / gamma) ** 2) ** 2
    return (1.0 - lorentz_fraction) * gauss + lorentz_fraction * lorentz


def ni_k_edge_xanes(
    energies_eV: ArrayLike,
    whiteline_eV: ArrayLike,
    *,
    edge_step: float = 1.0,
    edge_offset_eV: float = 7.0,
    edge_width_eV: float = 1.5,
    wl_amplitude: float = 0.6,
    wl_fwhm_eV: float = 7.0,
    lorentz_fraction: float = 0.0,
) -> np.ndarray:
    """Model Ni K-edge XANES whose maximum lies exactly at ``whiteline_eV``.

    mu(E) = J [1/2 + arctan((E - E0)/G)/pi] + A V(E - c),  E0 = E_wl - edge_offset_eV,

    with J the edge step, G the edge width (eV), V a unit-height pseudo-Voigt of full
    width ``wl_fwhm_eV`` ((1 - eta) Gaussian + eta Lorentzian, eta = ``lorentz_fraction``)
    and A its amplitude. The white-line centre c = E_wl - delta sits slightly below
    E_wl: delta solves A (-V'(delta)) = J G / (pi (G^2 + edge_offset_eV^2)), i.e. the
    rising edge's slope at E_wl cancels the peak's, so d mu/dE = 0 exactly at E_wl.
    The edge follows the white line (one rigid shift per voxel), as for a change of Ni
    oxidation state. Defaults give a normalised peak of about 1.53 at a 7 eV wide white
    line, typical of Ni in layered NMC cathodes.

    Parameters
    ----------
    energies_eV : (n_energies,) photon energies, eV.
    whiteline_eV : any shape; WL energy per voxel, eV.
    edge_step, wl_amplitude : absorbance units.
    edge_offset_eV, edge_width_eV, wl_fwhm_eV : eV.
    lorentz_fraction : 0 (Gaussian) to 1 (Lorentzian) white-line shape.

    Returns
    -------
    mu : ``whiteline_eV.shape + (n_energies,)``.
    """
    energies = np.asarray(energies_eV, dtype=np.float64)
    wl = np.asarray(whiteline_eV, dtype=np.float64)[..., None]
    if not 0.0 <= lorentz_fraction <= 1.0:
        raise ValueError(f"lorentz_fraction must be in [0, 1], got {lorentz_fraction}")
    if min(edge_step, edge_width_eV, wl_fwhm_eV, wl_amplitude) <= 0:
        raise ValueError("edge_step, edge_width_eV, wl_fwhm_eV and wl_amplitude must be > 0")
    edge_slope = edge_step * edge_width_eV / (np.pi * (edge_width_eV**2 + edge_offset_eV**2))
    # -V' rises monotonically from 0 on [0, fwhm/(2 sqrt 3)] for any Gauss/Lorentz mix.
    x_max = wl_fwhm_eV / (2.0 * np.sqrt(3.0))
    if wl_amplitude * _pseudo_voigt_slope(x_max, wl_fwhm_eV, lorentz_fraction) <= edge_slope:
        raise ValueError("white line too weak for the edge slope: mu(E) has no maximum")
    delta = brentq(
        lambda x: wl_amplitude * _pseudo_voigt_slope(x, wl_fwhm_eV, lorentz_fraction)
        - edge_slope,
        0.0,
        x_max,
        xtol=1e-12,
    )
    edge = 0.5 + np.arctan((energies - (wl - edge_offset_eV)) / edge_width_eV) / np.pi
    x = energies - (wl - delta)
    sigma = wl_fwhm_eV / FWHM_PER_SIGMA
    peak = (1.0 - lorentz_fraction) * np.exp(-0.5 * (x / sigma) ** 2) + lorentz_fraction / (
        1.0 + (2.0 * x / wl_fwhm_eV) ** 2
    )
    return edge_step * edge + wl_amplitude * peak
