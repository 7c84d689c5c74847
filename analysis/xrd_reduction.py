"""Streaming reduction of operando powder XRD frames: I(Q), (003) phases, lattice, strain, size.

`XrdReducer` takes the frames of one operando run in order (``add(frame)``) and returns,
per frame, a frozen `XrdFrame`:

1. azimuthal integration I(Q) (`analysis.xrd.Integrator`, built once per geometry by
   `reduction_integrator`: ``npt`` bins over Q_MIN..q_max, by default one pixel's Q step
   wide, see `default_npt`);
2. the (003) reflection inside ``q003_window`` fitted with one or two pseudo-Voigt phases,
   a second phase reported only where it is significant (BIC, >= 5 % of the area,
   centres >= one FWHM and >= 5 sigma apart: `analysis.xrd.fit_reflection`,
   ``n_phases="auto"``): c of each phase = 3 d(003), the phase fractions, the separation
   between coexisting H2/H3 phases;
3. further R-3m reflections that no other line (R-3m or Al current collector) crowds
   (`isolated_reflections`), fitted one phase each where the current lattice puts them
   (first up to ``LOW_Q_PASS``, where an error in a moves lines least, then up to q_max
   with the refined a), and a, c by least squares in
   1/d^2 = 4 (h^2 + hk + k^2) / (3 a^2) + l^2 / c^2 (`analysis.xrd.lattice_parameters`),
   V = sqrt(3)/2 a^2 c;
4. strains eps = (x - x0) / x0 of a, c and V (SCIENCE.md eq. 1) against the pristine
   cell (a0, c0): the reference given, else the first frame's;
5. Williamson-Hall (SCIENCE.md eq. 4) over the fitted lines, with the Lorentzian FWHM
   beta converted from Q to degrees 2 theta and the instrumental FWHM subtracted:
   beta cos(theta) / (K lambda) = 1/D + 4 eps sin(theta) / (K lambda).

Before step 1, every frame is checked (`analysis.frame_quality.assess_frame`): non-finite,
saturated and dead pixels are masked out of the integration; a frame of the wrong shape or
mostly masked is skipped (its `XrdFrame` is all NaN, ``quality.usable`` False); a frame
without signal, or whose (003) cannot be fitted, is all NaN with the ``reason``. Such
frames change nothing of the reducer's state (reference cell, previous c).

Units (DESIGN.md): Q in 1/A, lengths in A, angles in degrees, wavelength in A.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
from pyFAI.geometry import Geometry

from nanostrain.analysis.frame_quality import OK, FrameQuality, assess_frame
from nanostrain.analysis.strain import strain
from nanostrain.analysis.units import M_PER_A, fwhm_q_to_two_theta, q_to_two_theta
from nanostrain.analysis.xrd import (
    Integrator,
    Reflection,
    al_reflections,
    cell_volume,
    fit_reflection,
    lattice_parameters,
    r3m_reflections,
    williamson_hall,
)

__all__ = [
    "Q003_WINDOW",
    "Q_MIN",
    "XrdFrame",
    "XrdReducer",
    "default_npt",
    "isolated_reflections",
    "reduction_integrator",
]

#: (003) search window, 1/A (SCIENCE.md: 1.27-1.42 over H1-H2-H3, with margin)
Q003_WINDOW = (1.24, 1.46)
#: lower end of the reduced Q range, 1/A
Q_MIN = 0.5
#: smallest half-width of the window fitted around other reflections, 1/A; the window
#: also spans at least LINE_WINDOW_BINS bins each side, so a fit always has enough points
LINE_HALF_WINDOW = 0.035
LINE_WINDOW_BINS = 5.5
#: upper Q of the first line search (1/A), where a 1 % change of a moves lines < 0.035
LOW_Q_PASS = 3.3
#: a line is fitted alone only if every other line (R-3m or Al) is farther than this
#: many half-windows
MIN_LINE_SPACING = 1.5
#: `XrdFrame.size_note` of a frame whose Williamson-Hall intercept is not resolved
SIZE_UNRESOLVED = ("no size broadening resolved (Williamson-Hall intercept <= 0 or within 2 sigma): "
                   "crystallites larger than the resolution, or widths at the instrument width")
#: where the first frame's lines are looked for when no reference a is given: the
#: pristine layered oxide's a (SCIENCE.md section 1), A
PRISTINE_A_A = 2.87


def isolated_reflections(a: float, c: float, q_range: tuple[float, float], spacing: float) -> list[Reflection]:
    """R-3m lines of the cell (a, c in A) inside q_range (1/A), (003) excepted, that lie
    at least ``spacing`` (1/A) from every other R-3m and Al current-collector line: the
    ones a single-peak fit can trust."""
    lines = r3m_reflections(a, c, q_range)
    others = np.array([line.q for line in lines] + [line.q for line in al_reflections(q_range)])
    chosen = []
    for line in lines:
        if line.hkl == (0, 0, 3):
            continue
        distance = np.abs(others - line.q)
        if np.sort(distance)[1] >= spacing:  # [0] is the line itself
            chosen.append(line)
    return chosen


def default_npt(geometry: Geometry, q_max: float, q_min: float = Q_MIN) -> int:
    """Number of Q bins over q_min..q_max (1/A) one pixel's Q step wide at small angles,
    dQ = (2 pi / lambda) p / D (pixel p, distance D, both m; lambda in A); at least 50.

    ~0.005 1/A for a PerkinElmer panel at 1.5 m and 0.1665 A. Narrower bins hold few
    pixels and give noisy, spiky profiles.
    """
    pixel_dq = 2 * math.pi / (geometry.wavelength / M_PER_A) * max(geometry.pixel1, geometry.pixel2) / geometry.dist
    return max(50, int((q_max - q_min) / pixel_dq))


def reduction_integrator(geometry: Geometry, npt: int | None = None, q_max: float = 5.0) -> Integrator:
    """The azimuthal integration of the reduction: ``npt`` bins over Q_MIN..q_max (1/A),
    ``default_npt`` bins if npt is None. Build it once per geometry and share it between
    runs (the matrix costs far more than a frame)."""
    return Integrator(geometry, npt=npt or default_npt(geometry, q_max), q_range=(Q_MIN, q_max))


_NOT_SCALARS = ("intensity", "quality", "reason", "size_note")


@dataclass(frozen=True)
class XrdFrame:
    """The reduction of one frame (see the module docstring); lengths in A, Q in 1/A.

    n_phases: phases in (003) (1 or 2); q003, fwhm003: centre and FWHM of the major
    (003); c_phase1: c of the larger-c phase (H2, or the only one); c_phase2: c of the
    smaller-c phase (H3; NaN with one phase); fraction_phase2: its share of the (003) area
    (0 with one phase); phase_separation_A: c_phase1 - c_phase2 (0 with one phase);
    a_A, c_A: lattice from the major (003) and the isolated lines (a NaN if no in-plane
    line was found, c then 3 d(003)); volume_A3: sqrt(3)/2 a^2 c; n_reflections: lines
    in the a, c fit; size_A, microstrain: Williamson-Hall (NaN with fewer than two lines;
    size_A NaN, never inf, where no size broadening is resolved, see
    `analysis.xrd.williamson_hall`), size_note: why size_A is NaN in a reduced frame ("" if
    it is not);
    strain_a, strain_c, strain_volume: against the reference cell (eq. 1);
    lattice_change_A: |c - c of the previous frame| (0 for the first frame), large at the
    H2 -> H3 collapse; intensity: I(Q) on `XrdReducer.q` (NaN in empty bins).
    quality: the frame's `FrameQuality`; reason: why the values are NaN (empty when the
    frame was reduced).
    """

    n_phases: int
    q003: float
    fwhm003: float
    c_phase1: float
    c_phase2: float
    fraction_phase2: float
    phase_separation_A: float
    a_A: float
    c_A: float
    volume_A3: float
    n_reflections: int
    size_A: float
    microstrain: float
    strain_a: float
    strain_c: float
    strain_volume: float
    lattice_change_A: float
    intensity: np.ndarray = field(repr=False, compare=False)
    quality: FrameQuality = field(default=FrameQuality(OK), compare=False)
    reason: str = ""
    size_note: str = ""

    def scalars(self) -> dict[str, float | int]:
        """Every number (every field but ``intensity``, ``quality``, ``reason``,
        ``size_note``), in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_SCALARS}

    @classmethod
    def not_reduced(cls, npt: int, quality: FrameQuality, reason: str) -> XrdFrame:
        """The result of a frame that was not reduced: every number NaN (counts 0), with
        the ``reason``."""
        numbers = {f.name: (0 if f.type == "int" else math.nan) for f in fields(cls) if f.name not in _NOT_SCALARS}
        return cls(**numbers, intensity=np.full(npt, np.nan), quality=quality, reason=reason)


