"""Powder X-ray diffraction: azimuthal integration, reflection fitting, crystallography.

Conventions (DESIGN.md): Q in 1/angstrom, d and lattice parameters in angstrom, angles in
degrees at every public interface (radians inside), wavelength in angstrom. pyFAI works in
metres and 1/nm; the conversion happens here, at the boundary, and nowhere else.

Relations used throughout::

    Q = 2 pi / d = 4 pi sin(theta) / lambda          (Bragg)
    1/d^2 = 4 (h^2 + h k + k^2) / (3 a^2) + l^2 / c^2  (hexagonal axes, R-3m)
    1/d^2 = (h^2 + k^2 + l^2) / a^2                    (cubic, Al current collector)
    V = sqrt(3)/2 a^2 c                                (hexagonal cell volume)
    beta cos(theta)/(K lambda) = 1/D + 4 eps sin(theta)/(K lambda)   (SCIENCE.md eq. 4)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from io import StringIO
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import pyFAI
import scipy.sparse
from numpy.polynomial import chebyshev
from pyFAI.detectors import detector_factory
from pyFAI.geometry import Geometry
from pyFAI.integrator.azimuthal import AzimuthalIntegrator
from pyFAI.io.ponifile import PoniFile
from scipy.optimize import least_squares
from scipy.signal import find_peaks
from scipy.special import erf

from nanostrain.analysis.units import INV_NM_PER_INV_A, M_PER_A

ArrayLike = npt.ArrayLike

#: Lattice parameter of the aluminium current collector (fcc, Fm-3m), angstrom.
AL_LATTICE_A = 4.0495
#: PerkinElmer XRD 1621 flat panel: 2048 x 2048 pixels of 200 um.
PERKINELMER_SHAPE = (2048, 2048)
PERKINELMER_PIXEL_M = 200e-6



# --------------------------------------------------------------------------------------
# Crystallography
# --------------------------------------------------------------------------------------
def hexagonal_d(h: ArrayLike, k: ArrayLike, l: ArrayLike, a: float, c: float) -> np.ndarray:  # noqa: E741
    """d spacing (A) of (h k l) in a hexagonal cell (a, c in A), broadcast over h, k, l.

    1/d^2 = 4 (h^2 + h k + k^2) / (3 a^2) + l^2 / c^2.
    """
    h, k, l = (np.asarray(x, dtype=float) for x in (h, k, l))  # noqa: E741
    inv_d2 = 4.0 * (h * h + h * k + k * k) / (3.0 * a * a) + l * l / (c * c)
    return 1.0 / np.sqrt(inv_d2)


def lattice_parameters(d_by_hkl: dict[tuple[int, int, int], float]) -> tuple[float, float]:
    """Hexagonal (a, c) in A from measured d spacings (A) of indexed reflections.

    Linear least squares in 1/d^2 = X * 4 (h^2+hk+k^2)/3 + Y * l^2 with X = 1/a^2 and
    Y = 1/c^2. Needs at least one reflection with (h, k) != (0, 0) and one with l != 0.
    """
    hkl = np.array(list(d_by_hkl.keys()), dtype=float).reshape(-1, 3)
    d = np.array(list(d_by_hkl.values()), dtype=float)
    h, k, l = hkl.T  # noqa: E741
    design = np.column_stack([4.0 * (h * h + h * k + k * k) / 3.0, l * l])
    if np.linalg.matrix_rank(design) < 2:
        raise ValueError(
            "a and c need at least one reflection with (h, k) != (0, 0) and one with l != 0; "
            f"got {sorted(d_by_hkl)}"
        )
    (inv_a2, inv_c2), *_ = np.linalg.lstsq(design, 1.0 / d**2, rcond=None)
    return float(1.0 / np.sqrt(inv_a2)), float(1.0 / np.sqrt(inv_c2))


def cell_volume(a: ArrayLike, c: ArrayLike) -> np.ndarray:
    """Hexagonal cell volume V = sqrt(3)/2 a^2 c, in A^3 (a, c in A)."""
    a = np.asarray(a, dtype=float)
    return np.sqrt(3.0) / 2.0 * a * a * np.asarray(c, dtype=float)


@dataclass(frozen=True)
class Reflection:
    """One powder line: a representative (h k l), its d (A), Q (1/A), and multiplicity
    (the number of allowed (h k l), signs included, that share this d)."""

    hkl: tuple[int, int, int]
    d: float
    q: float
    multiplicity: int


def _powder_lines(
    q_range: tuple[float, float],
    hmax: int,
    lmax: int,
    allowed,
    shell_key,
    d_of,
    preference,
) -> list[Reflection]:
    """Enumerate (h k l) in a box, keep the allowed ones in q_range, merge equal d
    (equal shell_key) and name each line by its most preferred (lowest key) member."""
    qlo, qhi = q_range
    r = np.arange(-hmax, hmax + 1)
    rl = np.arange(-lmax, lmax + 1)
    h, k, l = (x.ravel() for x in np.meshgrid(r, r, rl, indexing="ij"))  # noqa: E741
    keep = allowed(h, k, l) & ~((h == 0) & (k == 0) & (l == 0))
    h, k, l = h[keep], k[keep], l[keep]  # noqa: E741
    d = d_of(h, k, l)
    q = 2.0 * np.pi / d
    inside = (q >= qlo) & (q <= qhi)
    h, k, l, d, q = h[inside], k[inside], l[inside], d[inside], q[inside]  # noqa: E741
    keys = shell_key(h, k, l)
    lines = []
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        i = min(members, key=lambda m: preference(h[m], k[m], l[m]))
        lines.append(Reflection((int(h[i]), int(k[i]), int(l[i])), float(d[i]), float(q[i]), len(members)))
    return sorted(lines, key=lambda ref: ref.q)


def r3m_reflections(a: float, c: float, q_range: tuple[float, float]) -> list[Reflection]:
    """Allowed reflections of an R-3m layered oxide (hexagonal axes a, c in A) with
    q_range[0] <= Q <= q_range[1] (1/A), sorted by Q.

    Reflection condition (obverse setting): -h + k + l = 3n. Example: for a = 2.87,
    c = 14.2 the first lines are (003), (101), (006), (012), (104).
    """
    qmax = q_range[1]
    hmax = int(np.ceil(qmax * a / (2 * np.pi) * 2 / np.sqrt(3))) + 1
    lmax = int(np.ceil(qmax * c / (2 * np.pi))) + 1
    return _powder_lines(
        q_range,
        hmax,
        lmax,
        allowed=lambda h, k, l: (-h + k + l) % 3 == 0,
        shell_key=lambda h, k, l: (h * h + h * k + k * k) * (4 * lmax * lmax + 1) + l * l,
        d_of=lambda h, k, l: hexagonal_d(h, k, l, a, c),
        # non-negative indices where possible, then the largest l: (003), (104), (012)
        preference=lambda h, k, l: (min(h, k, l) < 0, -l, -h, -k),
    )


def al_reflections(q_range: tuple[float, float], a: float = AL_LATTICE_A) -> list[Reflection]:
    """Reflections of the fcc aluminium current collector (a in A; h, k, l all odd or all
    even) with q_range[0] <= Q <= q_range[1] (1/A), sorted by Q. d = a / sqrt(h^2+k^2+l^2)."""
    hmax = int(np.ceil(q_range[1] * a / (2 * np.pi))) + 1
    return _powder_lines(
        q_range,
        hmax,
        hmax,
        allowed=lambda h, k, l: ((h % 2) == (k % 2)) & ((k % 2) == (l % 2)),
        shell_key=lambda h, k, l: h * h + k * k + l * l,
        d_of=lambda h, k, l: a / np.sqrt(h * h + k * k + l * l),
        # h >= k >= l >= 0: (111), (200), (220)
        preference=lambda h, k, l: (min(h, k, l) < 0, -h, -k, -l),
    )


# --------------------------------------------------------------------------------------
# Williamson-Hall
# --------------------------------------------------------------------------------------
class WilliamsonHall(NamedTuple):
    """Crystallite size D (A; inf when the intercept is not positive) and microstrain eps."""

    size_A: float
    microstrain: float


def williamson_hall(
    two_theta_deg: ArrayLike, fwhm_deg: ArrayLike, wavelength_A: float, K: float = 0.9
) -> WilliamsonHall:
    """Size and microstrain from the widths of several reflections (SCIENCE.md eq. 4).

    beta cos(theta) / (K lambda) = 1/D + eps * 4 sin(theta) / (K lambda)

    two_theta_deg: peak positions (degrees 2 theta); fwhm_deg: Lorentzian FWHM beta
    (degrees 2 theta, instrument broadening already removed), converted to radians here;
    wavelength_A: angstrom; K: Scherrer constant. A straight line through the points
    (4 sin(theta)/(K lambda), beta cos(theta)/(K lambda)) gives eps (slope) and 1/D
    (intercept). Needs at least two reflections at different angles.
    """
    theta = np.radians(np.asarray(two_theta_deg, dtype=float)) / 2.0
    beta = np.radians(np.asarray(fwhm_deg, dtype=float))
    if theta.size < 2 or theta.shape != beta.shape or np.ptp(theta) == 0:
        raise ValueError("Williamson-Hall needs >= 2 reflections at distinct angles, one width each")
    x = 4.0 * np.sin(theta) / (K * wavelength_A)
    y = beta * np.cos(theta) / (K * wavelength_A)
    slope, intercept = np.polyfit(x, y, 1)
    size = 1.0 / intercept if intercept > 0 else math.inf
    return WilliamsonHall(float(size), float(slope))


# --------------------------------------------------------------------------------------
# Geometry and azimuthal integration
# --------------------------------------------------------------------------------------
def perkinelmer_geometry(
    distance_m: float = 1.5,
    wavelength_A: float = 0.1665,
    binning: int = 1,
    center_px: tuple[float, float] | None = None,
) -> AzimuthalIntegrator:
    """pyFAI geometry of a PerkinElmer XRD 1621 flat panel (2048 x 2048 pixels of 200 um)
    normal to the beam (no tilt), read out with ``binning`` x ``binning`` binning (e.g. 4:
    512 x 512 pixels of 800 um).

    distance_m: sample-detector distance (m; default 1.5 m, 11-ID-C); wavelength_A:
    angstrom (default 0.1665 A, 11-ID-C); center_px: direct beam (row, column) in binned
    pixel coordinates, pyFAI convention (pixel i spans [i, i+1)), default the middle of
    the panel: PONI = center_px x binned pixel size.
    """
    if binning < 1 or PERKINELMER_SHAPE[0] % binning:
        raise ValueError(f"binning must be a positive divisor of {PERKINELMER_SHAPE[0]}, got {binning}")
    if distance_m <= 0 or wavelength_A <= 0:
        raise ValueError(f"distance_m and wavelength_A must be positive, got {distance_m}, {wavelength_A}")
    detector = detector_factory("Perkin")
    detector.binning = tuple(b * binning for b in detector.binning)  # 'Perkin' is 100 um pixels binned 2x2
    pixel_m = PERKINELMER_PIXEL_M * binning
    shape = (PERKINELMER_SHAPE[0] // binning, PERKINELMER_SHAPE[1] // binning)
    if tuple(detector.shape) != shape or not math.isclose(detector.pixel1, pixel_m):
        raise RuntimeError(f"pyFAI 'Perkin' binned {binning}x is not {shape} x {pixel_m} m: {detector}")
    row, col = center_px if center_px is not None else (shape[0] / 2, shape[1] / 2)
    return AzimuthalIntegrator(
        dist=distance_m,
        poni1=row * pixel_m,
        poni2=col * pixel_m,
        detector=detector,
        wavelength=wavelength_A * M_PER_A,
    )


def geometry_config(geometry: Geometry) -> dict:
    """pyFAI's geometry config (``Geometry.get_config()``) as plain JSON types: what
    detectors record, runs carry as ``xrd_geometry`` and `pyfai_geometry` reads back."""
    return json.loads(json.dumps(geometry.get_config()))


def pyfai_geometry(config: dict | str) -> Geometry:
    """A pyFAI geometry from a pyFAI config (dict, or its JSON text), as runs record it
    in their start document (``xrd_geometry``)."""
    return pyFAI.load(json.loads(config) if isinstance(config, str) else dict(config))


def poni_text(geometry: Geometry) -> str:
    """The PONI file text of a geometry (pyFAI's format, version 2.1); write it with
    ``Path.write_text``: pyFAI's own ``Geometry.save`` appends to an existing file."""
    buffer = StringIO()
    PoniFile(geometry).write(buffer)
    return buffer.getvalue()


def load_geometry(poni: str | os.PathLike | Geometry) -> Geometry:
    """A pyFAI geometry as given, or read from a PONI file path."""
    if isinstance(poni, Geometry):
        return poni
    if isinstance(poni, (str, os.PathLike)):
        return pyFAI.load(os.fspath(poni))
    raise TypeError(f"expected a PONI file path or a pyFAI Geometry, got {type(poni).__name__}")


def pixel_q(poni: str | os.PathLike | Geometry) -> np.ndarray:
    """|Q| (1/A) at the centre of every detector pixel, shape = detector shape.

    Use it to render a simulated frame from a 1D pattern: ``np.interp(pixel_q(ai), q, I)``.
    """
    return load_geometry(poni).qArray() / INV_NM_PER_INV_A


class Integrator:
    """Azimuthal integration I(Q) of frames from one fixed detector geometry.

    I(Q_b) = sum_{p in b} I_p / sum_{p in b} C_p, where C_p is the relative solid angle of
    pixel p (pyFAI's ``solidAngleArray``, 1 at normal incidence) times, if
    ``polarization_factor`` is given, pyFAI's polarization factor. This is what
    ``ai.integrate1d(..., correctSolidAngle=True)`` computes, with ``method=("no", ...)``:
    every pixel goes whole into the bin of its centre Q (no pixel splitting). Splitting
    would convolve the profile with the pixel footprint a second time (the detector
    already integrated over the pixel), so it only pays off where bins are narrower than
    pixels and hold few of them, i.e. near the beam centre. Bins holding no pixel are NaN.
    The Q reported for a bin is the C-weighted mean Q of its pixels, the Q its average
    intensity belongs to to first order, rather than the bin centre: on a square pixel
    grid the two differ by a few percent of a bin, and a fitted peak would move by as
    much (1-2 % of a bin on a (003) three bins wide).

    Speed: the geometry is reduced once, here, to a sparse (npt x n_pixels) matrix with
    one entry per valid pixel, 1 / sum_b C; a frame is then one sparse matrix-vector
    product. The matrix is kept in CSC (pixel-major) form so that the product streams
    through the image in memory order and scatters into the small output: about 3x faster
    than the CSR (bin-major, gathering) product or ``np.bincount`` on a 2048 x 2048 frame.
    ``benchmarks/bench_xrd_reduction.py`` measures it against pyFAI's ``integrate1d``.

    Parameters
    ----------
    poni: PONI file path, or a pyFAI Geometry / AzimuthalIntegrator.
    npt: number of Q bins.
    q_range: (Q_min, Q_max) in 1/A; default the full range of pixel-centre Q. Bins are
        ``npt`` equal slices of it.
    mask: boolean array, detector shape, True = excluded (added to the detector's own).
        A fixed mask belongs here; the per-frame mask of ``__call__`` costs a second pass.
    polarization_factor: pyFAI's polarization factor (e.g. 0.99 at a synchrotron), or
        None for no polarization correction (pyFAI's default).
    """

    def __init__(
        self,
        poni: str | os.PathLike | Geometry,
        npt: int = 2000,
        q_range: tuple[float, float] | None = None,
        mask: np.ndarray | None = None,
        polarization_factor: float | None = None,
    ) -> None:
        geometry = load_geometry(poni)
        if geometry.wavelength is None:
            raise ValueError("The geometry has no wavelength: Q needs one.")
        self.shape: tuple[int, int] = tuple(geometry.detector.shape)
        #: wavelength of the geometry, A
        self.wavelength_A = geometry.wavelength / M_PER_A
        q_pix = pixel_q(geometry).ravel()
        correction = geometry.solidAngleArray()
        if polarization_factor is not None:
            correction = correction * geometry.polarization(factor=polarization_factor)
        self._correction = np.ascontiguousarray(correction, dtype=np.float32).ravel()

        valid = np.isfinite(q_pix)
        for excluded in (geometry.detector.mask, mask):
            if excluded is not None:
                valid &= ~self._check_shape(np.asarray(excluded, dtype=bool), "mask").ravel()
        if q_range is None:
            q_range = (float(q_pix[valid].min()), float(q_pix[valid].max()))
        qlo, qhi = q_range
        if not qhi > qlo or npt < 1:
            raise ValueError(f"need q_range[1] > q_range[0] and npt >= 1, got {q_range}, {npt}")
        valid &= (q_pix >= qlo) & (q_pix <= qhi)

        self.npt = int(npt)
        self.q_range = (float(qlo), float(qhi))
        pixels = np.flatnonzero(valid)
        bins = np.minimum(((q_pix[pixels] - qlo) / (qhi - qlo) * self.npt).astype(np.int64), self.npt - 1)
        weights = self._correction[pixels].astype(float)
        norm = np.bincount(bins, weights=weights, minlength=self.npt)
        self._empty = norm == 0
        edges = np.linspace(qlo, qhi, self.npt + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        q_sum = np.bincount(bins, weights=weights * q_pix[pixels], minlength=self.npt)
        #: Q (1/A) of each bin: C-weighted mean Q of its pixels (its centre if empty)
        self.q = np.where(self._empty, centres, q_sum / np.where(self._empty, 1.0, norm))
        # one entry per valid pixel; CSC column pointers: 1 where valid, else 0
        indptr = np.zeros(q_pix.size + 1, dtype=np.int32)
        np.cumsum(valid, out=indptr[1:])
        self._matrix = scipy.sparse.csc_array(
            ((1.0 / norm[bins]).astype(np.float32), bins.astype(np.int32), indptr),
            shape=(self.npt, q_pix.size),
        )

    def _check_shape(self, array: np.ndarray, what: str) -> np.ndarray:
        if array.shape[-2:] != self.shape:
            raise ValueError(f"{what} shape {array.shape} does not end with the detector shape {self.shape}")
        return array

    def __call__(self, image: ArrayLike, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Integrate one frame (ny, nx) or a stack (..., ny, nx).

        mask: optional boolean array of the detector shape, True = excluded for this call.
        Returns (q, intensity): the bins' Q (1/A, see the class docstring; fixed for the
        geometry and the constructor's mask) and I(Q) of shape (..., npt), float64, NaN in
        bins without a valid pixel.
        """
        image = self._check_shape(np.asarray(image), "image")
        lead = image.shape[:-2]
        frames = image.reshape(-1, self._matrix.shape[1])
        empty = self._empty
        if mask is not None:
            keep = ~self._check_shape(np.asarray(mask, dtype=bool), "mask").ravel()
            frames = np.where(keep, frames, 0)
            norm = self._matrix @ (self._correction * keep)  # this mask's / the fixed one's
            empty = empty | (norm == 0)
        # one sparse matrix-vector product per frame: ~2x faster than matrix @ stack
        intensity = np.stack([self._matrix @ frame for frame in frames]).astype(float)
        if mask is not None:
            intensity /= np.where(norm == 0, 1.0, norm)
        intensity[:, empty] = np.nan
        return self.q.copy(), intensity.reshape(*lead, self.npt)


# --------------------------------------------------------------------------------------
# Reflection fitting
# --------------------------------------------------------------------------------------
_FOUR_LN2 = 4.0 * math.log(2.0)
_GAUSS_NORM = math.sqrt(_FOUR_LN2 / math.pi)
# Thompson-Cox-Hastings: eta = 1.36603 r - 0.47719 r^2 + 0.11116 r^3, r = fwhm_L / fwhm
_TCH_RATIO = np.linspace(0.0, 1.0, 2001)
_TCH_ETA = 1.36603 * _TCH_RATIO - 0.47719 * _TCH_RATIO**2 + 0.11116 * _TCH_RATIO**3


def pseudo_voigt(q: ArrayLike, center: float, fwhm: float, eta: float, area: float = 1.0) -> np.ndarray:
    """Area-normalised pseudo-Voigt: area * (eta L + (1 - eta) G), common FWHM.

    L = (2 / (pi w)) / (1 + 4 x^2 / w^2), G = sqrt(4 ln2 / pi) / w * exp(-4 ln2 x^2 / w^2),
    x = q - center, w = fwhm (same units as q).
    """
    x = np.asarray(q, dtype=float) - center
    u = (x / fwhm) ** 2
    lorentz = 2.0 / (math.pi * fwhm) / (1.0 + 4.0 * u)
    gauss = _GAUSS_NORM / fwhm * np.exp(-_FOUR_LN2 * u)
    return area * (eta * lorentz + (1.0 - eta) * gauss)


@dataclass(frozen=True)
class ReflectionFit:
    """Result of ``fit_reflection``; per-phase tuples are sorted by centre.

    centers, center_errors, fwhm, fwhm_lorentzian: 1/A (errors are 1 sigma from the
    covariance, scaled by the residual variance); d: 2 pi / center in A; areas: integrated
    intensity (intensity x 1/A); fractions: areas / sum(areas); eta: pseudo-Voigt
    Lorentzian fraction shared by the phases; background: Chebyshev coefficients over
    q_window mapped to [-1, 1]; rss: residual sum of squares on n_points points;
    bic: Bayesian information criterion of every model tried, by number of phases.
    """

    n_phases: int
    centers: tuple[float, ...]
    center_errors: tuple[float, ...]
    fwhm: tuple[float, ...]
    fwhm_lorentzian: tuple[float, ...]
    areas: tuple[float, ...]
    fractions: tuple[float, ...]
    d: tuple[float, ...]
    eta: float
    background: tuple[float, ...]
    q_window: tuple[float, float]
    rss: float
    n_points: int
    bic: dict[int, float]

    def model(self, q: ArrayLike) -> np.ndarray:
        """The fitted profile (peaks + background) at the points q (1/A)."""
        q = np.asarray(q, dtype=float)
        total = chebyshev.chebval(_window_x(q, self.q_window), self.background)
        for center, width, area in zip(self.centers, self.fwhm, self.areas):
            total = total + pseudo_voigt(q, center, width, self.eta, area)
        return total


def _window_x(q: np.ndarray, q_window: tuple[float, float]) -> np.ndarray:
    lo, hi = q_window
    return (2.0 * q - (lo + hi)) / (hi - lo)


def _bin_edges(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edges of the bins centred on sorted q (midpoints between points)."""
    mid = (q[1:] + q[:-1]) / 2
    return np.concatenate([[2 * q[0] - mid[0]], mid]), np.concatenate([mid, [2 * q[-1] - mid[-1]]])


class _Profile:
    """Bin averages of n pseudo-Voigt peaks (shared eta) + Chebyshev background, with
    the analytic Jacobian. Averaging over each bin keeps peak positions unbiased when a
    peak spans only a few bins.

    Parameter vector: [eta, c_1, w_1, A_1, ..., c_n, w_n, A_n, b_0, ..., b_m].
    """

    def __init__(self, q, lower, upper, y, n: int, background_order: int, q_window):
        self.y, self.n = y, n
        self.lower, self.upper, self.width = lower, upper, upper - lower
        self.basis = chebyshev.chebvander(_window_x(q, q_window), background_order)
        self._cache: tuple[bytes, tuple] | None = None

    def _parts(self, p: np.ndarray) -> tuple:
        key = p.tobytes()
        if self._cache is None or self._cache[0] != key:
            peaks = p[1 : 1 + 3 * self.n].reshape(self.n, 3)
            c, w = peaks[:, :1], peaks[:, 1:2]
            edges = []
            for edge in (self.lower, self.upper):
                x = edge[None, :] - c
                u = x / w
                cdf_l = np.arctan(2.0 * u) / math.pi
                cdf_g = 0.5 * erf(math.sqrt(_FOUR_LN2) * u)
                pdf_l = (2.0 / math.pi) / (w * (1.0 + 4.0 * u * u))
                pdf_g = _GAUSS_NORM / w * np.exp(-_FOUR_LN2 * u * u)
                edges.append((x, cdf_l, cdf_g, pdf_l, pdf_g))
            self._cache = (key, (peaks, edges))
        return self._cache[1]

    def residual(self, p: np.ndarray) -> np.ndarray:
        peaks, ((_, l0, g0, _, _), (_, l1, g1, _, _)) = self._parts(p)
        eta, area = p[0], peaks[:, 2:3]
        profile = (area * (eta * (l1 - l0) + (1.0 - eta) * (g1 - g0))).sum(axis=0) / self.width
        return profile + self.basis @ p[1 + 3 * self.n :] - self.y

    def jacobian(self, p: np.ndarray) -> np.ndarray:
        peaks, ((x0, l0, g0, pl0, pg0), (x1, l1, g1, pl1, pg1)) = self._parts(p)
        eta, w, area = p[0], peaks[:, 1:2], peaks[:, 2:3]
        pdf0 = eta * pl0 + (1.0 - eta) * pg0
        pdf1 = eta * pl1 + (1.0 - eta) * pg1
        jac = np.empty((self.y.size, p.size))
        jac[:, 0] = (area * ((l1 - l0) - (g1 - g0))).sum(axis=0) / self.width
        jac[:, 1 : 1 + 3 * self.n : 3] = (-area * (pdf1 - pdf0) / self.width).T
        jac[:, 2 : 2 + 3 * self.n : 3] = (-area * (x1 * pdf1 - x0 * pdf0) / (w * self.width)).T
        jac[:, 3 : 3 + 3 * self.n : 3] = ((eta * (l1 - l0) + (1.0 - eta) * (g1 - g0)) / self.width).T
        jac[:, 1 + 3 * self.n :] = self.basis
        return jac


def _initial_background(q: np.ndarray, y: np.ndarray, order: int, q_window) -> np.ndarray:
    """Chebyshev coefficients of the straight line through the window's outer tenths."""
    edge = max(3, q.size // 10)
    x = np.concatenate([q[:edge], q[-edge:]])
    v = np.concatenate([y[:edge], y[-edge:]])
    slope, intercept = np.polyfit(x, v, 1)
    return chebyshev.chebfit(_window_x(q, q_window), intercept + slope * q, order)


def _peak_guess(q: np.ndarray, signal: np.ndarray) -> tuple[float, float, float]:
    """Centre, FWHM and area of the tallest feature of a background-free signal."""
    smooth = np.convolve(signal, np.ones(3) / 3, mode="same")
    i = int(np.argmax(smooth))
    height = smooth[i]
    above = smooth > height / 2
    left = i
    while left > 0 and above[left - 1]:
        left -= 1
    right = i
    while right < q.size - 1 and above[right + 1]:
        right += 1
    step = float(np.median(np.diff(q)))
    width = max(q[right] - q[left], 2 * step)
    # peak height of a unit-area pseudo-Voigt with eta = 0.5 is ~0.788 / fwhm
    return float(q[i]), float(width), float(max(height, 0.0) * width / 0.788)


class _Solution(NamedTuple):
    params: np.ndarray
    rss: float
    errors: np.ndarray


def _solve(profile: _Profile, p0: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> _Solution:
    result = least_squares(
        profile.residual,
        np.clip(p0, lower, upper),
        jac=profile.jacobian,
        bounds=(lower, upper),
        x_scale="jac",
        max_nfev=30,
    )
    rss = float(result.fun @ result.fun)
    dof = max(profile.y.size - p0.size, 1)
    try:
        errors = np.sqrt(np.clip(np.diag(np.linalg.inv(result.jac.T @ result.jac)), 0, None) * rss / dof)
    except np.linalg.LinAlgError:
        errors = np.full(p0.size, np.nan)
    return _Solution(result.x, rss, errors)


def _bic(rss: float, n_points: int, n_params: int) -> float:
    return n_points * math.log(max(rss, np.finfo(float).tiny) / n_points) + n_params * math.log(n_points)


def fit_reflection(
    q: ArrayLike,
    intensity: ArrayLike,
    q_window: tuple[float, float],
    n_phases: Literal[1, 2, "auto"] = 1,
    background_order: int = 1,
    exclude: Sequence[tuple[float, float]] = (),
    min_fraction: float = 0.05,
    min_separation: float = 0.5,
) -> ReflectionFit:
    """Fit one reflection, possibly split into two coexisting phases, inside q_window.

    Model: I(Q) = sum_i A_i pV(Q; Q_i, w_i, eta) + sum_j b_j T_j(x), pseudo-Voigt peaks
    (see ``pseudo_voigt``; eta shared) on a Chebyshev background of ``background_order``
    (1 = linear) over the window mapped to x in [-1, 1]. The peaks are averaged over each
    Q bin (edges halfway between points), as integration does, so a peak a few bins wide
    is not biased. Unweighted least squares (scipy ``least_squares``, trust region,
    analytic Jacobian, bounds A_i >= 0, 0 <= eta <= 1, centres inside the window).
    Starting values come from the data: background from the window edges, the tallest
    feature's position, half-maximum width and area; for two phases, the best of three
    starts (the one-peak fit split symmetrically, the one-peak fit plus a peak at the
    largest residual, and the two most prominent maxima when the data show two).

    n_phases="auto" fits one and two phases and keeps the one with the lower Bayesian
    information criterion BIC = n ln(RSS/n) + k ln(n) (n points, k free parameters);
    two phases are kept only if each holds at least ``min_fraction`` of the area and the
    centres are at least ``min_separation`` x their mean FWHM apart: closer pairs cannot
    be told from one broadened or asymmetric peak, which BIC alone, at high counts,
    would split.

    q: 1/A, one value per bin; intensity: same length (non-finite points are ignored);
    q_window: (lo, hi) 1/A; exclude: (lo, hi) Q intervals left out of the fit, e.g. Al
    current-collector lines (see ``al_reflections``). Widths are FWHM;
    ``fwhm_lorentzian`` is the Lorentzian FWHM of the equivalent Voigt
    (Thompson-Cox-Hastings relation eta(fwhm_L / fwhm)), the beta of Williamson-Hall.
    """
    q = np.asarray(q, dtype=float)
    y = np.asarray(intensity, dtype=float)
    if q.shape != y.shape or q.ndim != 1 or q.size < 2:
        raise ValueError(f"q and intensity must be 1D of one length, got {q.shape} and {y.shape}")
    if n_phases not in (1, 2, "auto"):
        raise ValueError(f"n_phases must be 1, 2 or 'auto', got {n_phases!r}")
    q_window = (float(q_window[0]), float(q_window[1]))
    order = np.argsort(q)
    q, y = q[order], y[order]
    lower, upper = _bin_edges(q)
    keep = np.isfinite(y) & (q >= q_window[0]) & (q <= q_window[1])
    for lo, hi in exclude:
        keep &= ~((q >= lo) & (q <= hi))
    q, y, lower, upper = q[keep], y[keep], lower[keep], upper[keep]
    tried = (1, 2) if n_phases == "auto" else (n_phases,)
    n_params = {n: 1 + 3 * n + background_order + 1 for n in tried}
    if q.size < n_params[max(tried)] + 3:
        raise ValueError(f"only {q.size} usable points in {q_window}: too few for the model")

    step = float(np.median(np.diff(q)))
    span = q_window[1] - q_window[0]

    def fit(n: int, background: np.ndarray, starts) -> tuple[_Profile, _Solution]:
        """Best least-squares fit of n peaks over the starts [[(c, w, A), ...], ...]."""
        profile = _Profile(q, lower, upper, y, n, background_order, q_window)
        free = np.full(background_order + 1, np.inf)
        low = np.concatenate([[0.0], np.tile([q_window[0], step / 2, 0.0], n), -free])
        high = np.concatenate([[1.0], np.tile([q_window[1], span, np.inf], n), free])
        solutions = [
            _solve(profile, np.concatenate([[0.5], np.ravel(start), background]), low, high)
            for start in starts
        ]
        return profile, min(solutions, key=lambda s: s.rss)

    background = _initial_background(q, y, background_order, q_window)
    signal = y - chebyshev.chebval(_window_x(q, q_window), background)
    profile1, one = fit(1, background, [[_peak_guess(q, signal)]])
    solutions = {1: one} if 1 in tried else {}
    if 2 in tried:
        c1, w1, a1 = one.params[1:4]
        starts = [
            [(c1 - w1 / 4, w1 * 0.7, a1 / 2), (c1 + w1 / 4, w1 * 0.7, a1 / 2)],
            [(c1, w1, a1), _peak_guess(q, -profile1.residual(one.params))],
        ]
        smooth = np.convolve(signal, np.ones(3) / 3, mode="same")
        maxima, props = find_peaks(smooth, prominence=0.1 * smooth.max())
        if maxima.size >= 2:
            top = maxima[np.argsort(props["prominences"])[-2:]]
            starts.append([(q[i], w1 / 2, a1 / 2) for i in top])
        solutions[2] = fit(2, one.params[4:], starts)[1]

    bic = {n: _bic(s.rss, q.size, n_params[n]) for n, s in solutions.items()}
    chosen = min(bic, key=bic.get)
    if n_phases == "auto" and chosen == 2:
        (c1, w1, a1), (c2, w2, a2) = solutions[2].params[1:7].reshape(2, 3)
        resolved = abs(c2 - c1) >= min_separation * (w1 + w2) / 2
        if not resolved or min(a1, a2) < min_fraction * (a1 + a2):
            chosen = 1
    return _reflection_fit(solutions[chosen], chosen, q_window, q.size, bic)


def _reflection_fit(solution: _Solution, n: int, q_window, n_points: int, bic) -> ReflectionFit:
    params, errors = solution.params, solution.errors
    peaks = params[1 : 1 + 3 * n].reshape(n, 3)
    peak_errors = errors[1 : 1 + 3 * n].reshape(n, 3)
    order = np.argsort(peaks[:, 0])
    peaks, peak_errors = peaks[order], peak_errors[order]
    eta = float(params[0])
    ratio = float(np.interp(eta, _TCH_ETA, _TCH_RATIO))
    areas = peaks[:, 2]
    total = areas.sum()
    return ReflectionFit(
        n_phases=n,
        centers=tuple(map(float, peaks[:, 0])),
        center_errors=tuple(map(float, peak_errors[:, 0])),
        fwhm=tuple(map(float, peaks[:, 1])),
        fwhm_lorentzian=tuple(float(w * ratio) for w in peaks[:, 1]),
        areas=tuple(map(float, areas)),
        fractions=tuple(float(a / total) if total > 0 else math.nan for a in areas),
        d=tuple(float(2 * math.pi / c) for c in peaks[:, 0]),
        eta=eta,
        background=tuple(map(float, params[1 + 3 * n :])),
        q_window=q_window,
        rss=solution.rss,
        n_points=n_points,
        bic=dict(bic),
    )
