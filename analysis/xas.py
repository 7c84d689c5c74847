"""Ex situ Ni K-edge XAS in transmission (SCIENCE.md section 5), with xraylarch.

From the counts of the three ion chambers at each energy E (eV):

    mu(E) = ln(I0 / It)          (the electrode),
    mu_ref(E) = ln(It / Iref)    (the Ni reference foil behind it).

* Energy alignment: the foil's edge E0_ref (the maximum of d mu_ref/dE: `edge_energy`)
  must lie at the tabulated edge (Ni metal 8333 eV); every energy is shifted by
  ``energy_shift_eV`` = tabulated - measured, as ATHENA aligns on a reference.
* Normalisation as ATHENA does it (larch `pre_edge`): the edge step, normalised mu(E);
  the sample's edge energy ``e0_eV`` is the maximum of d mu/dE on the aligned scale
  (`edge_energy`, between grid points: larch `find_e0` stops at a grid point). The
  sample's edge shift is ``edge_shift_eV`` = e0 - tabulated foil edge.
* Energies need not be evenly spaced (a fly scan's are not); `edge_energy` fits the
  derivative over a window of +-EDGE_WINDOW_EV, so closely spaced noisy points do not
  move the edge.
* Background (larch `autobk`, rbkg = 1 A) with k measured from ``k_origin_eV`` (the
  study's E0 = 8350 eV), chi(k); Fourier transform (larch `xftf`, k-weight 2, Hanning
  window, dk = 1 1/A) to |chi(R)|.
* The study's first-shell fit (larch `feffit`, ARTEMIS's engine): the Ni-O path of
  `NI_O_FEFF_PATH` (FEFF6 on a NiO6 octahedron, R_eff = 1.97 A; its input beside it),
  N = 6 fixed, S0^2 = 0.8 fixed, refined Delta E0, Delta R and sigma^2 over
  k = 3-12.8 1/A and R = 1.2-3.0 A; R(Ni-O) = R_eff + Delta R, with the fit's
  standard errors.

k = sqrt((E - E0) / ETOK_EV_A2) with ETOK_EV_A2 = hbar^2 / (2 m_e) = 3.80998 eV A^2.
`XasAccumulator` is the streaming reducer (rows of E, I0, It, Iref in; a frozen
`XasResult` out). xraylarch is imported by the functions that use it, not with this
module (it takes seconds to import).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike


__all__ = [
    "ETOK_EV_A2",
    "NI_FOIL_EDGE_EV",
    "NI_O_FEFF_PATH",
    "STUDY_E0_EV",
    "ShellFit",
    "XasAccumulator",
    "XasOptions",
    "XasResult",
    "absorbance",
    "edge_energy",
    "fit_first_shell",
    "read_feff_path",
    "reduce_xas",
]

#: hbar^2 / (2 m_e) in eV A^2: E - E0 = ETOK_EV_A2 k^2.
ETOK_EV_A2 = 3.80998208
#: Ni metal K edge (first inflection of the reference foil), eV.
NI_FOIL_EDGE_EV = 8333.0
#: The study's E0 for the Ni K-edge EXAFS of the cathodes (the k origin), eV.
STUDY_E0_EV = 8350.0
#: FEFF path file of the Ni-O first shell (feff0001.dat of FEFF6 on ``ni_o_feff.inp``).
NI_O_FEFF_PATH = Path(__file__).resolve().parent / "data" / "ni_o_feff0001.dat"
#: Fewest points of a spectrum the reduction accepts (pre-edge, edge and EXAFS).
MIN_POINTS = 20

#: Half-width of the window over which `edge_energy` fits the derivative's peak, eV.
EDGE_WINDOW_EV = 0.5

_FEFF_COLUMNS = ("k", "phc2", "mag", "phase", "red_factor", "lambda", "real_p")


def read_feff_path(path: Path | str) -> dict[str, np.ndarray]:
    """The table of a FEFF ``feffNNNN.dat`` file: columns k (1/A), phc2 (2 x central-atom
    phase, rad), mag (|F_eff|, A), phase (rad), red_factor, lambda (mean free path, A),
    real_p (1/A); and ``reff`` (A), ``degen`` from its header."""
    lines = Path(path).read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if "real[2*phc]" in line), None)
    header = next((i for i, line in enumerate(lines) if "nleg, deg, reff" in line), None)
    if start is None or header is None:
        raise ValueError(f"{path} is not a FEFF path file (feffNNNN.dat)")
    table = np.loadtxt(lines[start + 1:], dtype=np.float64)
    columns = dict(zip(_FEFF_COLUMNS, table.T, strict=True))
    _, degen, reff = lines[header].split()[:3]
    columns["reff"], columns["degen"] = np.float64(reff), np.float64(degen)
    return columns


def absorbance(numerator: ArrayLike, denominator: ArrayLike, name: str = "counts") -> np.ndarray:
    """ln(numerator / denominator) of two chambers' counts; ValueError naming ``name`` if a
    count is not positive and finite."""
    top, bottom = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if top.shape != bottom.shape:
        raise ValueError(f"{name}: counts of different shapes {top.shape} and {bottom.shape}")
    if not (np.all(np.isfinite(top)) and np.all(np.isfinite(bottom)) and np.all(top > 0) and np.all(bottom > 0)):
        raise ValueError(f"{name}: ion-chamber counts must be finite and > 0")
    return np.log(top / bottom)


def edge_energy(mu: ArrayLike, energies_eV: ArrayLike, half_width_eV: float = EDGE_WINDOW_EV) -> float:
    """The edge (eV): the energy of the maximum of d mu/dE (central differences on the
    possibly uneven grid), refined as the vertex of a least-squares parabola through the
    derivative at every point within +-``half_width_eV`` of the steepest point (at least
    its two neighbours). ValueError if the steepest point is the first or last energy."""
    mu, energies = np.asarray(mu, dtype=np.float64), np.asarray(energies_eV, dtype=np.float64)
    slope = np.gradient(mu, energies)
    steepest = int(np.argmax(slope))
    if steepest in (0, energies.size - 1):
        raise ValueError(f"the steepest rise of mu is at the scan's end ({energies[steepest]:.2f} eV): the edge is "
                         f"not inside {energies[0]:.2f}-{energies[-1]:.2f} eV")
    near = np.abs(energies - energies[steepest]) <= half_width_eV
    near[steepest - 1:steepest + 2] = True
    x = energies[near] - energies[steepest]
    curvature, tilt, _ = np.polyfit(x, slope[near], 2)
    if curvature >= 0:  # no peak in the window: the steepest point itself
        return float(energies[steepest])
    return float(energies[steepest] + np.clip(-tilt / (2.0 * curvature), x.min(), x.max()))


@dataclass(frozen=True)
class XasOptions:
    """Settings of the reduction and of the first-shell fit (module docstring).

    k_origin_eV: E0 of the k scale (eV; the study's 8350 eV). rbkg: autobk's R cut, A.
    kweight: k-weight of the background, transform and fit. k_range (1/A), r_range (A):
    the fit's ranges. dk: transform window sill, 1/A. coordination, s02: fixed N, S0^2.
    """

    k_origin_eV: float = STUDY_E0_EV
    rbkg: float = 1.0
    kweight: int = 2
    k_range: tuple[float, float] = (3.0, 12.8)
    r_range: tuple[float, float] = (1.2, 3.0)
    dk: float = 1.0
    coordination: float = 6.0
    s02: float = 0.8

    def __post_init__(self) -> None:
        for name, (low, high) in (("k_range", self.k_range), ("r_range", self.r_range)):
            if not 0 <= low < high:
                raise ValueError(f"{name} must be (low, high) with 0 <= low < high, got {(low, high)}")
        if not (self.rbkg > 0 and self.dk >= 0 and self.coordination > 0 and self.s02 > 0):
            raise ValueError("rbkg, coordination and s02 must be > 0, dk >= 0")


@dataclass(frozen=True)
class ShellFit:
    """First-shell fit: R (A), sigma^2 (A^2), Delta E0 (eV), each with its standard error,
    and the fit's reduced chi-square and R-factor."""

    r_A: float
    r_err_A: float
    sigma2_A2: float
    sigma2_err_A2: float
    delta_e0_eV: float
    delta_e0_err_eV: float
    reduced_chi_square: float
    r_factor: float


@dataclass(frozen=True)
class XasResult:
    """A reduced spectrum (module docstring): the aligned energies (eV), mu and normalised
    mu; the foil alignment; the edge; chi(k) and |chi(R)|; the first-shell fit."""

    energies_eV: np.ndarray
    mu: np.ndarray
    norm: np.ndarray
    mu_reference: np.ndarray
    reference_e0_eV: float
    energy_shift_eV: float
    e0_eV: float
    edge_shift_eV: float
    edge_step: float
    k: np.ndarray
    chi: np.ndarray
    r_A: np.ndarray
    chir_mag: np.ndarray
    fit: ShellFit
    options: XasOptions = field(repr=False)


def _group(**arrays):
    from larch import Group

    return Group(**arrays)


def fit_first_shell(k: ArrayLike, chi: ArrayLike, options: XasOptions = XasOptions()) -> ShellFit:
    """The Ni-O first-shell fit of chi(k) (module docstring) with larch `feffit`."""
    from larch.fitting import guess, param, param_group
    from larch.xafs import feffit, feffit_dataset, feffit_transform, feffpath

    params = param_group(s02=param(options.s02, vary=False), delta_e0=guess(0.0), delta_r=guess(0.0),
                         sigma2=guess(0.005))
    path = feffpath(str(NI_O_FEFF_PATH), degen=options.coordination, s02="s02", e0="delta_e0",
                    deltar="delta_r", sigma2="sigma2")
    transform = feffit_transform(kmin=options.k_range[0], kmax=options.k_range[1], kweight=options.kweight,
                                 dk=options.dk, window="hanning", rmin=options.r_range[0], rmax=options.r_range[1])
    dataset = feffit_dataset(data=_group(k=np.asarray(k, float), chi=np.asarray(chi, float)), pathlist=[path],
                             transform=transform)
    out = feffit(params, dataset)
    result = out.params

    def value(name: str) -> tuple[float, float]:
        stderr = result[name].stderr
        return float(result[name].value), float(stderr) if stderr is not None else math.nan

    delta_r, delta_r_err = value("delta_r")
    sigma2, sigma2_err = value("sigma2")
    delta_e0, delta_e0_err = value("delta_e0")
    return ShellFit(
        r_A=float(path.reff) + delta_r, r_err_A=delta_r_err, sigma2_A2=sigma2, sigma2_err_A2=sigma2_err,
        delta_e0_eV=delta_e0, delta_e0_err_eV=delta_e0_err,
        reduced_chi_square=float(out.chi2_reduced), r_factor=float(out.rfactor),
    )


def reduce_xas(
    energies_eV: ArrayLike,
    i0: ArrayLike,
    it: ArrayLike,
    iref: ArrayLike,
    *,
    reference_edge_eV: float = NI_FOIL_EDGE_EV,
    options: XasOptions = XasOptions(),
) -> XasResult:
    """Align, normalise, extract chi(k), transform and fit one spectrum (module
    docstring). energies_eV: increasing, the DCM's readback (eV); i0, it, iref: counts."""
    from larch.xafs import autobk, pre_edge, xftf

    energies = np.asarray(energies_eV, dtype=np.float64)
    if energies.ndim != 1 or energies.size < MIN_POINTS:
        raise ValueError(f"energies_eV must be 1D with >= {MIN_POINTS} points, got shape {energies.shape}")
    if np.any(np.diff(energies) <= 0):
        raise ValueError("energies_eV must increase strictly")
    mu = absorbance(i0, it, "i0/it")
    mu_reference = absorbance(it, iref, "it/iref")
    if mu.shape != energies.shape:
        raise ValueError(f"counts hold {mu.size} points, energies_eV {energies.size}")
    reference_e0 = edge_energy(mu_reference, energies)
    shift = reference_edge_eV - reference_e0
    aligned = energies + shift
    group = _group()
    pre_edge(aligned, mu, group=group)
    autobk(aligned, mu, group=group, rbkg=options.rbkg, e0=options.k_origin_eV, kweight=options.kweight)
    xftf(group.k, group.chi, group=group, kmin=options.k_range[0], kmax=options.k_range[1],
         kweight=options.kweight, dk=options.dk, window="hanning")
    fit = fit_first_shell(group.k, group.chi, options)
    e0 = edge_energy(mu, aligned)
    return XasResult(
        energies_eV=aligned, mu=mu, norm=np.asarray(group.norm), mu_reference=mu_reference,
        reference_e0_eV=reference_e0, energy_shift_eV=shift, e0_eV=e0, edge_shift_eV=e0 - reference_edge_eV,
        edge_step=float(group.edge_step), k=np.asarray(group.k), chi=np.asarray(group.chi),
        r_A=np.asarray(group.r), chir_mag=np.asarray(group.chir_mag), fit=fit, options=options,
    )


class XasAccumulator:
    """Streaming reducer of one XAS scan: rows (E, I0, It, Iref) in through `add`, in any
    order of arrival; `result` sorts them by energy and runs `reduce_xas`.

    reference_edge_eV: the reference foil's tabulated edge (eV). options: `XasOptions`.
    """

    def __init__(self, reference_edge_eV: float = NI_FOIL_EDGE_EV, options: XasOptions = XasOptions()) -> None:
        if not math.isfinite(reference_edge_eV):
            raise ValueError(f"reference_edge_eV must be finite, got {reference_edge_eV}")
        self.reference_edge_eV = float(reference_edge_eV)
        self.options = options
        self._rows: list[tuple[float, float, float, float]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, energy_eV: float, i0: float, it: float, iref: float) -> float:
        """Take one point; return its mu = ln(I0/It) (NaN if a count is not positive)."""
        row = (float(energy_eV), float(i0), float(it), float(iref))
        if not math.isfinite(row[0]):
            raise ValueError(f"energy_eV must be finite, got {energy_eV}")
        self._rows.append(row)
        return math.log(row[1] / row[2]) if row[1] > 0 and row[2] > 0 else math.nan

    def result(self) -> XasResult:
        """The reduction of every point taken (ValueError for fewer than MIN_POINTS)."""
        if len(self._rows) < MIN_POINTS:
            raise ValueError(f"an XAS spectrum needs >= {MIN_POINTS} points, got {len(self._rows)}")
        energies, i0, it, iref = np.array(sorted(self._rows)).T
        return reduce_xas(energies, i0, it, iref, reference_edge_eV=self.reference_edge_eV, options=self.options)
