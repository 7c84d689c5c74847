"""Sequential whole-pattern (Pawley) refinement of operando powder XRD patterns.

The single-reflection route (`analysis.xrd_reduction`) fits the (003) and a few isolated
lines one at a time. This module fits the whole reduced pattern I(Q) at once, the way
crystallographers refine operando data (GSAS-II/TOPAS sequential Pawley or Le Bail
fits), frame after frame, each frame seeded from the previous one.

No installed library does it: GSAS-II is not pip-installable, xrayutilities' powder
model has no Pawley or Le Bail refinement, so the fit is written here on
``scipy.optimize.least_squares``.

Model (Q in 1/A, lengths in A, angles in degrees at the interface)::

    I(Q_b) = sum_p sum_hkl s_p J_hkl (Q0 / Q_p,hkl)^2 <pV(Q; Q_p,hkl, Gamma, eta)>_b
             + sum_Al J_Al <pV(Q; Q_Al, Gamma_instr, eta_instr)>_b
             + sum_{j=0..5} b_j T_j(x),        x = 2 (Q - Q_lo) / (Q_hi - Q_lo) - 1

* Reflections: every R-3m family (-h + k + l = 3n, hexagonal axes; lines of equal d
  merged, `analysis.xrd.r3m_reflections`) of each layered phase p (cell a_p, c_p),
  1/d^2 = 4 (h^2 + hk + k^2) / (3 a^2) + l^2 / c^2, Q = 2 pi / d; and every line of the
  fcc Al current collector (`analysis.xrd.al_reflections`), d = a_Al / sqrt(h^2+k^2+l^2).
* Profile: area-normalised pseudo-Voigt averaged over each Q bin b, as whole-pixel
  integration averages it: <pV>_b = int pV(Q) rho_b(Q) dQ / int rho_b dQ over the bin's
  edges, with the bin's pixel density taken linear, rho_b = 1 + beta_b (Q - m_b), m_b
  the bin's middle, beta_b = 12 (Q_b - m_b) / w_b^2 so that its mean is the bin's mean
  pixel Q_b (the Q `analysis.xrd.Integrator` reports; the pixels of a ring bin are denser
  at higher Q); both integrals are analytic (arctan/erf and log/exp). Without the true
  edges: edges halfway between the bins' Q, uniform density. Widths, in 2 theta
  (GSAS-II's constant-wavelength terms, `analysis.xrd.GsasProfile`, from the CeO2
  calibration's ring widths, `analysis.xrd_calibration.ring_widths` -> `gsas_profile`)::

      G^2  = 8 ln 2 (U tan^2 theta + V tan theta + W) / 100^2          (deg^2, instrument)
      L    = (X / cos theta + Y tan theta) / 100                         (deg, instrument)
             + (180 / pi) [K lambda / (D cos theta) + 4 eps tan theta]   (sample, eq. 4)

  converted to Q by dQ = (2 pi / lambda) cos(theta) d(2 theta) (sample term:
  L_Q = 2 pi K / D + 2 eps Q, K = 0.9), combined by Thompson-Cox-Hastings into one FWHM
  Gamma and mixing eta (`analysis.xrd.tch_gaussian_fwhm` gives the inverse relation).
  D is the crystallite size (A), eps the microstrain (SCIENCE.md eq. 4), shared by the
  layered phases; Al lines take the instrument profile alone.
* Background: Chebyshev polynomials T_0..T_5 (six coefficients, as the reference study's
  GSAS-II refinements), linear parameters.
* Intensities (Pawley): J_hkl free, one per R-3m family and one per Al line, solved
  linearly inside the nonlinear search (variable projection: for given cells, widths
  and fraction, J and b are the weighted linear least-squares solution). No structure
  model is needed, which is what the brief asks of Pawley/Le Bail; the price is that
  families closer than a fraction of a width are ill-determined (the SVD solve drops
  directions below 1e-10 of the largest singular value).
* Two layered phases of one structure (H2 + H3 at high state of charge): both share the
  relative intensities J_hkl, each has a scale s_p, written as fractions
  s_1 = 1 - f, s_2 = f. The Lorentz factor of a powder ring in I(Q) per solid angle is
  ~1/Q^2 (`sim.powder.line_intensity`), so J_hkl (Q0/Q_p,hkl)^2 puts each phase's line
  where its cell puts it with the intensity a cell of that structure scatters there
  (Q0 = 1 1/A fixes the units of J). f is then the share of the diffracting layered
  oxide in the smaller-c phase (H3): it counts cells, i.e. the volume fraction up to the
  ratio of cell volumes (V_H3 / V_H2 ~ 0.95), and neglects the change of |F|^2 and of
  the Debye-Waller factor between the two lines of one family (< 3 % of an area).
  Sharing J is what makes f measurable: with free intensities per phase, the (hk0)
  lines of H2 and H3 (nearly equal a) would trade intensity freely.

Fit: weighted least squares, weights w = 1/esd^2, of the projected residual over the
nonlinear parameters theta = (a_1, c_1[, a_2, c_2, f], 1/D, eps, a_Al) by
``least_squares`` (trust region reflective, bounds, finite-difference Jacobian).
Uncertainties: 1 sigma from the covariance (J^T W J)^-1 chi^2_nu of the full Jacobian
(theta and every linear parameter), chi^2_nu = sum w r^2 / (n - k), so they include
the correlation with the intensities and background and are scaled by the misfit.
Rwp = sqrt(sum w r^2 / sum w y^2). Without esd the weights are 1/max(I, I_floor)
(Poisson's shape; the scale cancels in the scaled covariance).

One or two layered phases (`SequentialRefinement`, n_phases="auto"): a two-phase
whole-pattern fit is tried where the frame's (003) alone shows a second phase by the
single-reflection route's tests with half its separation threshold (`PRESCREEN_SEPARATION`,
the whole pattern then has to pass the full one), or where the previous frame kept two;
the second phase is kept only where it is significant by the tests of the
single-reflection route (`analysis.xrd.second_phase_rejection`), applied to the two
cells' (003) lines: lower BIC (n ln(chi^2/n) + k ln n), each phase >= 5 % (by f), the
(003) lines >= one FWHM and >= 5 sigma apart (sigma from the c errors).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
from numpy.polynomial import chebyshev
from scipy.optimize import least_squares
from scipy.special import erf

from nanostrain.analysis.xrd import (
    AL_LATTICE_A,
    GsasProfile,
    al_reflections,
    fit_reflection,
    r3m_reflections,
    second_phase_rejection,
)

__all__ = [
    "BACKGROUND_TERMS",
    "PawleyModel",
    "PawleyFit",
    "RefinementFrame",
    "SequentialRefinement",
    "refine_pattern",
]

#: Chebyshev background terms (T_0..T_5)
BACKGROUND_TERMS = 6
#: Scherrer constant of SCIENCE.md eq. 4
SCHERRER_K = 0.9
#: Q (1/A) that fixes the units of J_hkl in the Lorentz factor (Q0 / Q)^2
LORENTZ_Q0 = 1.0
#: bounds of the nonlinear parameters: a, c of a layered phase (A), f, 1/D (1/A), eps, a_Al (A)
A_BOUNDS = (2.6, 3.1)
C_BOUNDS = (12.5, 15.5)
INV_SIZE_BOUNDS = (0.0, 0.05)
STRAIN_BOUNDS = (0.0, 0.03)
AL_BOUNDS = (3.95, 4.15)
#: separation (in FWHM) at which a split (003) makes a two-phase whole-pattern fit worth
#: trying (half the single-reflection route's test, which the whole pattern then applies)
PRESCREEN_SEPARATION = 0.5
#: lines are evaluated within this many FWHM of their centre (`sim.powder` draws them so)
TAIL_FWHMS = 20.0
#: (003) window used to seed c (the single-reflection route's, 1/A)
Q003_WINDOW = (1.24, 1.46)
_FOUR_LN2 = 4.0 * math.log(2.0)
_LN2_8 = 8.0 * math.log(2.0)
_GAUSS_MOMENT = math.sqrt(_FOUR_LN2 / math.pi) / _LN2_8  # int x G dx = -w this exp(-4 ln2 u^2)

ArrayLike = npt.ArrayLike


def _bin_edges(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mid = (q[1:] + q[:-1]) / 2
    return np.concatenate([[2 * q[0] - mid[0]], mid]), np.concatenate([mid, [2 * q[-1] - mid[-1]]])


def _tch(gauss: np.ndarray, lorentz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thompson-Cox-Hastings total FWHM and eta of a Voigt of Gaussian FWHM G and
    Lorentzian FWHM L (the relation of `sim.powder` and GSAS-II)."""
    g, lo = gauss, lorentz
    fwhm = (g**5 + 2.69269 * g**4 * lo + 2.42843 * g**3 * lo**2 + 4.47163 * g**2 * lo**3
            + 0.07842 * g * lo**4 + lo**5) ** 0.2
    r = lo / fwhm
    return fwhm, 1.36603 * r - 0.47719 * r**2 + 0.11116 * r**3


