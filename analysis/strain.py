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
