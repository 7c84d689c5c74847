"""Powder diffraction frames of a cathode coin cell on a flat-panel area detector.

`PowderRenderer` turns the simulated cathode's state (`LatticeState` per radial shell,
microstrain, crystallite size) into the counts a PerkinElmer-type panel records, fast
enough to run live beside the cycling simulation (a 2048 x 2048 frame in ~0.1-0.15 s
on a 2-core machine).
Conventions (DESIGN.md): Q in 1/angstrom, lengths in angstrom, angles in degrees at the
interface; pyFAI's metres and 1/nm are converted at the boundary (`analysis.xrd`).

Model
-----
Intensity scattered per unit solid angle, azimuthally averaged, at Q::

    I(Q) = sum_lines A_line pV(Q; Q_line, Gamma, eta) + B(Q)            counts / (s sr)

* Lines. Cathode: every R-3m reflection (-h + k + l = 3n, `analysis.xrd.r3m_reflections`)
  of every radial shell (a_s, c_s), Q_line = 2 pi / d(h k l; a_s, c_s), weighted by the
  shell's volume fraction w_s, so a Li gradient splits or broadens the lines as it does
  in the particle. Al current collector: fcc, a = 4.0495 A. Calibrant: CeO2 (fluorite,
  SRM 674b, a = 5.411651 A).
* Integrated intensity of a line (Lorentz factor of a powder ring per unit solid angle,
  derived in `line_intensity`)::

      A ~ m |F|^2 exp(-2 B_iso s^2) / Q^2,          s = sin(theta)/lambda = Q / (4 pi)

  m the multiplicity, F the structure factor from Cromer-Mann form factors. Layered
  LiNiO2 (R-3m, hexagonal axes; Ni 3a (0,0,0), Li 3b (0,0,1/2), O 6c (0,0,z), z = 0.2587)::

      F(h k l) = 3 [f_Ni + (-1)^l f_Li + 2 f_O cos(2 pi l z)]

  (Co/Mn on the Ni site scatter within 10 % of Ni; Li occupancy taken as full: Li carries
  3 of ~40 electrons per formula unit). Relative areas this gives for a = 2.87,
  c = 14.2 A (0.1665 A; ``LAYERED_OXIDE_RELATIVE_AREAS`` holds them, recomputed by the
  tests): (003) 100, (101) 45, (006) 6, (012) 17, (104) 80, (015) 17, (009) 3,
  (107) 17, (018) 24, (110) 24, (113) 18, up to Q = 5 1/A. Al: F = 4 f_Al;
  CeO2: F = 4 (f_Ce + 2 f_O) for h+k+l = 4n, 4 (f_Ce - 2 f_O) for 4n + 2, 4 f_Ce for
  h, k, l odd. Scale: ``cathode_area`` is the area of the pristine (003) line,
  ``al_area`` of Al (111), ``calibrant_area`` of CeO2 (111).
* Profile: pseudo-Voigt (`analysis.xrd.pseudo_voigt`) of a Gaussian instrument width and
  a Lorentzian sample width, combined by Thompson-Cox-Hastings::

      Gamma^5 = G^5 + 2.69269 G^4 L + 2.42843 G^3 L^2 + 4.47163 G^2 L^3 + 0.07842 G L^4 + L^5
      eta = 1.36603 r - 0.47719 r^2 + 0.11116 r^3,     r = L / Gamma

  Sample (Williamson-Hall, SCIENCE.md eq. 4), in radians of 2 theta and, with
  dQ = (2 pi / lambda) cos(theta) d(2 theta), in Q::

      beta = K lambda / (D cos theta) + 4 eps tan theta   <=>   L_Q = 2 pi K / D + 2 eps Q

  K = 0.9, D the crystallite size (A), eps the microstrain of the shell. Instrument:
  G_Q = (2 pi / lambda) cos(theta) Gamma_instr, Gamma_instr a Gaussian FWHM in 2 theta,
  by default 1.5 pixel widths seen from the sample (pixel footprint + beam size), so a
  line spans at least ~2 pixels and sampling the pattern at pixel centres is faithful.
* Background B(Q) = b (1 + 2 exp(-Q / 1 A^-1)): air and Kapton scatter, rising at low Q.

Frame (counts in pixel p, exposure t, flux ratio phi = flux / nominal flux)::

    lambda_p = t [phi I(Q_p) Omega_p P_p + dark],     counts_p ~ Poisson(lambda_p)

Omega_p the pixel's solid angle (sr; pyFAI's relative solid angle x pixel area /
distance^2), P_p the polarization factor (pyFAI, factor 0.99: horizontally polarised
synchrotron beam), dark the beam-independent dark rate per pixel (counts/s). Where
lambda_p >= 100 the Poisson draw is replaced by a rounded normal N(lambda, lambda):
same mean and variance, skewness 0 instead of 1/sqrt(lambda) <= 0.1, ~5x cheaper (the
Poisson draws would otherwise take most of a frame's time).

Speed: I(Q) is computed on a uniform Q grid (step G_min / 8), each line only within
+-20 FWHM of its centre (the Lorentzian tails beyond hold < 2 % of a line's area and are
symmetric, so no line moves), then linearly interpolated onto a grid 8x finer from which
every pixel takes its value by a precomputed index (nearest-node error < G_min / 128).
Shells with equal (a, c, eps) are merged first: a homogeneous particle costs one shell.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from pyFAI.geometry import Geometry

from nanostrain.analysis.units import M_PER_A
from nanostrain.analysis.xrd import (
    AL_LATTICE_A,
    al_reflections,
    hexagonal_d,
    pixel_q,
    pseudo_voigt,
    r3m_reflections,
)
from nanostrain.sim.cathode import LatticeState

__all__ = [
    "CEO2_LATTICE_A",
    "LAYERED_OXIDE_RELATIVE_AREAS",
    "PowderRenderer",
    "form_factor",
    "line_intensity",
]

#: CeO2 (NIST SRM 674b) lattice parameter, angstrom.
CEO2_LATTICE_A = 5.411651
#: Scherrer constant of SCIENCE.md eq. 4.
SCHERRER_K = 0.9
#: Reference (pristine) cell the cathode's line areas are normalised to: (003) = 1.
REFERENCE_CELL_A = (2.87, 14.2)
#: Above this expected count a rounded normal replaces the Poisson draw.
NORMAL_APPROXIMATION_COUNTS = 100.0
#: Lines are evaluated within this many FWHM of their centre.
TAIL_FWHMS = 20.0
#: Grid points per narrowest instrumental FWHM, and refinement of the pixel lookup grid.
GRID_POINTS_PER_FWHM = 8
LOOKUP_REFINEMENT = 8

#: Cromer-Mann coefficients (c, a1, b1, a2, b2, a3, b3, a4, b4), neutral atoms,
#: International Tables for Crystallography Vol. C, Table 6.1.1.4 (b in A^2).
CROMER_MANN: Mapping[str, tuple[float, ...]] = {
    "Li": (0.0377, 1.1282, 3.9546, 0.7508, 1.0524, 0.6175, 85.3905, 0.4653, 168.261),
    "O": (0.2508, 3.0485, 13.2771, 2.2868, 5.7011, 1.5463, 0.3239, 0.867, 32.9089),
    "Al": (1.1151, 6.4202, 3.0387, 1.9002, 0.7426, 1.5936, 31.5472, 1.9646, 85.0886),
    "Ni": (1.0341, 12.8376, 3.8785, 7.292, 0.2565, 4.4438, 12.1763, 2.38, 66.3421),
    "Ce": (1.8626, 21.1671, 2.8122, 19.7695, 0.2268, 11.8513, 17.6083, 3.3305, 127.113),
}
#: Oxygen position z of LiNiO2 (6c), isotropic displacement B (A^2) of each phase.
OXYGEN_Z = 0.2587
B_ISO_A2 = {"layered": 0.5, "Al": 0.8, "CeO2": 0.3}

ArrayLike = npt.ArrayLike


# --------------------------------------------------------------------------------------
# Crystallography: form factors, structure factors, line intensities
# --------------------------------------------------------------------------------------
def form_factor(element: str, q: ArrayLike) -> np.ndarray:
    """Atomic form factor f0(s) = c + sum_i a_i exp(-b_i s^2), s = Q / (4 pi) (Q in 1/A),
    in electrons (Cromer-Mann, `CROMER_MANN`)."""
    c, *ab = CROMER_MANN[element]
    s2 = (np.asarray(q, dtype=float) / (4.0 * np.pi)) ** 2
    return c + sum(a * np.exp(-b * s2) for a, b in zip(ab[::2], ab[1::2]))


def _layered_f2(l: np.ndarray, q: np.ndarray) -> np.ndarray:  # noqa: E741
    """|F|^2 of an allowed R-3m reflection of LiNiO2 (see the module docstring)."""
    f = form_factor("Ni", q) + np.where(l % 2 == 0, 1.0, -1.0) * form_factor("Li", q)
    f = f + 2.0 * form_factor("O", q) * np.cos(2.0 * np.pi * l * OXYGEN_Z)
    return (3.0 * f) ** 2


def _al_f2(hkl: np.ndarray, q: np.ndarray) -> np.ndarray:
    """|F|^2 of an allowed fcc Al reflection: F = 4 f_Al."""
    return (4.0 * form_factor("Al", q)) ** 2


def _ceo2_f2(hkl: np.ndarray, q: np.ndarray) -> np.ndarray:
    """|F|^2 of fluorite CeO2: 4 (f_Ce +- 2 f_O) for h+k+l = 4n / 4n+2, 4 f_Ce for odd."""
    total = hkl.sum(axis=-1)
    odd = hkl[..., 0] % 2 == 1
    sign = np.where(odd, 0.0, np.where(total % 4 == 0, 1.0, -1.0))
    return (4.0 * (form_factor("Ce", q) + 2.0 * sign * form_factor("O", q))) ** 2


def line_intensity(multiplicity: ArrayLike, f2: ArrayLike, q: ArrayLike, b_iso_A2: float) -> np.ndarray:
    """Integrated area of a powder line in I(Q) per unit solid angle (arbitrary scale).

    A = m |F|^2 exp(-2 B s^2) / Q^2, s = Q / (4 pi). Derivation: a fraction ~cos(theta)
    of the crystallites reflects, each with the single-crystal Lorentz factor
    1/sin(2 theta), so the ring carries P ~ m |F|^2 / sin(theta); spread over the cone
    (solid angle 2 pi sin(2 theta) d(2 theta)) and integrated over the line in
    Q = (4 pi / lambda) sin(theta), this is ~ m |F|^2 / sin^2(theta) ~ m |F|^2 / Q^2.
    Polarization is applied per pixel.
    """
    q = np.asarray(q, dtype=float)
    s2 = (q / (4.0 * np.pi)) ** 2
    return np.asarray(multiplicity) * np.asarray(f2) * np.exp(-2.0 * b_iso_A2 * s2) / q**2


@functools.lru_cache(maxsize=64)
def _r3m_families(a_floor: float, c_floor: float, q_max: float) -> tuple[np.ndarray, np.ndarray]:
    """(h k l) representatives (n, 3) and multiplicities (n,) of every R-3m line that any
    cell with a >= a_floor and c >= c_floor puts below q_max (Q falls as a, c grow)."""
    lines = r3m_reflections(a_floor, c_floor, (1e-6, q_max))
    hkl = np.array([line.hkl for line in lines], dtype=float).reshape(-1, 3)
    return hkl, np.array([line.multiplicity for line in lines], dtype=float)


def _reference_003_area() -> float:
    a, c = REFERENCE_CELL_A
    q = 2.0 * np.pi * 3.0 / c
    return float(line_intensity(2, _layered_f2(np.array(3), np.array(q)), q, B_ISO_A2["layered"]))


def _relative_areas(a: float, c: float, q_max: float) -> dict[tuple[int, int, int], float]:
    """Areas of the R-3m lines of one cell relative to the reference (003), in percent."""
    hkl, m = _r3m_families(a, c, q_max)
    q = 2.0 * np.pi / hexagonal_d(*hkl.T, a, c)
    areas = line_intensity(m, _layered_f2(hkl[:, 2], q), q, B_ISO_A2["layered"])
    return {tuple(int(i) for i in h): round(float(v / _reference_003_area() * 100), 1) for h, v in zip(hkl, areas)}


#: Relative areas (%) of the pristine cathode's lines below Q = 5 1/A (see the module
#: docstring), the table the renderer's structure factors produce.
LAYERED_OXIDE_RELATIVE_AREAS: Mapping[tuple[int, int, int], float] = _relative_areas(*REFERENCE_CELL_A, 5.0)


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------
class _Lines(NamedTuple):
    """Powder lines: centres (1/A), areas (counts/(s sr) x 1/A), Lorentzian FWHM (1/A)."""

    q: np.ndarray
    area: np.ndarray
    lorentz_fwhm: np.ndarray


def _merge_shells(lattice: LatticeState, microstrain: np.ndarray) -> tuple[np.ndarray, ...]:
    """Shells with the same (a, c, eps) to ~1e-9 merged, weights summed."""
    keys = np.column_stack(
        [np.round(lattice.a_A, 9), np.round(lattice.c_A, 9), np.round(microstrain, 9)]
    )
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    weight = np.bincount(inverse.ravel(), weights=lattice.weight, minlength=len(unique))
    keep = weight > 0
    return unique[keep, 0], unique[keep, 1], unique[keep, 2], weight[keep]


class PowderRenderer:
    """Powder frames of a cathode, its Al current collector, or a CeO2 calibrant.

    See the module docstring for the model and its equations.

    Parameters
    ----------
    geometry: pyFAI geometry (AzimuthalIntegrator); frames have its detector's shape.
    cathode_area: integrated area of the pristine (003) line, counts/(s sr) x 1/A at
        nominal flux (default: ~1e4 counts/s at the (003) maximum of a 200 um pixel at
        1.5 m, 0.1665 A).
    al_area: integrated area of Al (111), same units (0 = no current collector).
    calibrant_area: integrated area of CeO2 (111), same units.
    background: B at high Q, counts/(s sr).
    dark_rate: dark counts per second per pixel, with or without beam.
    instrument_fwhm_deg: Gaussian instrumental FWHM in degrees 2 theta; default 1.5 pixel
        widths seen from the sample, degrees(1.5 p / distance).
    polarization_factor: pyFAI polarization factor (0.99: horizontal synchrotron beam).
    """

    def __init__(
        self,
        geometry: Geometry,
        *,
        cathode_area: float = 5e9,
        al_area: float = 1.5e9,
        calibrant_area: float = 5e9,
        background: float = 1e10,
        dark_rate: float = 20.0,
        instrument_fwhm_deg: float | None = None,
        polarization_factor: float = 0.99,
    ) -> None:
        if geometry.wavelength is None:
            raise ValueError("The geometry has no wavelength.")
        for name, value in (("cathode_area", cathode_area), ("al_area", al_area),
                            ("calibrant_area", calibrant_area), ("background", background),
                            ("dark_rate", dark_rate)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.geometry = geometry
        self.shape: tuple[int, int] = tuple(geometry.detector.shape)
        self.wavelength_A = geometry.wavelength / M_PER_A
        self.cathode_area, self.al_area, self.calibrant_area = cathode_area, al_area, calibrant_area
        self.background, self.dark_rate = background, dark_rate
        pixel_rad = math.sqrt(geometry.detector.pixel1 * geometry.detector.pixel2) / geometry.dist
        self.instrument_fwhm_deg = (
            math.degrees(1.5 * pixel_rad) if instrument_fwhm_deg is None else float(instrument_fwhm_deg)
        )

        q_pix = pixel_q(geometry)
        k = 2.0 * np.pi / self.wavelength_A
        q_hi = float(np.nanmax(q_pix))
        if q_hi >= 2.0 * k:
            raise ValueError("The detector reaches beyond back-scattering; not a transmission geometry.")
        # narrowest instrumental line: at the largest angle, G_Q = k cos(theta) Gamma
        g_min = k * math.cos(math.asin(q_hi / (2.0 * k))) * math.radians(self.instrument_fwhm_deg)
        self._step = g_min / GRID_POINTS_PER_FWHM
        q_lo = max(float(np.nanmin(q_pix)) - 2 * self._step, self._step)
        self.q_grid = q_lo + self._step * np.arange(int(math.ceil((q_hi - q_lo) / self._step)) + 3)
        fine_step = self._step / LOOKUP_REFINEMENT
        self._fine_q = q_lo + fine_step * np.arange((self.q_grid.size - 1) * LOOKUP_REFINEMENT + 1)
        self._pixel_index = np.rint((q_pix - q_lo) / fine_step).astype(np.int32)
        # Omega_p P_p: solid angle (sr) times polarization
        omega = geometry.solidAngleArray() * (
            geometry.detector.pixel1 * geometry.detector.pixel2 / geometry.dist**2
        )
        self._pixel_factor = (omega * geometry.polarization(factor=polarization_factor)).astype(np.float32)
        self._al = self._fcc_lines(AL_LATTICE_A, _al_f2, B_ISO_A2["Al"], al_area)
        self._calibrant = self._fcc_lines(CEO2_LATTICE_A, _ceo2_f2, B_ISO_A2["CeO2"], calibrant_area)
        self._area_003 = _reference_003_area()

    # --- lines -------------------------------------------------------------------------
    def _fcc_lines(self, a: float, f2, b_iso: float, area_111: float) -> _Lines:
        """Lines of an fcc phase (any fcc cell: `al_reflections` takes a), (111) area
        scaled to area_111, instrument-limited (no sample broadening)."""
        lines = al_reflections((1e-6, float(self.q_grid[-1])), a=a)
        hkl = np.array([line.hkl for line in lines], dtype=float)
        q = np.array([line.q for line in lines])
        m = np.array([line.multiplicity for line in lines], dtype=float)
        areas = line_intensity(m, f2(hkl, q), q, b_iso)
        return _Lines(q, area_111 * areas / areas[0], np.zeros_like(q))

    def _cathode_lines(
        self, lattice: LatticeState, microstrain: ArrayLike, crystallite_size_A: float
    ) -> _Lines:
        """Every R-3m line of every shell: Q, area (weight w_s, see `line_intensity`) and
        Lorentzian FWHM L = 2 pi K / D + 2 eps_s Q (Williamson-Hall in Q)."""
        if crystallite_size_A <= 0:
            raise ValueError(f"crystallite_size_A must be positive, got {crystallite_size_A}")
        eps = np.broadcast_to(np.asarray(microstrain, dtype=float), np.shape(lattice.a_A))
        if np.any(eps < 0):
            raise ValueError("microstrain must be >= 0")
        a, c, eps, weight = _merge_shells(lattice, eps)
        # families of every line any shell can put on the detector (cached per cell box)
        hkl, m = _r3m_families(math.floor(a.min() * 100) / 100, math.floor(c.min() * 10) / 10,
                               round(float(self.q_grid[-1]), 3))
        h, k, l = (x[None, :] for x in hkl.T)  # noqa: E741
        q = 2.0 * np.pi / hexagonal_d(h, k, l, a[:, None], c[:, None])  # (shells, lines)
        area = line_intensity(m, _layered_f2(l, q), q, B_ISO_A2["layered"])
        area = self.cathode_area / self._area_003 * weight[:, None] * area
        lorentz = 2.0 * np.pi * SCHERRER_K / crystallite_size_A + 2.0 * eps[:, None] * q
        return _Lines(q.ravel(), area.ravel(), lorentz.ravel())

    # --- patterns ----------------------------------------------------------------------
    def _profile(self, lines: _Lines) -> np.ndarray:
        """sum of the lines' pseudo-Voigts on `q_grid` (counts/(s sr)), each within
        +-TAIL_FWHMS of its centre (see the module docstring)."""
        grid = self.q_grid
        out = np.zeros(grid.size)
        keep = (lines.area > 0) & (lines.q > grid[0]) & (lines.q < grid[-1])
        q, area, lorentz = lines.q[keep], lines.area[keep], lines.lorentz_fwhm[keep]
        if q.size == 0:
            return out
        k = 2.0 * np.pi / self.wavelength_A
        gauss = k * np.sqrt(1.0 - (q / (2.0 * k)) ** 2) * math.radians(self.instrument_fwhm_deg)
        fwhm = (gauss**5 + 2.69269 * gauss**4 * lorentz + 2.42843 * gauss**3 * lorentz**2
                + 4.47163 * gauss**2 * lorentz**3 + 0.07842 * gauss * lorentz**4 + lorentz**5) ** 0.2
        ratio = lorentz / fwhm
        eta = 1.36603 * ratio - 0.47719 * ratio**2 + 0.11116 * ratio**3
        half = int(math.ceil(TAIL_FWHMS * fwhm.max() / self._step))
        offsets = np.arange(-half, half + 1)
        padded = np.zeros(grid.size + 2 * half)
        centre = np.rint((q - grid[0]) / self._step).astype(np.int64)
        chunk = max(1, 2_000_000 // offsets.size)
        for s in _slices(q.size, chunk):
            index = centre[s, None] + offsets  # grid index, may run past either end
            values = pseudo_voigt(
                grid[0] + index * self._step, q[s, None], fwhm[s, None], eta[s, None], area[s, None]
            )
            padded += np.bincount((index + half).ravel(), weights=values.ravel(), minlength=padded.size)
        out += padded[half : half + grid.size]
        return out

    def _background(self, q: np.ndarray) -> np.ndarray:
        """B(Q) = b (1 + 2 exp(-Q / 1 A^-1)), counts/(s sr)."""
        return self.background * (1.0 + 2.0 * np.exp(-q))

    def _pattern_on_grid(self, lattice: LatticeState | None, microstrain: ArrayLike, crystallite_size_A: float) -> np.ndarray:
        lines = [self._al] if self.al_area > 0 else []
        if lattice is not None and self.cathode_area > 0:
            lines.append(self._cathode_lines(lattice, microstrain, crystallite_size_A))
        total = self._background(self.q_grid)
        if lines:
            total += self._profile(_Lines(*(np.concatenate(x) for x in zip(*lines))))
        return total

    def render_pattern_1d(
        self,
        q: ArrayLike,
        lattice: LatticeState | None,
        microstrain: ArrayLike = 0.0,
        crystallite_size_A: float = math.inf,
    ) -> np.ndarray:
        """I(Q) at the points q (1/A), counts/(s sr) at nominal flux: cathode lines
        (``lattice``; None = the cell without cathode), Al lines and background, exactly
        the pattern the frames sample (linear interpolation of the internal grid)."""
        return np.interp(np.asarray(q, dtype=float), self.q_grid,
                         self._pattern_on_grid(lattice, microstrain, crystallite_size_A))

    def _calibrant_on_grid(self) -> np.ndarray:
        return self._profile(self._calibrant) + self._background(self.q_grid)

    def calibrant_pattern_1d(self, q: ArrayLike) -> np.ndarray:
        """I(Q) of the CeO2 calibrant (with background), counts/(s sr) at nominal flux."""
        return np.interp(np.asarray(q, dtype=float), self.q_grid, self._calibrant_on_grid())

    # --- frames ------------------------------------------------------------------------
    def _expected(self, pattern: np.ndarray | None, exposure_s: float, flux_scale: float) -> np.ndarray:
        """Expected counts per pixel, t (phi I(Q_p) Omega_p P_p + dark), float32."""
        if exposure_s < 0 or flux_scale < 0:
            raise ValueError(f"exposure_s and flux_scale must be >= 0, got {exposure_s}, {flux_scale}")
        if pattern is None or flux_scale == 0:
            return np.full(self.shape, exposure_s * self.dark_rate, dtype=np.float32)
        fine = np.interp(self._fine_q, self.q_grid, pattern).astype(np.float32)
        expected = np.take(fine, self._pixel_index)
        expected *= self._pixel_factor
        expected *= np.float32(exposure_s * flux_scale)
        expected += np.float32(exposure_s * self.dark_rate)
        return expected

    def expected_frame(
        self,
        lattice: LatticeState | None,
        microstrain: ArrayLike,
        crystallite_size_A: float,
        exposure_s: float,
        flux_scale: float = 1.0,
    ) -> np.ndarray:
        """Noise-free expected counts per pixel (float32, detector shape) of a cathode cell
        (``lattice`` None: Al and background only) for an exposure (s) at flux ratio
        ``flux_scale`` (flux / nominal; 0 = beam off, dark only)."""
        pattern = self._pattern_on_grid(lattice, microstrain, crystallite_size_A) if flux_scale > 0 else None
        return self._expected(pattern, exposure_s, flux_scale)

    def render(
        self,
        lattice: LatticeState | None,
        microstrain: ArrayLike,
        crystallite_size_A: float,
        exposure_s: float,
        rng: np.random.Generator,
        flux_scale: float = 1.0,
    ) -> np.ndarray:
        """A counts frame (uint32, detector shape) of the cathode cell: `expected_frame`
        with counting noise (Poisson, normal above `NORMAL_APPROXIMATION_COUNTS`)."""
        return _count(self.expected_frame(lattice, microstrain, crystallite_size_A, exposure_s, flux_scale), rng)

    def render_calibrant(self, exposure_s: float, rng: np.random.Generator, flux_scale: float = 1.0) -> np.ndarray:
        """A counts frame (uint32) of the CeO2 calibrant (SRM 674b) in this geometry."""
        pattern = self._calibrant_on_grid() if flux_scale > 0 else None
        return _count(self._expected(pattern, exposure_s, flux_scale), rng)


def _slices(n: int, size: int):
    """Slices covering range(n) in pieces of at most ``size``."""
    return (slice(i, min(i + size, n)) for i in range(0, n, size))


def _count(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Counting noise: Poisson(lambda) per pixel, or round(N(lambda, lambda)) where
    lambda >= `NORMAL_APPROXIMATION_COUNTS`; uint32."""
    out = np.empty(expected.shape, dtype=np.uint32)
    high = expected >= NORMAL_APPROXIMATION_COUNTS
    if high.any():
        lam = expected[high]
        draw = lam + np.sqrt(lam) * rng.standard_normal(lam.size, dtype=np.float32)
        out[high] = np.rint(np.maximum(draw, 0.0))
    low = ~high
    out[low] = rng.poisson(expected[low])
    return out
