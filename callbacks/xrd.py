"""Live reduction of operando powder XRD: I(Q), (003) phases, lattice, strain, microstrain.

Per frame of an ``technique="xrd"`` run:

1. azimuthal integration I(Q) (`analysis.xrd.Integrator`, built once per geometry from the
   pyFAI geometry the plan recorded in the start document, ``xrd_geometry``);
2. the (003) reflection fitted with one or two pseudo-Voigt phases (BIC choice,
   `analysis.xrd.fit_reflection`): c of each phase = 3 d(003), phase fractions, the
   separation dc between coexisting H2/H3 phases;
3. further reflections free of Al current-collector lines fitted one phase each, then a, c
   by least squares in 1/d^2 (`analysis.xrd.lattice_parameters`), V = sqrt(3)/2 a^2 c;
4. strains against the pristine cell (SCIENCE.md eq. 1; the first frame unless the start
   document gives ``xrd_reference``), Williamson-Hall size and microstrain (eq. 4).

Derived run streams: ``xrd`` (one row per frame), ``patterns`` (I(Q) per frame) and
``reduction`` (the Q grid, once). Live values for plans: ``phase_separation_A``,
``microstrain``, ``c_A``, ``n_phases`` and ``lattice_change_A`` (|c| change since the
previous frame, A: large at the H2 -> H3 collapse, the cue to take frames more often).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..analysis.strain import strain
from ..analysis.xrd import (
    Integrator,
    al_reflections,
    cell_volume,
    fit_reflection,
    lattice_parameters,
    pyfai_geometry,
    r3m_reflections,
    williamson_hall,
)
from ..analysis.units import fwhm_q_to_two_theta, q_to_two_theta
from .derived import AnalysisCallback

#: (003) search window, 1/A (SCIENCE.md: 1.27-1.42 over H1-H2-H3, with margin)
Q003_WINDOW = (1.24, 1.46)
#: smallest half-width of the window fitted around other reflections, 1/A; the window
#: also spans at least LINE_WINDOW_BINS bins each side, so a fit always has enough points
LINE_HALF_WINDOW = 0.035
LINE_WINDOW_BINS = 5.5
#: upper Q of the first line search (1/A), where a 1 % change of a moves lines < 0.035
LOW_Q_PASS = 3.3
#: a line is fitted alone only if every other line (R-3m or Al) is farther than this
#: many half-windows
MIN_LINE_SPACING = 1.5


def isolated_reflections(a: float, c: float, q_range: tuple[float, float], spacing: float) -> list:
    """R-3m lines (other than (003)) at least ``spacing`` (1/A) from every other line,
    Al current-collector lines included: the ones a single-peak fit can trust."""
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


def default_npt(geometry, q_max: float, q_min: float = 0.5) -> int:
    """Number of Q bins one pixel's Q step wide: dQ = (2 pi / lambda) p / D."""
    pixel_dq = 2 * math.pi / (geometry.wavelength * 1e10) * max(geometry.pixel1, geometry.pixel2) / geometry.dist
    return max(50, int((q_max - q_min) / pixel_dq))


