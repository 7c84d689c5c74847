"""Live reduction of operando powder XRD: routes frames to `analysis.xrd_reduction.XrdReducer`.

Per ``technique="xrd"`` run, `XrdCallback` builds an `XrdReducer` from the start document
(the pyFAI geometry the plan recorded, ``xrd_geometry``; the pristine cell
``xrd_reference`` {"a_A", "c_A"} if given, else the first frame's; the electrochemistry
keys ``echem_keys``), feeds it every frame and publishes the `XrdFrame` it returns. The
science (integration, (003) phases, a and c, strains, Williamson-Hall) and its equations
are in `nanostrain.analysis.xrd_reduction`.

Derived run streams: ``frame_quality`` (one row per frame: the raw seq_num, its
`analysis.frame_quality.FrameQuality` record, whether it was ``reduced`` and the
``reason`` if not), ``xrd`` (one row per usable frame: the raw seq_num, the
electrochemistry values, every scalar of `XrdFrame`, NaN for a frame without signal or
fit, and ``size_note``, why ``size_A`` is NaN in a reduced frame, e.g. no size broadening
resolved), ``patterns`` (I(Q) per usable frame, NaN as 0) and ``reduction`` (the Q grid and
the wavelength, once). A bad frame (wrong shape, mostly non-finite or saturated) is
skipped: only its ``frame_quality`` row says why, and the analysis goes on. Live values
for plans, from reduced frames only:
``phase_separation_A``, ``microstrain``, ``c_A``, ``n_phases`` and ``lattice_change_A``
(|c| change since the previous frame, A: large at the H2 -> H3 collapse, the cue to take
frames more often).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..analysis.xrd import Integrator, pyfai_geometry
from ..analysis.xrd_reduction import Q003_WINDOW, XrdReducer, reduction_integrator
from .derived import AnalysisCallback

#: `XrdFrame` fields published as live values: (type, value before the first frame)
LIVE_VALUES: dict[str, tuple[type, float | int]] = {
    "phase_separation_A": (float, 0.0),
    "microstrain": (float, 0.0),
    "c_A": (float, 0.0),
    "n_phases": (int, 1),
    "lattice_change_A": (float, 0.0),
}


def run_integrator(start: dict[str, Any], cache: dict[str, Integrator], npt: int, q_max: float) -> Integrator:
    """The reduction's integrator (``npt`` bins up to ``q_max``, 1/A) for the detector
    geometry an xrd run records (``start["xrd_geometry"]``), built once per geometry and
    kept in ``cache``; ValueError for a run that records none."""
    if "xrd_geometry" not in start:
        raise ValueError("An xrd run must record its detector geometry (start['xrd_geometry']).")
    key = json.dumps(start["xrd_geometry"], sort_keys=True)
    if key not in cache:
        cache[key] = reduction_integrator(pyfai_geometry(start["xrd_geometry"]), npt, q_max)
    return cache[key]


class XrdCallback(AnalysisCallback):
    """Operando XRD reduction; see the module docstring.

    Parameters
    ----------
    npt: number of Q bins of I(Q) over 0.5..q_max; None makes the bins one pixel's Q
        step wide (`analysis.xrd_reduction.default_npt`).
    q_max: upper end of the reduced Q range (1/A).
    instrument_fwhm_deg: instrumental Lorentzian FWHM (degrees 2theta) removed before
        Williamson-Hall.
    q003_window: (lo, hi) Q (1/A) of the (003) fit.
    image_key, stream, frame_source: see `AnalysisCallback`.

    ``XrdCallback(**callback.parameters())`` rebuilds the same analysis.
    """

    analysis = "xrd_reduction"
    techniques = ("xrd",)

    def __init__(
        self,
        npt: int | None = None,
        q_max: float = 5.0,
        instrument_fwhm_deg: float = 0.0,
        q003_window: tuple[float, float] | list[float] = Q003_WINDOW,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.npt, self.q_max, self.instrument_fwhm_deg = npt, q_max, instrument_fwhm_deg
        lo, hi = q003_window
        self.q003_window = (float(lo), float(hi))
        self._integrators: dict[str, Integrator] = {}  # geometry (JSON) -> its integrator
        for name, (datatype, initial) in LIVE_VALUES.items():
            self.live_signal(name, datatype, initial)

    def parameters(self) -> dict[str, Any]:
        return {
            **super().parameters(),
            "npt": self.npt,
            "q_max": self.q_max,
            "instrument_fwhm_deg": self.instrument_fwhm_deg,
            "q003_window": list(self.q003_window),
        }

    def open_run(self, start: dict[str, Any]) -> None:
        integrator = run_integrator(start, self._integrators, self.npt, self.q_max)
        reference = start.get("xrd_reference") or {}
        self.reducer = XrdReducer(
            integrator,
            instrument_fwhm_deg=self.instrument_fwhm_deg,
            q003_window=self.q003_window,
            reference_a_A=reference.get("a_A"),
            reference_c_A=reference.get("c_A"),
        )
        self.keys = start.get("echem_keys", {})
        self.derived.event("reduction", {"q": self.reducer.q, "wavelength_A": self.reducer.wavelength_A})

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        result = self.reducer.add(frame)
        self.derived.event("frame_quality", {"raw_seq_num": seq_num, **result.quality.record(),
                                             "reduced": not result.reason, "reason": result.reason})
        if not result.quality.usable:
            return
        echem = {name: float(data[key]) for name, key in self.keys.items() if key in data}
        self.derived.event("xrd", {"raw_seq_num": seq_num, **echem, **result.scalars(), "size_note": result.size_note})
        self.derived.event("patterns", {"raw_seq_num": seq_num, "intensity": np.nan_to_num(result.intensity)})
        if not result.reason:
            for name in LIVE_VALUES:
                self.set_live(name, getattr(result, name))
