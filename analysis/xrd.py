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

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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
    """Crystallite size D (A) and microstrain eps; D is NaN, never inf, when the lines
    show no size broadening the fit can resolve (see `williamson_hall`)."""

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

    D = 1 / intercept only where the intercept b is resolved: b > 0, and with n >= 3 lines
    b > 2 s_b, s_b^2 = s^2 sum(x^2) / (n sum((x - mean x)^2)), s^2 the residual variance
    about the line (n - 2 degrees of freedom). Otherwise the
    widths hold no size broadening distinguishable from zero (crystallites larger than
    the resolution, or widths at the instrument width) and D is NaN: 1/intercept would be
    inf or an arbitrarily large number.
    """
    theta = np.radians(np.asarray(two_theta_deg, dtype=float)) / 2.0
    beta = np.radians(np.asarray(fwhm_deg, dtype=float))
    if theta.size < 2 or theta.shape != beta.shape or np.ptp(theta) == 0:
        raise ValueError("Williamson-Hall needs >= 2 reflections at distinct angles, one width each")
    x = 4.0 * np.sin(theta) / (K * wavelength_A)
    y = beta * np.cos(theta) / (K * wavelength_A)
    slope, intercept = np.polyfit(x, y, 1)
    n = x.size
    if n > 2:
        scatter = float(np.sum((y - slope * x - intercept) ** 2)) / (n - 2)
        sigma = math.sqrt(scatter * np.sum(x * x) / (n * np.sum((x - x.mean()) ** 2)))
    else:
        sigma = 0.0
    size = 1.0 / intercept if intercept > 2.0 * sigma else math.nan
    return WilliamsonHall(float(size), float(slope))


class GsasProfile(NamedTuple):
    """GSAS-II's constant-wavelength instrument profile terms (its ``.instprm`` keys).

    Gaussian variance sigma^2 = U tan^2(theta) + V tan(theta) + W in centidegrees^2 of
    2 theta (Caglioti), so the Gaussian FWHM is sqrt(8 ln 2 sigma^2); Lorentzian FWHM
    gamma = X / cos(theta) + Y tan(theta) in centidegrees.
    """

    U: float
    V: float
    W: float
    X: float
    Y: float


def tch_gaussian_fwhm(fwhm: ArrayLike, lorentzian_fwhm: ArrayLike) -> np.ndarray:
    """Gaussian FWHM G of the Voigt whose total FWHM is ``fwhm`` and Lorentzian FWHM is
    ``lorentzian_fwhm`` (any one unit): the positive root of Thompson-Cox-Hastings'
    fwhm^5 = G^5 + 2.69269 G^4 L + 2.42843 G^3 L^2 + 4.47163 G^2 L^3 + 0.07842 G L^4 + L^5
    (the relation GSAS-II's profile and `fit_reflection`'s eta use). 0 where L >= fwhm."""
    total, lorentz = np.broadcast_arrays(np.asarray(fwhm, dtype=float), np.asarray(lorentzian_fwhm, dtype=float))
    out = np.zeros(total.shape)
    for index in np.ndindex(total.shape):
        big, small = total[index], lorentz[index]
        if small >= big:
            continue
        roots = np.roots([1.0, 2.69269 * small, 2.42843 * small**2, 4.47163 * small**3, 0.07842 * small**4,
                          small**5 - big**5])
        real = roots[(np.abs(roots.imag) < 1e-9 * big) & (roots.real > 0)].real
        out[index] = real.min() if real.size else 0.0
    return out


def gsas_profile(two_theta_deg: ArrayLike, gaussian_fwhm_deg: ArrayLike, lorentzian_fwhm_deg: ArrayLike) -> GsasProfile:
    """GSAS-II profile terms fitted to the widths of several lines (see `GsasProfile`).

    two_theta_deg: line positions; gaussian_fwhm_deg, lorentzian_fwhm_deg: their
    Gaussian and Lorentzian FWHM (degrees of 2 theta). Linear least squares of
    FWHM_G^2 / (8 ln 2) [centideg^2] = U tan^2(theta) + V tan(theta) + W and
    FWHM_L [centideg] = X / cos(theta) + Y tan(theta). Needs >= 3 lines at distinct angles.
    """
    theta = np.radians(np.asarray(two_theta_deg, dtype=float)) / 2.0
    gauss = 100.0 * np.asarray(gaussian_fwhm_deg, dtype=float)
    lorentz = 100.0 * np.asarray(lorentzian_fwhm_deg, dtype=float)
    if theta.ndim != 1 or np.unique(theta).size < 3 or gauss.shape != theta.shape or lorentz.shape != theta.shape:
        raise ValueError("the Caglioti fit needs >= 3 lines at distinct angles, one Gaussian and one Lorentzian width each")
    tan = np.tan(theta)
    (u, v, w), *_ = np.linalg.lstsq(np.column_stack([tan**2, tan, np.ones_like(tan)]), gauss**2 / (8 * math.log(2)), rcond=None)
    (x, y), *_ = np.linalg.lstsq(np.column_stack([1.0 / np.cos(theta), tan]), lorentz, rcond=None)
    return GsasProfile(float(u), float(v), float(w), float(x), float(y))


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

    I(Q_b) = sum_p f_bp I_p / sum_p f_bp C_p, where C_p is the relative solid angle of
    pixel p (pyFAI's ``solidAngleArray``, 1 at normal incidence) times, if
    ``polarization_factor`` is given, pyFAI's polarization factor, and f_bp the share of
    pixel p that goes to bin b. This is what ``ai.integrate1d(..., correctSolidAngle=True)``
    computes (pyFAI's defaults: solid angle corrected, no polarization correction):

    * ``pixel_splitting="no"`` (default), pyFAI's ``method=("no", ...)``: every pixel goes
      whole into the bin of its centre Q (f = 0 or 1). Splitting would convolve the
      profile with the pixel footprint a second time (the detector already integrated
      over the pixel), so it only pays off where bins are narrower than pixels and hold
      few of them, i.e. near the beam centre. Bins are ``npt`` equal slices of q_range.
    * ``pixel_splitting="bbox"``, pyFAI's default ``method=("bbox", "csr", "cython")``:
      each pixel is spread over the bins its Q extent (bounding box) covers, in
      proportion to the overlap. f_bp and the bins are pyFAI's own
      (``setup_sparse_integrator``), so I(Q) equals ``integrate1d``'s to float32
      rounding; with q_range None the range is pyFAI's default too. Peaks come out wider
      by about the pixel footprint, and neighbouring bins share pixels (correlated noise).

    Bins holding no pixel are NaN. The Q reported for a bin is the f C-weighted mean Q of
    its pixels, the Q its average intensity belongs to to first order, rather than the bin
    centre: on a square pixel grid the two differ by a few percent of a bin, and a fitted
    peak would move by as much (1-2 % of a bin on a (003) three bins wide).

    Speed: the geometry is reduced once, here, to a sparse (npt x n_pixels) matrix with
    entries f_bp / sum_p f_bp C_p; a frame is then one sparse matrix-vector product. The
    matrix is kept in CSC (pixel-major) form so that the product streams through the image
    in memory order and scatters into the small output: about 3x faster than the CSR
    (bin-major, gathering) product or ``np.bincount`` on a 2048 x 2048 frame. With
    ``threads`` > 1 the pixels are cut into that many contiguous blocks whose products
    (scipy releases the GIL) run in parallel and are summed. ``bbox`` holds ~2.8 entries
    per pixel (2048 x 2048 panel at 1 m, 2000 bins) and costs ~2.6x ``no``.
    ``benchmarks/bench_xrd_reduction.py`` measures both against pyFAI's ``integrate1d``.

    Parameters
    ----------
    poni: PONI file path, or a pyFAI Geometry / AzimuthalIntegrator.
    npt: number of Q bins.
    q_range: (Q_min, Q_max) in 1/A; default the full range of pixel-centre Q ("no") or
        pyFAI's default range ("bbox"). Bins are ``npt`` equal slices of it.
    mask: boolean array, detector shape, True = excluded (added to the detector's own).
        A fixed mask belongs here; the per-frame mask of ``__call__`` costs a second pass.
    polarization_factor: pyFAI's polarization factor (e.g. 0.99 at a synchrotron), or
        None for no polarization correction (pyFAI's default).
    pixel_splitting: "no" or "bbox", see above.
    threads: number of threads of the product (pyFAI's OpenMP uses every core).
    """

    def __init__(
        self,
        poni: str | os.PathLike | Geometry,
        npt: int = 2000,
        q_range: tuple[float, float] | None = None,
        mask: np.ndarray | None = None,
        polarization_factor: float | None = None,
        pixel_splitting: Literal["no", "bbox"] = "no",
        threads: int = 1,
    ) -> None:
        geometry = load_geometry(poni)
        if geometry.wavelength is None:
            raise ValueError("The geometry has no wavelength: Q needs one.")
        if pixel_splitting not in ("no", "bbox"):
            raise ValueError(f"pixel_splitting must be 'no' or 'bbox', got {pixel_splitting!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.shape: tuple[int, int] = tuple(geometry.detector.shape)
        #: wavelength of the geometry, A
        self.wavelength_A = geometry.wavelength / M_PER_A
        self.pixel_splitting = pixel_splitting
        q_pix = pixel_q(geometry).ravel()
        correction = geometry.solidAngleArray()
        if polarization_factor is not None:
            correction = correction * geometry.polarization(factor=polarization_factor)
        self._correction = np.ascontiguousarray(correction, dtype=np.float32).ravel()

        valid = np.isfinite(q_pix)
        for excluded in (geometry.detector.mask, mask):
            if excluded is not None:
                valid &= ~self._check_shape(np.asarray(excluded, dtype=bool), "mask").ravel()
        if npt < 1 or (q_range is not None and not q_range[1] > q_range[0]):
            raise ValueError(f"need q_range[1] > q_range[0] and npt >= 1, got {q_range}, {npt}")
        self.npt = int(npt)
        if pixel_splitting == "no":
            shares, self.q_range = self._whole_pixels(q_pix, valid, q_range)
        else:
            shares, self.q_range = self._bbox_shares(geometry, ~valid, q_range)
        weights = self._correction.astype(float)
        norm = shares @ weights
        #: sum_p f_bp C_p per bin: its number of pixels, solid-angle weighted (0: empty
        #: bin). A bin's Poisson sigma is sqrt(I_b / pixel_weight_b) (I_b in counts/pixel;
        #: exact with whole pixels, approximate with split ones, whose bins share counts).
        self.pixel_weight = norm
        self._empty = norm == 0
        safe = np.where(self._empty, 1.0, norm)
        edges = np.linspace(*self.q_range, self.npt + 1)
        #: Q (1/A) of each bin: f C-weighted mean Q of its pixels (its centre if empty)
        self.q = np.where(self._empty, (edges[:-1] + edges[1:]) / 2,
                          shares @ (weights * np.where(valid, q_pix, 0.0)) / safe)
        shares = shares.tocsc()
        # float32 values and int32 indices: the product streams half the bytes of 64 bits
        self._matrix = matrix = scipy.sparse.csc_array(
            ((shares.data / safe[shares.indices]).astype(np.float32), shares.indices.astype(np.int32),
             shares.indptr.astype(np.int32)), shape=shares.shape)
        cuts = np.linspace(0, q_pix.size, threads + 1).astype(int)
        self._blocks = [(matrix[:, a:b], a, b) for a, b in zip(cuts[:-1], cuts[1:])]
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def _whole_pixels(self, q_pix: np.ndarray, valid: np.ndarray, q_range) -> tuple[scipy.sparse.csc_array, tuple]:
        """f_bp = 1 for the bin of pixel p's centre Q: one entry per valid pixel (CSC,
        built directly: column pointers 1 where valid, else 0)."""
        if q_range is None:
            q_range = (float(q_pix[valid].min()), float(q_pix[valid].max()))
        qlo, qhi = map(float, q_range)
        valid = valid & (q_pix >= qlo) & (q_pix <= qhi)
        bins = np.minimum(((q_pix[valid] - qlo) / (qhi - qlo) * self.npt).astype(np.int32), self.npt - 1)
        indptr = np.zeros(q_pix.size + 1, dtype=np.int32)
        np.cumsum(valid, out=indptr[1:])
        shares = scipy.sparse.csc_array((np.ones(bins.size), bins, indptr), shape=(self.npt, q_pix.size))
        return shares, (qlo, qhi)

    def _bbox_shares(self, geometry: Geometry, masked: np.ndarray, q_range) -> tuple[scipy.sparse.csr_array, tuple]:
        """pyFAI's bounding-box pixel splitting (its CSR engine's f_bp and bins)."""
        ai = geometry if isinstance(geometry, AzimuthalIntegrator) else AzimuthalIntegrator(**geometry.getPyFAI())
        engine = ai.setup_sparse_integrator(self.shape, self.npt, mask=masked.reshape(self.shape),
                                            pos0_range=q_range, unit="q_A^-1", split="bbox", algo="CSR")
        data, indices, indptr = engine.lut
        shares = scipy.sparse.csr_array((data.astype(float), indices, indptr), shape=(self.npt, masked.size))
        if q_range is None:  # pyFAI's default range: its bin centres are equally spaced (1/nm)
            centres = np.asarray(engine.bin_centers, dtype=float) / INV_NM_PER_INV_A
            half = (centres[1] - centres[0]) / 2
            q_range = (centres[0] - half, centres[-1] + half)
        return shares, (float(q_range[0]), float(q_range[1]))

    def _check_shape(self, array: np.ndarray, what: str) -> np.ndarray:
        if array.shape[-2:] != self.shape:
            raise ValueError(f"{what} shape {array.shape} does not end with the detector shape {self.shape}")
        return array

    def _product(self, vector: np.ndarray) -> np.ndarray:
        """matrix @ vector, over the pixel blocks in parallel when threads > 1."""
        if self._pool is None:
            return self._matrix @ vector
        return sum(self._pool.map(lambda block: block[0] @ vector[block[1] : block[2]], self._blocks))

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
            norm = self._product(self._correction * keep)  # this mask's / the fixed one's
            empty = empty | (norm == 0)
        # one sparse matrix-vector product per frame: ~2x faster than matrix @ stack
        intensity = np.stack([self._product(frame) for frame in frames]).astype(float)
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
    bic: Bayesian information criterion of every model fitted, by number of phases; note:
    why n_phases="auto" kept one phase ("" otherwise; see `fit_reflection`).
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
    note: str = ""

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


class _Evaluation(NamedTuple):
    """The separable model at one theta: linear coefficients (areas, then background),
    residual (model - data), its sum of squares, the Kaufman Jacobian of the projected
    residual by theta, and the Jacobian of the model by the linear coefficients."""

    theta: np.ndarray
    coef: np.ndarray
    residual: np.ndarray
    rss: float
    jac: np.ndarray
    basis: np.ndarray


class _Profile:
    """Bin averages of n pseudo-Voigt peaks (shared eta) + Chebyshev background, as a
    separable least-squares problem (variable projection, Golub & Pereyra 1973).

    Averaging over each bin keeps peak positions unbiased when a peak spans only a few
    bins. The nonlinear parameters are theta = [eta, c_1, w_1, ..., c_n, w_n]; for a given
    theta the model Phi(theta) x is linear in x = [A_1, ..., A_n, b_0, ..., b_m] (areas,
    background coefficients), which is solved exactly by least squares, so the iterative
    search runs over 1 + 2n parameters, not 1 + 3n + m + 1. The Jacobian of the projected
    residual r = (Phi Phi^+ - 1) y is Kaufman's: J = (1 - P) dPhi/dtheta x, P the
    projector onto the columns of Phi (analytic derivatives of the bin averages).
    """

    def __init__(self, q, lower, upper, y, background_order: int, q_window):
        self.y = y
        self.edges = np.stack([lower, upper])
        self.width = upper - lower
        self.background = chebyshev.chebvander(_window_x(q, q_window), background_order)

    def peaks(self, centers: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, ...]:
        """Unit-area bin averages L, G (n_peaks, n_points) of the Lorentzian and Gaussian
        of each peak and their derivatives by centre and by width."""
        x = self.edges[None, :, :] - centers[:, None, None]
        w = widths[:, None, None]
        u = x / w
        cdf_l = np.arctan(2.0 * u) / math.pi
        cdf_g = 0.5 * erf(math.sqrt(_FOUR_LN2) * u)
        pdf_l = (2.0 / math.pi) / (w * (1.0 + 4.0 * u * u))
        pdf_g = _GAUSS_NORM / w * np.exp(-_FOUR_LN2 * u * u)
        xpdf_l, xpdf_g = x * pdf_l, x * pdf_g
        ww = widths[:, None] * self.width
        return (
            (cdf_l[:, 1] - cdf_l[:, 0]) / self.width,
            (cdf_g[:, 1] - cdf_g[:, 0]) / self.width,
            -(pdf_l[:, 1] - pdf_l[:, 0]) / self.width,
            -(pdf_g[:, 1] - pdf_g[:, 0]) / self.width,
            -(xpdf_l[:, 1] - xpdf_l[:, 0]) / ww,
            -(xpdf_g[:, 1] - xpdf_g[:, 0]) / ww,
        )

    def evaluate(self, theta: np.ndarray) -> _Evaluation:
        eta, centers, widths = theta[0], theta[1::2], theta[2::2]
        lor, gau, lor_c, gau_c, lor_w, gau_w = self.peaks(centers, widths)
        basis = np.hstack([(eta * lor + (1.0 - eta) * gau).T, self.background])
        u, s, vt = np.linalg.svd(basis, full_matrices=False)
        rank = s > s[0] * 1e-10
        u = u[:, rank]
        coef = vt[rank].T @ ((u.T @ self.y) / s[rank])
        residual = basis @ coef - self.y
        areas = coef[: centers.size, None]
        derivative = np.empty((self.y.size, theta.size))
        derivative[:, 0] = (areas * (lor - gau)).sum(axis=0)
        derivative[:, 1::2] = (areas * (eta * lor_c + (1.0 - eta) * gau_c)).T
        derivative[:, 2::2] = (areas * (eta * lor_w + (1.0 - eta) * gau_w)).T
        jac = derivative - u @ (u.T @ derivative)
        return _Evaluation(theta, coef, residual, float(residual @ residual), jac, basis)

    def errors(self, ev: _Evaluation) -> np.ndarray:
        """1-sigma errors of [theta, coef] from the full Jacobian's covariance, scaled by
        the residual variance (NaN where it is singular)."""
        eta, centers = ev.theta[0], ev.theta[1::2]
        lor, gau, lor_c, gau_c, lor_w, gau_w = self.peaks(centers, ev.theta[2::2])
        areas = ev.coef[: centers.size, None]
        full = np.empty((self.y.size, ev.theta.size + ev.coef.size))
        full[:, 0] = (areas * (lor - gau)).sum(axis=0)
        full[:, 1 : ev.theta.size : 2] = (areas * (eta * lor_c + (1.0 - eta) * gau_c)).T
        full[:, 2 : ev.theta.size : 2] = (areas * (eta * lor_w + (1.0 - eta) * gau_w)).T
        full[:, ev.theta.size :] = ev.basis
        dof = max(self.y.size - full.shape[1], 1)
        try:
            variance = np.diag(np.linalg.inv(full.T @ full)) * ev.rss / dof
        except np.linalg.LinAlgError:
            return np.full(full.shape[1], np.nan)
        return np.sqrt(np.clip(variance, 0, None))


def _levenberg_marquardt(
    profile: _Profile, start: _Evaluation, lower: np.ndarray, upper: np.ndarray, max_iter: int = 50,
    ftol: float = 1e-6,
) -> _Evaluation:
    """Minimise the projected RSS over theta inside [lower, upper] from ``start`` (steps
    clipped to the bounds; a parameter held on a bound by the gradient is left out of the
    step): Levenberg-Marquardt with Marquardt's diagonal scaling and Nielsen's damping
    update (from the ratio of the actual to the predicted decrease), stopped when a step
    lowers the RSS by less than ``ftol`` = 1e-6 of itself or moves no parameter by more
    than 1e-8 of itself. Near the minimum RSS - RSS_min = (d theta / sigma)^2 RSS / dof,
    so such a step moves a parameter by sqrt(1e-6 dof) sigma, < 0.01 sigma for the
    20-100 points of a reflection window: scipy's default 1e-8 only spends iterations
    (up to 3x more) creeping along the flat valley of a spurious second peak.

    Hand-written in place of ``scipy.optimize.least_squares`` (trust region, bounds),
    whose per-iteration overhead dominated with 3-5 parameters: with it and without
    variable projection the auto (003) fit of a 2048 x 2048 frame took 13-20 ms; see
    ``benchmarks/bench_xrd_reduction.py`` for today's figure.
    """
    best = start
    damping, growth = 1e-3, 2.0
    for _ in range(max_iter):
        gradient = best.jac.T @ best.residual
        # a parameter on a bound that the descent would push out of stays there
        free = ~(((best.theta <= lower) & (gradient > 0)) | ((best.theta >= upper) & (gradient < 0)))
        if not free.any():
            break
        jac, g = best.jac[:, free], gradient[free]
        hessian = jac.T @ jac
        scale = np.diag(np.diag(hessian) + np.finfo(float).tiny)
        trial = None
        while damping < 1e8:
            try:
                delta = np.linalg.solve(hessian + damping * scale, -g)
            except np.linalg.LinAlgError:
                damping, growth = damping * growth, growth * 2.0
                continue
            step = np.zeros_like(best.theta)
            step[free] = delta
            candidate = profile.evaluate(np.clip(best.theta + step, lower, upper))
            predicted = -(2.0 * g @ delta + delta @ hessian @ delta)
            if candidate.rss < best.rss and predicted > 0:
                ratio = (best.rss - candidate.rss) / predicted
                damping, growth = damping * max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3), 2.0
                trial = candidate
                break
            damping, growth = damping * growth, growth * 2.0
        if trial is None:
            break
        moved = np.abs(trial.theta - best.theta) > 1e-8 * (np.abs(best.theta) + 1e-8)
        converged = best.rss - trial.rss <= ftol * best.rss or not moved.any()
        best = trial
        if converged:
            break
    return best


