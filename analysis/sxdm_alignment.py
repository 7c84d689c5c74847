"""SXDM alignment numerics: the Bragg peak of a rocking scan, the particle of a fluorescence map.

Two reductions the SXDM search plans (`plans.sxdm.find_bragg_peak`, `plans.sxdm.xrf_map`)
call where they must decide where to go:

* `fit_rocking_curve`: least-squares Gaussian on a constant background of the detector's
  total counts against the rocking angle,

      I(theta) = A exp(-(theta - theta_c)^2 / (2 s^2)) + B,     FWHM = 2 sqrt(2 ln 2) s;

* `xrf_centroid`: the counts-weighted centroid of a fluorescence raster, with weights
  w = counts - min(counts) kept where w >= threshold * max(w) (the particle), zero elsewhere,

      (y_c, x_c) = sum(w (y, x)) / sum(w).

Units: angles in deg, stage positions in um, counts as recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import curve_fit

from nanostrain.analysis.units import FWHM_PER_SIGMA

__all__ = ["RockingCurveFit", "XrfMap", "fit_rocking_curve", "xrf_centroid"]


@dataclass(frozen=True)
class RockingCurveFit:
    """Gaussian rocking curve I(theta) = A exp(-(theta - centre)^2 / (2 s^2)) + B:
    centre_deg, fwhm_deg = 2 sqrt(2 ln 2) s (deg), amplitude A and background B (counts)."""

    centre_deg: float
    fwhm_deg: float
    amplitude: float
    background: float


def _gaussian(theta: NDArray[np.float64], centre: float, sigma: float, amplitude: float, background: float):
    return amplitude * np.exp(-0.5 * ((theta - centre) / sigma) ** 2) + background


def fit_rocking_curve(thetas_deg: ArrayLike, counts: ArrayLike) -> RockingCurveFit:
    """Least-squares Gaussian + constant fit of counts against angle (see `RockingCurveFit`).

    Starts from the counts-weighted moments above the minimum; raises ValueError for fewer
    than 4 points, a flat curve, a failed fit, or a centre outside the scanned range (no
    peak in range: nothing is extrapolated).
    """
    theta = np.asarray(thetas_deg, dtype=np.float64).ravel()
    y = np.asarray(counts, dtype=np.float64).ravel()
    if theta.size < 4 or theta.size != y.size:
        raise ValueError(f"a rocking-curve fit needs >= 4 (angle, counts) pairs, got {theta.size} and {y.size}")
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(y))):
        raise ValueError("rocking-curve angles and counts must be finite")
    weight = y - y.min()
    if not weight.sum() > 0:
        raise ValueError("flat rocking curve: no Bragg peak in the scanned range")
    centre0 = float(np.sum(weight * theta) / weight.sum())
    sigma0 = float(np.sqrt(np.sum(weight * (theta - centre0) ** 2) / weight.sum())) or float(np.ptp(theta)) / 4
    try:
        (centre, sigma, amplitude, background), _ = curve_fit(
            _gaussian, theta, y, p0=(centre0, sigma0, np.ptp(y), y.min())
        )
    except RuntimeError as error:
        raise ValueError(f"rocking-curve fit failed: {error}") from error
    if not theta.min() <= centre <= theta.max():
        raise ValueError(
            f"fitted peak at {centre:.4f} deg is outside the scanned {theta.min()}..{theta.max()} deg"
        )
    return RockingCurveFit(float(centre), float(FWHM_PER_SIGMA * abs(sigma)), float(amplitude), float(background))


@dataclass(frozen=True)
class XrfMap:
    """A fluorescence map: y and x points (um), counts (ny, nx) and the counts-weighted
    centroid (y, x) (um) of the particle (`xrf_centroid`)."""

    ys_um: NDArray[np.float64]
    xs_um: NDArray[np.float64]
    counts: NDArray[np.float64]
    centroid_um: tuple[float, float]


def xrf_centroid(ys_um: ArrayLike, xs_um: ArrayLike, counts: ArrayLike, threshold: float = 0.5) -> tuple[float, float]:
    """Centroid (y, x) (um) of w = counts - min(counts) over the pixels where w >= threshold max(w).

    ys_um (ny,), xs_um (nx,): raster points; counts (ny, nx). Raises ValueError for a
    threshold outside (0, 1), mismatched shapes or a flat map (no particle).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    ys, xs = np.asarray(ys_um, dtype=np.float64), np.asarray(xs_um, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (ys.size, xs.size):
        raise ValueError(f"counts must be (ny={ys.size}, nx={xs.size}), got {counts.shape}")
    weight = counts - np.min(counts)
    weight = np.where(weight >= threshold * weight.max(), weight, 0.0)
    if not weight.sum() > 0:
        raise ValueError("flat fluorescence map: no particle found")
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return float(np.sum(weight * yy) / weight.sum()), float(np.sum(weight * xx) / weight.sum())