class PawleyModel:
    """The pattern model of the module docstring on fixed Q bins, for 1 or 2 layered phases.

    q: bin Q (1/A, ascending); wavelength_A: A; instrument: GSAS-II profile terms of the
    instrument (centidegrees, `analysis.xrd.GsasProfile`); n_phases: 1 or 2; families:
    the R-3m (h k l) representatives to include (from `r3m_reflections` of a seed cell);
    q_window: (lo, hi) 1/A mapped to the Chebyshev x in [-1, 1]; edges: (lower, upper)
    edges of each bin (1/A) when q holds the bins' mean pixel Q (pixel-density weighting,
    module docstring), None for edges halfway between the q.
    Parameter vector theta: (a_1, c_1, [a_2, c_2, f,] inv_size, eps, a_Al).
    """

    def __init__(self, q: np.ndarray, wavelength_A: float, instrument: GsasProfile, n_phases: int,
                 families: Sequence[tuple[int, int, int]], q_window: tuple[float, float],
                 edges: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if n_phases not in (1, 2):
            raise ValueError(f"n_phases must be 1 or 2, got {n_phases}")
        self.q = q
        self.lower, self.upper = _bin_edges(q) if edges is None else edges
        self.width = self.upper - self.lower
        self.mid = (self.lower + self.upper) / 2
        self.min_width = float(self.width.min())
        # pixel density 1 + beta (Q - mid) inside a bin, from its mean Q (q) and true edges
        self.beta = np.zeros_like(q) if edges is None else 12.0 * (q - self.mid) / self.width**2
        self.wavelength_A = float(wavelength_A)
        self.k = 2.0 * math.pi / self.wavelength_A
        self.instrument = instrument
        self.n_phases = n_phases
        hkl = np.array(families, dtype=float).reshape(-1, 3)
        self.hex_hk = 4.0 * (hkl[:, 0] ** 2 + hkl[:, 0] * hkl[:, 1] + hkl[:, 1] ** 2) / 3.0
        self.l2 = hkl[:, 2] ** 2
        self.families = [tuple(int(i) for i in row) for row in hkl]
        al = al_reflections((q_window[0] * AL_LATTICE_A / AL_BOUNDS[1], q_window[1] * AL_LATTICE_A / AL_BOUNDS[0]))
        self.al_norm = np.array([math.sqrt(sum(i * i for i in line.hkl)) for line in al])
        self.al_hkl = [line.hkl for line in al]
        self.background = chebyshev.chebvander(2.0 * (q - q_window[0]) / (q_window[1] - q_window[0]) - 1.0,
                                               BACKGROUND_TERMS - 1)
        self.n_nonlinear = 2 + 3 * (n_phases - 1) + 3
        self.n_linear = len(self.families) + len(self.al_hkl) + BACKGROUND_TERMS

    # --- profile ------------------------------------------------------------------------
    def _widths(self, q: np.ndarray, inv_size: float, eps: float, sample: bool) -> tuple[np.ndarray, np.ndarray]:
        """FWHM (1/A) and eta of lines at q (1/A) (module docstring)."""
        sin = np.clip(q / (2.0 * self.k), 0.0, 0.999999)
        cos = np.sqrt(1.0 - sin * sin)
        tan = sin / cos
        u, v, w, x, y = self.instrument
        g2 = np.clip(_LN2_8 * (u * tan * tan + v * tan + w), 0.0, None) / 1e4
        to_q = self.k * cos * math.pi / 180.0  # d(2 theta) in degrees -> dQ
        gauss = np.sqrt(g2) * to_q
        lorentz = (x / cos + y * tan) / 100.0 * to_q
        if sample:
            lorentz = lorentz + 2.0 * math.pi * SCHERRER_K * inv_size + 2.0 * eps * q
        return _tch(np.maximum(gauss, 1e-9), np.maximum(lorentz, 0.0))

    def _peaks(self, centres: np.ndarray, fwhm: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Bin averages (n_bins, n_lines) of unit-area pseudo-Voigts, each line only within
        +-`TAIL_FWHMS` of its centre (as `sim.powder` draws them), weighted inside each
        bin by the pixel density 1 + beta (Q - mid) (module docstring)."""
        out = np.zeros((self.q.size, centres.size))
        n = self.q.size
        half = int(math.ceil(TAIL_FWHMS * float(fwhm.max()) / self.min_width)) + 1
        centre_bin = np.clip(np.searchsorted(self.upper, centres), 0, n - 1)
        index = np.clip(centre_bin[:, None] + np.arange(-half, half + 1)[None, :], 0, n - 1)
        keep = np.ones(index.shape, dtype=bool)
        keep[:, 1:] = index[:, 1:] > index[:, :-1]
        c, w, e = centres[:, None], fwhm[:, None], eta[:, None]

        def antiderivatives(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """int pV dx and int x pV dx (x = Q - centre) up to x."""
            u = x / w
            cdf = e * np.arctan(2.0 * u) / math.pi + (1.0 - e) * 0.5 * erf(math.sqrt(_FOUR_LN2) * u)
            moment = e * w / (4.0 * math.pi) * np.log1p(4.0 * u * u) - (1.0 - e) * w * _GAUSS_MOMENT * np.exp(-_FOUR_LN2 * u * u)
            return cdf, moment

        cdf_hi, m_hi = antiderivatives(self.upper[index] - c)
        cdf_lo, m_lo = antiderivatives(self.lower[index] - c)
        area, moment = cdf_hi - cdf_lo, m_hi - m_lo
        value = (area + self.beta[index] * (moment + (c - self.mid[index]) * area)) / self.width[index]
        lines = np.broadcast_to(np.arange(centres.size)[:, None], index.shape)
        out[index[keep], lines[keep]] = value[keep]
        return out

    def layered_q(self, a: float, c: float) -> np.ndarray:
        """Q (1/A) of the families in a cell (a, c in A)."""
        return 2.0 * math.pi * np.sqrt(self.hex_hk / (a * a) + self.l2 / (c * c))

    def unpack(self, theta: np.ndarray) -> dict[str, float]:
        names = (["a1", "c1", "a2", "c2", "f"] if self.n_phases == 2 else ["a1", "c1"]) + ["inv_size", "eps", "a_al"]
        return dict(zip(names, map(float, theta)))

    def basis(self, theta: np.ndarray) -> np.ndarray:
        """Columns (n_bins, n_linear): one per R-3m family, one per Al line, background."""
        p = self.unpack(theta)
        cells = [(p["a1"], p["c1"], 1.0 - p.get("f", 0.0))]
        if self.n_phases == 2:
            cells.append((p["a2"], p["c2"], p["f"]))
        layered = 0.0
        for a, c, share in cells:
            q = self.layered_q(a, c)
            fwhm, eta = self._widths(q, p["inv_size"], p["eps"], True)
            layered = layered + share * (LORENTZ_Q0 / q) ** 2 * self._peaks(q, fwhm, eta)
        q_al = 2.0 * math.pi * self.al_norm / p["a_al"]
        fwhm, eta = self._widths(q_al, 0.0, 0.0, False)
        return np.hstack([layered, self._peaks(q_al, fwhm, eta), self.background])


@dataclass(frozen=True)
class PawleyFit:
    """One converged fit: the model, theta, the linear coefficients, their 1-sigma
    errors, the weighted chi^2, Rwp and the number of points."""

    model: PawleyModel
    theta: np.ndarray
    linear: np.ndarray
    theta_errors: np.ndarray
    covariance: np.ndarray
    chi2: float
    rwp: float
    n_points: int

    @property
    def n_params(self) -> int:
        return self.model.n_nonlinear + self.model.n_linear

    @property
    def bic(self) -> float:
        """n ln(chi^2 / n) + k ln n (the single-reflection route's criterion)."""
        n = self.n_points
        return n * math.log(max(self.chi2, np.finfo(float).tiny) / n) + self.n_params * math.log(n)

    def values(self) -> dict[str, float]:
        return self.model.unpack(self.theta)

    def errors(self) -> dict[str, float]:
        return self.model.unpack(self.theta_errors)

    def calculated(self) -> np.ndarray:
        """The model pattern on the fitted bins."""
        return self.model.basis(self.theta) @ self.linear


def _solve(basis: np.ndarray, y: np.ndarray, sw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted linear least squares (SVD, directions below 1e-10 of the largest singular
    value dropped): coefficients and the weighted residual."""
    a = basis * sw[:, None]
    coef, *_ = np.linalg.lstsq(a, y * sw, rcond=1e-10)
    return coef, a @ coef - y * sw


def _bounds(n_phases: int) -> tuple[np.ndarray, np.ndarray]:
    phase = [A_BOUNDS, C_BOUNDS]
    rows = phase + (phase + [(0.0, 1.0)] if n_phases == 2 else []) + [INV_SIZE_BOUNDS, STRAIN_BOUNDS, AL_BOUNDS]
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


def refine_pattern(
    q: np.ndarray, y: np.ndarray, sw: np.ndarray, wavelength_A: float, instrument: GsasProfile,
    start: Sequence[float], q_window: tuple[float, float], families: Sequence[tuple[int, int, int]] | None = None,
    edges: tuple[np.ndarray, np.ndarray] | None = None,
) -> PawleyFit:
    """Pawley fit of one pattern (module docstring) from ``start`` = theta
    (a_1, c_1[, a_2, c_2, f], 1/D, eps, a_Al); the number of phases follows len(start).

    q: bin Q (1/A, ascending, finite); y: I(Q); sw: sqrt of the weights (1/esd);
    wavelength_A: A; instrument: GSAS-II terms; q_window: (lo, hi) 1/A that maps to the
    Chebyshev x in [-1, 1]; families: R-3m (h k l) (default: those of the start cells
    within q_window, +-2 % margin).
    """
    n_phases = 2 if len(start) == 8 else 1
    low, high = _bounds(n_phases)
    start = np.clip(np.asarray(start, dtype=float), low + 1e-9 * (high - low), high - 1e-9 * (high - low))
    if families is None:
        cells = [(start[0], start[1])] + ([(start[2], start[3])] if n_phases == 2 else [])
        found = {line.hkl for a, c in cells
                 for line in r3m_reflections(a, c, (q_window[0] * 0.98, q_window[1] * 1.02))}
        families = sorted(found)
    model = PawleyModel(q, wavelength_A, instrument, n_phases, families, q_window, edges)

    def residual(theta: np.ndarray) -> np.ndarray:
        return _solve(model.basis(theta), y, sw)[1]

    scale = np.array(([1e-3, 1e-2] + ([1e-3, 1e-2, 1e-2] if n_phases == 2 else [])) + [1e-4, 1e-4, 1e-3])
    solution = least_squares(residual, start, bounds=(low, high), x_scale=scale, method="trf",
                             diff_step=1e-6, xtol=1e-7, ftol=1e-6, max_nfev=100)
    theta = solution.x
    basis = model.basis(theta)
    linear, r = _solve(basis, y, sw)
    chi2 = float(r @ r)
    # full Jacobian (theta by central differences at fixed linear coefficients; the basis)
    jac = np.empty((q.size, theta.size + linear.size))
    for i in range(theta.size):
        h = scale[i] * 1e-3
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        jac[:, i] = (model.basis(up) @ linear - model.basis(down) @ linear) / (2 * h)
    jac[:, theta.size:] = basis
    jac *= sw[:, None]
    dof = max(q.size - jac.shape[1], 1)
    covariance = np.linalg.pinv(jac.T @ jac, rcond=1e-14, hermitian=True) * chi2 / dof
    errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    rwp = math.sqrt(chi2 / float((y * sw) @ (y * sw)))
    return PawleyFit(model, theta, linear, errors[: theta.size], covariance[: theta.size, : theta.size],
                     chi2, rwp, int(q.size))


@dataclass(frozen=True)
class RefinementFrame:
    """Per-frame result of `SequentialRefinement`; lengths in A, 1 sigma errors.

    n_phases: layered phases kept (1, or 2 where the second is significant);
    a_A, c_A (+ sigma_*): phase 1, the larger-c phase (H2, or the only one);
    a2_A, c2_A (+ sigma_*): the smaller-c phase (H3; NaN with one phase);
    fraction_phase2 (+ sigma): f of the module docstring (0 with one phase);
    microstrain (+ sigma): eps of eq. 4, shared by the layered phases; size_A: D =
    1/(1/D) (NaN where 1/D is within 2 sigma of 0: not resolved); a_al_A: Al lattice;
    rwp: weighted profile R factor; gof: sqrt(chi^2_nu); n_points; n_reflections: R-3m
    families in the model; seconds: wall time of the frame; note: why one phase was kept
    ("" if two, or if the second was never a candidate).
    """

    n_phases: int
    a_A: float
    sigma_a_A: float
    c_A: float
    sigma_c_A: float
    a2_A: float
    sigma_a2_A: float
    c2_A: float
    sigma_c2_A: float
    fraction_phase2: float
    sigma_fraction_phase2: float
    microstrain: float
    sigma_microstrain: float
    size_A: float
    a_al_A: float
    rwp: float
    gof: float
    n_points: int
    n_reflections: int
    seconds: float
    note: str = ""

    def scalars(self) -> dict[str, float | int]:
        """Every number (every field but ``note``), in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "note"}

    @classmethod
    def not_refined(cls, note: str) -> RefinementFrame:
        """The result of a pattern that could not be refined: every number NaN (counts 0)."""
        numbers = {f.name: (0 if f.type == "int" else math.nan) for f in fields(cls) if f.name != "note"}
        return cls(**numbers, note=note)

    @classmethod
    def from_fit(cls, fit: PawleyFit, seconds: float, note: str = "") -> RefinementFrame:
        v, e = fit.values(), fit.errors()
        two = fit.model.n_phases == 2
        resolved = v["inv_size"] > 2 * e["inv_size"]
        return cls(
            n_phases=fit.model.n_phases,
            a_A=v["a1"], sigma_a_A=e["a1"], c_A=v["c1"], sigma_c_A=e["c1"],
            a2_A=v["a2"] if two else math.nan, sigma_a2_A=e["a2"] if two else math.nan,
            c2_A=v["c2"] if two else math.nan, sigma_c2_A=e["c2"] if two else math.nan,
            fraction_phase2=v["f"] if two else 0.0, sigma_fraction_phase2=e["f"] if two else 0.0,
            microstrain=v["eps"], sigma_microstrain=e["eps"],
            size_A=1.0 / v["inv_size"] if resolved else math.nan,
            a_al_A=v["a_al"], rwp=fit.rwp,
            gof=math.sqrt(fit.chi2 / max(fit.n_points - fit.n_params, 1)),
            n_points=fit.n_points, n_reflections=len(fit.model.families), seconds=seconds, note=note,
        )


class SequentialRefinement:
    """Pawley refinement of one run's patterns, in order, each frame seeded from the
    previous one (module docstring).

    Parameters
    ----------
    q: bin Q (1/A) of every pattern (the reduction's grid).
    wavelength_A: A.
    instrument: the instrument's GSAS-II profile terms (from the CeO2 calibration).
    q_window: (lo, hi) Q range refined (1/A).
    start_a_A: a of the first frame's search (A; the pristine layered oxide's by
        default); the first frame scans a over +-3 % of it, c comes from its (003).
    n_phases: "auto" (two only where significant), 1 or 2.
    min_fraction, min_separation, min_sigmas: the two-phase tests (module docstring).
    bin_edges: the len(q) + 1 edges of the bins (1/A), when q is each bin's mean pixel Q
        (`analysis.xrd.Integrator`: equal slices of its q_range): each bin then weights
        the profile as its pixels do, linearly in Q with that mean (module docstring).
        None: edges halfway between the q, uniform weight.

    ``add(intensity, esd=None)`` refines the next pattern and returns a `RefinementFrame`;
    a pattern that cannot be refined raises ValueError and leaves the state unchanged.
    """

    def __init__(self, q: ArrayLike, wavelength_A: float, instrument: GsasProfile, *,
                 q_window: tuple[float, float] = (1.0, 5.0), start_a_A: float = 2.87,
                 n_phases: int | str = "auto", min_fraction: float = 0.05, min_separation: float = 1.0,
                 min_sigmas: float = 5.0, bin_edges: ArrayLike | None = None) -> None:
        if n_phases not in (1, 2, "auto"):
            raise ValueError(f"n_phases must be 1, 2 or 'auto', got {n_phases!r}")
        self.q = np.asarray(q, dtype=float)
        self.bin_edges = None if bin_edges is None else np.asarray(bin_edges, dtype=float)
        if self.bin_edges is not None and (self.bin_edges.shape != (self.q.size + 1,)
                                           or np.any((self.q < self.bin_edges[:-1]) | (self.q > self.bin_edges[1:]))):
            raise ValueError("bin_edges must be len(q) + 1 edges around the bins' Q")
        lo, hi = float(q_window[0]), float(q_window[1])
        if not (max(lo, float(self.q.min())) <= Q003_WINDOW[0] and min(hi, float(self.q.max())) >= Q003_WINDOW[1]):
            raise ValueError(f"q_window {q_window} must contain the (003) window {Q003_WINDOW} of the pattern")
        self.q_window = (max(lo, float(self.q.min())), min(hi, float(self.q.max())))
        self.wavelength_A = float(wavelength_A)
        self.instrument = GsasProfile(*instrument)
        self.start_a_A = float(start_a_A)
        self.n_phases = n_phases
        self.tests = (min_fraction, min_separation, min_sigmas)
        self.previous: PawleyFit | None = None
        self.n_frames = 0

    def _data(self, intensity: ArrayLike, esd: ArrayLike | None) -> tuple[np.ndarray, ...]:
        y = np.asarray(intensity, dtype=float)
        if y.shape != self.q.shape:
            raise ValueError(f"intensity has shape {y.shape}, the Q grid {self.q.shape}")
        if esd is None:
            finite = y[np.isfinite(y)]
            floor = max(float(np.median(finite)) * 1e-2, 1e-12) if finite.size else 1.0
            esd = np.sqrt(np.maximum(y, floor))
        esd = np.asarray(esd, dtype=float)
        keep = (np.isfinite(y) & np.isfinite(esd) & (esd > 0) & (self.q >= self.q_window[0])
                & (self.q <= self.q_window[1]))
        if keep.sum() < 100:
            raise ValueError(f"only {int(keep.sum())} usable bins in {self.q_window}")
        edges = None if self.bin_edges is None else (self.bin_edges[:-1][keep], self.bin_edges[1:][keep])
        return self.q[keep], y[keep], 1.0 / esd[keep], edges

    def _first_start(self, q: np.ndarray, y: np.ndarray, sw: np.ndarray, c: float, edges) -> list[float]:
        """theta of the first frame: c from (003), a by a scan of the projected chi^2."""
        grid = self.start_a_A * np.linspace(0.97, 1.03, 61)
        probe = PawleyModel(q, self.wavelength_A, self.instrument, 1,
                            sorted({ln.hkl for ln in r3m_reflections(grid.min(), c * 0.98, self.q_window)}),
                            self.q_window, edges)
        tail = [0.0, 5e-4, AL_LATTICE_A]
        costs = [float(np.sum(_solve(probe.basis(np.array([a, c, *tail])), y, sw)[1] ** 2)) for a in grid]
        return [float(grid[int(np.argmin(costs))]), c, *tail]

    def add(self, intensity: ArrayLike, esd: ArrayLike | None = None) -> RefinementFrame:
        """Refine the next pattern (I on the Q grid; esd its 1 sigma, default Poisson's
        shape); see the class docstring."""
        started = time.perf_counter()
        q, y, sw, edges = self._data(intensity, esd)
        # the (003) alone, with the single-reflection route's tests at half its separation:
        # seeds c, and says whether a second phase is worth a whole-pattern fit
        window = fit_reflection(q, y, Q003_WINDOW, n_phases="auto", min_separation=PRESCREEN_SEPARATION)
        c_pair = sorted((3 * d for d in window.d), reverse=True)
        c_major = 3 * window.d[int(np.argmax(window.fractions))]
        previous = self.previous
        if previous is None:
            one_start = self._first_start(q, y, sw, c_major, edges)
        else:
            v = previous.values()
            major_is_2 = previous.model.n_phases == 2 and v["f"] > 0.5
            a, c = (v["a2"], v["c2"]) if major_is_2 else (v["a1"], v["c1"])
            one_start = [a, c, v["inv_size"], v["eps"], v["a_al"]]
        # the previous cell, or the same with this frame's (003) c if that fits better
        candidates = [one_start, [one_start[0], c_major, *one_start[2:]]]
        one_start = min(candidates, key=lambda t: self._cost(q, y, sw, t, edges))
        fits = {}
        if self.n_phases in (1, "auto"):
            fits[1] = refine_pattern(q, y, sw, self.wavelength_A, self.instrument, one_start, self.q_window,
                                     edges=edges)
        candidate = window.n_phases == 2 or (previous is not None and previous.model.n_phases == 2)
        if self.n_phases == 2 or (self.n_phases == "auto" and candidate):
            a1, _, inv_size, eps, a_al = fits[1].theta if 1 in fits else one_start
            f0 = float(np.clip(window.fractions[1] if len(window.fractions) > 1 else 0.5, 0.05, 0.95))
            starts = [[a1, c_pair[0], a1, c_pair[-1], f0, inv_size, eps, a_al]]
            if previous is not None and previous.model.n_phases == 2:
                starts.append(list(previous.theta))
            two_start = min(starts, key=lambda t: self._cost(q, y, sw, t, edges))
            fits[2] = refine_pattern(q, y, sw, self.wavelength_A, self.instrument, two_start, self.q_window,
                                     edges=edges)
        note = ""
        if self.n_phases == "auto" and 2 not in fits:
            chosen, note = fits[1], f"(003): {window.note}"
        elif self.n_phases == "auto":
            note = self._rejection(fits[1], fits[2])
            chosen = fits[1] if note else fits[2]
        else:
            chosen = fits[self.n_phases]
        self.previous = chosen
        self.n_frames += 1
        return RefinementFrame.from_fit(chosen, time.perf_counter() - started, note)

    def _cost(self, q: np.ndarray, y: np.ndarray, sw: np.ndarray, theta: Sequence[float], edges) -> float:
        n = 2 if len(theta) == 8 else 1
        cells = [(theta[0], theta[1])] + ([(theta[2], theta[3])] if n == 2 else [])
        families = sorted({ln.hkl for a, c in cells for ln in r3m_reflections(a, c, self.q_window)})
        model = PawleyModel(q, self.wavelength_A, self.instrument, n, families, self.q_window, edges)
        return float(np.sum(_solve(model.basis(np.asarray(theta, dtype=float)), y, sw)[1] ** 2))

    def _rejection(self, one: PawleyFit, two: PawleyFit) -> str:
        """Why the two-phase fit is not kept ("" if it is): the single-reflection tests on
        the (003) lines of the two cells."""
        v, cov = two.values(), two.covariance
        f = v["f"]
        q003 = [6.0 * math.pi / v["c1"], 6.0 * math.pi / v["c2"]]
        # d Q003 / d c = -6 pi / c^2: centre errors from the c errors
        sigma = [6.0 * math.pi / v[k] ** 2 * math.sqrt(cov[i, i]) for k, i in (("c1", 1), ("c2", 3))]
        fwhm, _ = two.model._widths(np.array(q003), v["inv_size"], v["eps"], True)
        order = np.argsort(q003)
        areas = np.array([1.0 - f, f])[order]
        return second_phase_rejection(
            {1: one.bic, 2: two.bic}, tuple(areas), tuple(np.array(q003)[order]), tuple(fwhm[order]),
            tuple(np.array(sigma)[order]), *self.tests,
        )