class XrdCallback(AnalysisCallback):
    """Operando XRD reduction; see the module docstring.

    Parameters
    ----------
    npt: number of Q bins of I(Q) over 0.5..q_max; None makes the bins one pixel's Q
        step wide at small angles, dQ = (2 pi / lambda) p / D (pixel p, distance D):
        ~0.005 1/A for a PerkinElmer panel at 1.5 m and 0.1665 A. Narrower bins than
        that hold few pixels and give noisy, spiky profiles.
    q_max: upper end of the reduced Q range (1/A).
    instrument_fwhm_deg: instrumental Lorentzian FWHM (degrees 2theta) removed before
        Williamson-Hall.
    """

    analysis = "xrd_reduction"
    techniques = ("xrd",)

    def __init__(self, npt: int | None = None, q_max: float = 5.0, instrument_fwhm_deg: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.npt, self.q_max, self.instrument_fwhm_deg = npt, q_max, instrument_fwhm_deg
        self._integrators: dict[str, tuple[Integrator, float]] = {}  # geometry -> (integrator, lambda A)
        self.live_signal("phase_separation_A", float, 0.0)
        self.live_signal("microstrain", float, 0.0)
        self.live_signal("c_A", float, 0.0)
        self.live_signal("n_phases", int, 1)
        self.live_signal("lattice_change_A", float, 0.0)

    def parameters(self) -> dict[str, Any]:
        return {
            **super().parameters(),
            "npt": self.npt,
            "q_max": self.q_max,
            "instrument_fwhm_deg": self.instrument_fwhm_deg,
            "q003_window": list(Q003_WINDOW),
        }

    def open_run(self, start: dict[str, Any]) -> None:
        if "xrd_geometry" not in start:
            raise ValueError("An xrd run must record its detector geometry (start['xrd_geometry']).")
        key = json.dumps(start["xrd_geometry"], sort_keys=True)
        if key not in self._integrators:
            geometry = pyfai_geometry(start["xrd_geometry"])
            npt = self.npt or default_npt(geometry, self.q_max)
            integrator = Integrator(geometry, npt=npt, q_range=(0.5, self.q_max))
            self._integrators[key] = (integrator, geometry.wavelength * 1e10)
        self.integrator, self.wavelength_A = self._integrators[key]
        reference = start.get("xrd_reference") or {}
        self.a0, self.c0 = reference.get("a_A"), reference.get("c_A")
        self.keys = start.get("echem_keys", {})
        self.n_rows = 0
        self._last_a: float | None = None
        self._last_c: float | None = None

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        q, intensity = self.integrator(frame)
        result = self.reduce(q, intensity)
        if self.c0 is None:
            self.c0 = result["c_A"]
        if self.a0 is None and math.isfinite(result["a_A"]):
            self.a0 = result["a_A"]
        a0 = math.nan if self.a0 is None else self.a0
        result["strain_a"] = float(strain(result["a_A"], a0))
        result["strain_c"] = float(strain(result["c_A"], self.c0))
        result["strain_volume"] = float(strain(result["volume_A3"], cell_volume(a0, self.c0)))
        result["lattice_change_A"] = abs(result["c_A"] - self._last_c) if self._last_c is not None else 0.0
        self._last_c = result["c_A"]
        echem = {name: float(data[key]) for name, key in self.keys.items() if key in data}
        if self.n_rows == 0:
            self.derived.event("reduction", {"q": q, "wavelength_A": self.wavelength_A})
        self.derived.event("xrd", {"raw_seq_num": seq_num, **echem, **result})
        self.derived.event("patterns", {"raw_seq_num": seq_num, "intensity": np.nan_to_num(intensity)})
        self.n_rows += 1
        self.set_live("phase_separation_A", result["phase_separation_A"])
        self.set_live("microstrain", result["microstrain"])
        self.set_live("c_A", result["c_A"])
        self.set_live("n_phases", result["n_phases"])
        self.set_live("lattice_change_A", result["lattice_change_A"])

    def _fit_lines(self, q, intensity, a: float, c: float, q_high: float):
        """Single-phase fits of the isolated lines predicted by (a, c) up to q_high:
        ({hkl: d}, Lorentzian FWHMs, centres)."""
        d_by_hkl, widths, centres = {}, [], []
        half = max(LINE_HALF_WINDOW, LINE_WINDOW_BINS * float(np.median(np.diff(q))))
        for line in isolated_reflections(a, c, (Q003_WINDOW[1], q_high), MIN_LINE_SPACING * half):
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

    def reduce(self, q: np.ndarray, intensity: np.ndarray) -> dict[str, Any]:
        """The per-frame numbers from I(Q); see the module docstring."""
        fit003 = fit_reflection(q, intensity, Q003_WINDOW, n_phases="auto")
        c_phases = [3 * d for d in fit003.d]  # centres ascend in Q, so c descends: H2 first
        major = int(np.argmax(fit003.fractions))
        c_major = c_phases[major]
        # Lines are looked for where the current lattice puts them: first at low Q, where a
        # change of a moves them least, then everywhere with the refined a.
        a_guess = self._last_a or self.a0 or 2.87
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
        beta = np.clip(beta - self.instrument_fwhm_deg, 1e-6, None)
        size, microstrain = williamson_hall(two_theta, beta, self.wavelength_A) if len(centres_q) >= 2 else (math.nan, math.nan)
        two = fit003.n_phases == 2
        return {
            "n_phases": fit003.n_phases,
            "q003": fit003.centers[major],
            "fwhm003": fit003.fwhm[major],
            "c_phase1": c_phases[0],  # larger c (H2, or the only phase)
            "c_phase2": c_phases[-1] if two else math.nan,  # smaller c (H3)
            "fraction_phase2": fit003.fractions[-1] if two else 0.0,
            "phase_separation_A": c_phases[0] - c_phases[-1] if two else 0.0,
            "a_A": float(a),
            "c_A": float(c),
            "volume_A3": float(cell_volume(a, c)),
            "n_reflections": len(d_by_hkl),
            "size_A": float(size),
            "microstrain": float(microstrain),
        }