def _initial_background(q: np.ndarray, y: np.ndarray, order: int, q_window) -> np.ndarray:
    """Chebyshev coefficients of the straight line through the window's outer tenths."""
    edge = max(3, q.size // 10)
    x = np.concatenate([q[:edge], q[-edge:]])
    v = np.concatenate([y[:edge], y[-edge:]])
    slope, intercept = np.polyfit(x, v, 1)
    return chebyshev.chebfit(_window_x(q, q_window), intercept + slope * q, order)


def _peak_guess(q: np.ndarray, signal: np.ndarray) -> tuple[float, float]:
    """Centre and FWHM of the tallest feature of a background-free signal."""
    smooth = np.convolve(signal, np.ones(3) / 3, mode="same")
    i = int(np.argmax(smooth))
    above = smooth > smooth[i] / 2
    left = i
    while left > 0 and above[left - 1]:
        left -= 1
    right = i
    while right < q.size - 1 and above[right + 1]:
        right += 1
    step = float(np.median(np.diff(q)))
    return float(q[i]), float(max(q[right] - q[left], 2 * step))


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
    min_separation: float = 1.0,
    min_sigmas: float = 5.0,
) -> ReflectionFit:
    """Fit one reflection, possibly split into two coexisting phases, inside q_window.

    Model: I(Q) = sum_i A_i pV(Q; Q_i, w_i, eta) + sum_j b_j T_j(x), pseudo-Voigt peaks
    (see ``pseudo_voigt``; eta shared) on a Chebyshev background of ``background_order``
    (1 = linear) over the window mapped to x in [-1, 1]. The peaks are averaged over each
    Q bin (edges halfway between points), as integration does, so a peak a few bins wide
    is not biased. Unweighted least squares by variable projection: the areas A_i and the
    background b_j are solved linearly inside the search over eta, Q_i, w_i
    (Levenberg-Marquardt, analytic Jacobian, 0 <= eta <= 1, centres inside the window).
    Starting values come from the data: background from the window edges, the tallest
    feature's position and half-maximum width; for two phases, three starts (the
    one-peak fit split symmetrically, the one-peak fit plus a peak at the largest
    residual, and the two most prominent maxima when the data show two) are scored by
    their projected RSS and the best one is refined.

    n_phases="auto" fits one and two phases and reports the second phase only when it is
    significant, i.e. all of:

    1. the two-phase model has the lower Bayesian information criterion,
       BIC = n ln(RSS/n) + k ln(n) (n points, k free parameters);
    2. each phase holds at least ``min_fraction`` of the (003) area (both areas > 0);
    3. the centres are resolved: |Q_2 - Q_1| >= ``min_separation`` x the mean FWHM
       (default 1). Two equal Gaussians closer than 0.85 FWHM (Lorentzians: 0.58 FWHM)
       add up to a single maximum, and unequal ones need more: below about one FWHM a
       pair cannot be told from one peak broadened or made asymmetric by a lattice
       gradient (a Li concentration gradient in one phase), which BIC alone, at the high
       counts of synchrotron frames, splits;
    4. the separation is statistically firm: |Q_2 - Q_1| >= ``min_sigmas`` x
       sqrt(s_1^2 + s_2^2) (default 5), s_i the 1-sigma centre errors of the two-phase fit
       (covariance scaled by the residual variance), so noise cannot make the split.

    No test on the one-phase residual alone decides whether to try two phases: on
    simulated frames a Wald-Wolfowitz runs test of its signs gave z = -3.0..+0.6 for
    single phases (residual shaped by profile mismatch at high counts) and -1.1..-3.5 for
    H2/H3 pairs 0.3-0.7 A apart (their misfit sits on a few of the ~22 window points), so
    no threshold skips the two-phase fit without losing real pairs.

    ``note`` of the result says which test kept one phase. With n_phases=2 two phases
    are fitted and reported whatever these tests say.

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
    n_params = {n: 1 + 3 * n + background_order + 1 for n in (1, 2)}
    if q.size < n_params[max(tried)] + 3:
        raise ValueError(f"only {q.size} usable points in {q_window}: too few for the model")

    step = float(np.median(np.diff(q)))
    span = q_window[1] - q_window[0]
    profile = _Profile(q, lower, upper, y, background_order, q_window)

    def fit(starts: list[list[tuple[float, float]]], eta: float) -> _Evaluation:
        """Fit of len(start) peaks from the best of the starts [[(c, w), ...], ...]."""
        n = len(starts[0])
        low = np.array([0.0] + [q_window[0], step / 2] * n)
        high = np.array([1.0] + [q_window[1], span] * n)
        scored = [profile.evaluate(np.clip([eta, *np.ravel(start)], low, high)) for start in starts]
        return _levenberg_marquardt(profile, min(scored, key=lambda s: s.rss), low, high)

    background = _initial_background(q, y, background_order, q_window)
    signal = y - chebyshev.chebval(_window_x(q, q_window), background)
    one = fit([[_peak_guess(q, signal)]], 0.5)
    solutions = {1: one}
    if 2 in tried:
        eta, c1, w1 = one.theta
        starts = [
            [(c1 - w1 / 4, w1 * 0.7), (c1 + w1 / 4, w1 * 0.7)],
            [(c1, w1), _peak_guess(q, -one.residual)],
        ]
        smooth = np.convolve(signal, np.ones(3) / 3, mode="same")
        maxima, props = find_peaks(smooth, prominence=0.1 * smooth.max())
        if maxima.size >= 2:
            top = maxima[np.argsort(props["prominences"])[-2:]]
            starts.append([(q[i], w1 / 2) for i in top])
        solutions[2] = fit(starts, eta)

    bic = {n: _bic(s.rss, q.size, n_params[n]) for n, s in solutions.items()}
    results = {n: _reflection_fit(profile, s, q_window, q.size, bic) for n, s in solutions.items()}
    if n_phases != "auto":
        return results[n_phases]
    two = results[2]
    note = second_phase_rejection(bic, two.areas, two.centers, two.fwhm, two.center_errors,
                                  min_fraction, min_separation, min_sigmas)
    return dataclasses.replace(results[1], note=note) if note else results[2]


def second_phase_rejection(
    bic: dict[int, float], areas: Sequence[float], centers: Sequence[float], fwhm: Sequence[float],
    center_errors: Sequence[float], min_fraction: float = 0.05, min_separation: float = 1.0, min_sigmas: float = 5.0,
) -> str:
    """Why a two-phase fit of a reflection is not significant ("" if it is): the tests 1-4
    of `fit_reflection` on its BIC {1: one phase, 2: two phases}, the two phases' areas
    (or shares), line centres (1/A, ascending), FWHMs and 1-sigma centre errors (1/A).
    Shared by the single-reflection route and the whole-pattern refinement
    (`analysis.xrd_refinement`)."""
    if bic[2] >= bic[1]:
        return "BIC prefers one phase"
    if min(areas) <= 0 or min(areas) < min_fraction * sum(areas):
        return f"a phase holds less than {min_fraction:.0%} of the area"
    separation = centers[1] - centers[0]
    mean_fwhm = (fwhm[0] + fwhm[1]) / 2
    if separation < min_separation * mean_fwhm:
        return f"centres {separation / mean_fwhm:.2f} FWHM apart (< {min_separation})"
    sigma = math.hypot(*center_errors)
    if not separation >= min_sigmas * sigma:
        return f"centres {separation / sigma:.1f} sigma apart (< {min_sigmas})"
    return ""


def _reflection_fit(profile: _Profile, ev: _Evaluation, q_window, n_points: int, bic) -> ReflectionFit:
    n = (ev.theta.size - 1) // 2
    errors = profile.errors(ev)
    peaks = np.column_stack([ev.theta[1::2], ev.theta[2::2], ev.coef[:n]])
    center_errors = errors[1 : 1 + 2 * n : 2]
    order = np.argsort(peaks[:, 0])
    peaks, center_errors = peaks[order], center_errors[order]
    eta = float(ev.theta[0])
    ratio = float(np.interp(eta, _TCH_ETA, _TCH_RATIO))
    areas = peaks[:, 2]
    total = areas.sum()
    return ReflectionFit(
        n_phases=n,
        centers=tuple(map(float, peaks[:, 0])),
        center_errors=tuple(map(float, center_errors)),
        fwhm=tuple(map(float, peaks[:, 1])),
        fwhm_lorentzian=tuple(float(w * ratio) for w in peaks[:, 1]),
        areas=tuple(map(float, areas)),
        fractions=tuple(float(a / total) if total > 0 else math.nan for a in areas),
        d=tuple(float(2 * math.pi / c) for c in peaks[:, 0]),
        eta=eta,
        background=tuple(map(float, ev.coef[n:])),
        q_window=q_window,
        rss=ev.rss,
        n_points=n_points,
        bic=dict(bic),
    )
