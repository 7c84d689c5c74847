"""Lattice strain from measured and reference d spacings (SCIENCE.md eq. 1)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def strain(d: npt.ArrayLike, d0: npt.ArrayLike) -> np.ndarray:
    """Lattice strain eps = (d - d0) / d0 (eq. 1), dimensionless, broadcast over d and d0.

    d: measured spacing; d0: reference (pristine / unstrained) spacing, same length unit
    (angstrom by convention). The same formula gives c/c0 - 1 or a/a0 - 1 when lattice
    parameters are passed instead of spacings.
    """
    d0 = np.asarray(d0, dtype=float)
    if np.any(d0 <= 0):
        raise ValueError("reference spacing d0 must be positive")
    return (np.asarray(d, dtype=float) - d0) / d0


def contraction_pct(c_A: npt.ArrayLike) -> float:
    """Contraction of a lattice parameter over a run, 100 (c_max - c_min) / c_max (%),
    over its finite values; NaN when there are none."""
    c = np.asarray(c_A, dtype=float)
    c = c[np.isfinite(c)]
    return float(100 * (c.max() - c.min()) / c.max()) if c.size else float("nan")


def shrinkage_from_first_pct(volume_A3: npt.ArrayLike) -> float:
    """Shrinkage of the cell volume from the first finite frame, 100 (V_0 - V_min) / V_0
    (%); NaN when no value is finite."""
    volume = np.asarray(volume_A3, dtype=float)
    volume = volume[np.isfinite(volume)]
    return float(100 * (volume[0] - volume.min()) / volume[0]) if volume.size else float("nan")