class XrdReducer:
    """Operando XRD reduction of one run's frames, in order; see the module docstring.

    Parameters
    ----------
    integrator: the azimuthal integration of the frames (`reduction_integrator`); its Q
        range sets the reduced range, its geometry's wavelength the conversions to 2 theta.
    instrument_fwhm_deg: instrumental Lorentzian FWHM (degrees 2 theta) subtracted from
        every line's before Williamson-Hall.
    q003_window: (lo, hi) Q (1/A) of the (003) fit.
    reference_a_A, reference_c_A: the pristine cell strains refer to; None takes the
        first reduced frame's (a: the first frame with a finite a).
    dead_mask: bool array of the detector shape, True = dead pixel (masked in every frame).
    saturation: counts at or above which a pixel is saturated and masked (default the top
        of an integer frame's counter).
    """

    def __init__(
        self,
        integrator: Integrator,
        *,
        instrument_fwhm_deg: float = 0.0,
        q003_window: tuple[float, float] = Q003_WINDOW,
        reference_a_A: float | None = None,
        reference_c_A: float | None = None,
        dead_mask: np.ndarray | None = None,
        saturation: float | None = None,
    ) -> None:
        lo, hi = q003_window
        if not integrator.q_range[0] <= lo < hi <= integrator.q_range[1]:
            raise ValueError(f"q003_window {q003_window} must be an interval inside the reduced Q range {integrator.q_range}")
        if instrument_fwhm_deg < 0:
            raise ValueError(f"instrument_fwhm_deg must be >= 0, got {instrument_fwhm_deg}")
        self.integrator = integrator
        self.wavelength_A = integrator.wavelength_A
        self.q_max = integrator.q_range[1]
        self.instrument_fwhm_deg = float(instrument_fwhm_deg)
        self.q003_window = (float(lo), float(hi))
        self.a0, self.c0 = reference_a_A, reference_c_A
        self.dead_mask, self.saturation = dead_mask, saturation
        self.n_frames = 0
        self._last_a: float | None = None
        self._last_c: float | None = None

    @property
    def q(self) -> np.ndarray:
        """Q (1/A) of the bins of every frame's I(Q)."""
        return self.integrator.q

    def add(self, frame: np.ndarray) -> XrdFrame:
        """Check, integrate and reduce the next frame (detector shape, counts); a frame
        that cannot be reduced gives `XrdFrame.not_reduced` (module docstring)."""
        quality, mask = assess_frame(frame, self.integrator.shape, dead_mask=self.dead_mask, saturation=self.saturation)
        if quality.status != OK:
            return XrdFrame.not_reduced(self.integrator.npt, quality, quality.reason)
        _, intensity = self.integrator(np.where(mask, 0, frame), mask if mask.any() else None)
        try:
            lattice = self._lattice(self.integrator.q, intensity)
        except ValueError as error:  # no (003) to fit in this frame
            return XrdFrame.not_reduced(self.integrator.npt, quality, f"no fit: {error}")
        if self.c0 is None:
            self.c0 = lattice["c_A"]
        if self.a0 is None and math.isfinite(lattice["a_A"]):
            self.a0 = lattice["a_A"]
        a0 = math.nan if self.a0 is None else self.a0
        change = abs(lattice["c_A"] - self._last_c) if self._last_c is not None else 0.0
        self._last_c = lattice["c_A"]
        self.n_frames += 1
        return XrdFrame(
            **lattice,
            strain_a=float(strain(lattice["a_A"], a0)),
            strain_c=float(strain(lattice["c_A"], self.c0)),
            strain_volume=float(strain(lattice["volume_A3"], cell_volume(a0, self.c0))),
            lattice_change_A=change,
            intensity=intensity,
            quality=quality,
        )

    def _fit_lines(self, q: np.ndarray, intensity: np.ndarray, a: float, c: float, q_high: float):
        """Single-phase fits of the isolated lines the cell (a, c) puts between the (003)
        window and q_high: ({hkl: d}, Lorentzian FWHMs, centres), lines whose fit failed,
        has no area or left its window omitted."""
        d_by_hkl, widths, centres = {}, [], []
        half = max(LINE_HALF_WINDOW, LINE_WINDOW_BINS * float(np.median(np.diff(q))))
        for line in isolated_reflections(a, c, (self.q003_window[1], q_high), MIN_LINE_SPACING * half):
            window = (line.q - half, line.q + half)
            try:
                fit = fit_reflection(q, intensity, window, n_phases=1)
            except ValueError:
                continue
            if fit.areas[0] <= 0 or not window[0] < fit.centers[0] < window[1]:
                continue
            d_by_hkl[line.hkl] = fit.d[0]
            widths.append(fit.fwhm_lorentzian[0])
            centres.append(fit.centers[0])
        return d_by_hkl, widths, centres

    def _lattice(self, q: np.ndarray, intensity: np.ndarray) -> dict[str, float | int]:
        """Steps 2, 3 and 5 of the module docstring on one I(Q)."""
        fit003 = fit_reflection(q, intensity, self.q003_window, n_phases="auto")
        c_phases = [3 * d for d in fit003.d]  # centres ascend in Q, so c descends: H2 first
        major = int(np.argmax(fit003.fractions))
        c_major = c_phases[major]
        # Lines are looked for where the current lattice puts them: first at low Q, where a
        # change of a moves them least, then everywhere with the refined a.
        a_guess = self._last_a or self.a0 or PRISTINE_A_A
        for q_high in (LOW_Q_PASS, self.q_max - 2 * LINE_HALF_WINDOW):
            d_by_hkl, widths_q, centres_q = self._fit_lines(q, intensity, a_guess, c_major, q_high)
            d_by_hkl[(0, 0, 3)] = fit003.d[major]
            if any(h or k for h, k, _ in d_by_hkl):
                a, c = lattice_parameters(d_by_hkl)
                a_guess = a
            else:  # no in-plane line found: c from (003) alone, a unknown
                a, c = math.nan, c_major
        if math.isfinite(a):
            self._last_a = a
        widths_q.append(fit003.fwhm_lorentzian[major])
        centres_q.append(fit003.centers[major])
        two_theta = q_to_two_theta(np.asarray(centres_q), self.wavelength_A)
        beta = fwhm_q_to_two_theta(np.asarray(widths_q), np.asarray(centres_q), self.wavelength_A)
        beta = np.clip(beta - self.instrument_fwhm_deg, 0.0, None)  # at the instrument width: 0
        if len(centres_q) >= 2:
            size, microstrain = williamson_hall(two_theta, beta, self.wavelength_A)
            size_note = "" if math.isfinite(size) else SIZE_UNRESOLVED
        else:
            size, microstrain, size_note = math.nan, math.nan, "fewer than two lines fitted"
        two = fit003.n_phases == 2
        return {
            "n_phases": fit003.n_phases,
            "q003": fit003.centers[major],
            "fwhm003": fit003.fwhm[major],
            "c_phase1": c_phases[0],
            "c_phase2": c_phases[-1] if two else math.nan,
            "fraction_phase2": fit003.fractions[-1] if two else 0.0,
            "phase_separation_A": c_phases[0] - c_phases[-1] if two else 0.0,
            "a_A": float(a),
            "c_A": float(c),
            "volume_A3": float(cell_volume(a, c)),
            "n_reflections": len(d_by_hkl),
            "size_A": float(size),
            "microstrain": float(microstrain),
            "size_note": size_note,
        }
