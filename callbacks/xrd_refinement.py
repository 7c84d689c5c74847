"""Sequential Pawley refinement of an operando XRD run: frames to
`analysis.xrd_refinement.SequentialRefinement`.

Per ``technique="xrd"`` run, `XrdRefinementCallback` integrates every frame as the live
reduction does (`analysis.xrd_reduction.reduction_integrator` on the run's recorded
geometry, ``xrd_geometry``; bad pixels masked and bad frames skipped by
`analysis.frame_quality.assess_frame`), takes the Poisson esd of each bin,
sqrt(I_b / N_b) (N_b the bin's solid-angle weighted pixel count), and refines the
pattern seeded from the previous frame's result. The science and its equations are in
`nanostrain.analysis.xrd_refinement`.

It is not one of the live analyses every session runs (`callbacks.registry.ANALYSES`):
a frame costs 0.15-0.7 s of refinement (two-phase frames the most, see
benchmarks/README.md), and its instrument profile comes from the catalog (the CeO2
calibration that gave the run its geometry), so it runs offline on a stored run:
``nanostrain refine UID [--write]`` (`nanostrain.cli`), through replay.

Derived run (analysis ``xrd_refinement``) streams: ``instrument`` (once: the GSAS-II
profile terms U, V, W (centideg^2), X, Y (centideg) and the wavelength, A),
``refinement`` (one row per usable frame: the raw seq_num, the electrochemistry values
``echem_keys`` names, every number of `RefinementFrame`, NaN where the refinement
failed, and ``note``: why one phase was kept, or why the frame failed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analysis.frame_quality import OK, assess_frame
from ..analysis.xrd import GsasProfile, Integrator
from ..analysis.xrd_reduction import PRISTINE_A_A
from ..analysis.xrd_refinement import RefinementFrame, SequentialRefinement
from .derived import AnalysisCallback
from .xrd import run_integrator


class XrdRefinementCallback(AnalysisCallback):
    """Sequential Pawley refinement of an operando XRD run; see the module docstring.

    Parameters
    ----------
    instrument: the instrument's GSAS-II profile terms {"U", "V", "W", "X", "Y"}
        (centidegrees; `analysis.xrd.GsasProfile`), e.g. from `nanostrain.export.instrument_profile`.
    npt, q_max: the Q bins of the integration, as `callbacks.xrd.XrdCallback`'s.
    q_window: (lo, hi) Q range refined (1/A).
    image_key, stream, frame_source: see `AnalysisCallback`.
    """

    analysis = "xrd_refinement"
    techniques = ("xrd",)

    def __init__(
        self,
        instrument: dict[str, float],
        npt: int | None = None,
        q_max: float = 5.0,
        q_window: tuple[float, float] | list[float] = (1.0, 5.0),
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.instrument = GsasProfile(**{key: float(instrument[key]) for key in GsasProfile._fields})
        self.npt, self.q_max = npt, q_max
        lo, hi = q_window
        self.q_window = (float(lo), float(hi))
        self._integrators: dict[str, Integrator] = {}  # geometry (JSON) -> its integrator

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "instrument": self.instrument._asdict(), "npt": self.npt,
                "q_max": self.q_max, "q_window": list(self.q_window)}

    def open_run(self, start: dict[str, Any]) -> None:
        self.integrator = run_integrator(start, self._integrators, self.npt, self.q_max)
        reference = start.get("xrd_reference") or {}
        self.refinement = SequentialRefinement(self.integrator.q, self.integrator.wavelength_A, self.instrument,
                                               q_window=self.q_window,
                                               start_a_A=reference.get("a_A") or PRISTINE_A_A,
                                               bin_edges=np.linspace(*self.integrator.q_range, self.integrator.npt + 1))
        self.keys = start.get("echem_keys", {})
        self.derived.event("instrument", {**self.instrument._asdict(), "wavelength_A": self.integrator.wavelength_A})

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        quality, mask = assess_frame(frame, self.integrator.shape)
        if quality.status != OK:
            return
        _, intensity = self.integrator(np.where(mask, 0, frame), mask if mask.any() else None)
        esd = np.sqrt(np.clip(intensity, 0, None) / np.maximum(self.integrator.pixel_weight, 1e-12))
        try:
            result = self.refinement.add(intensity, esd)
        except ValueError as error:  # no pattern to refine in this frame
            result = RefinementFrame.not_refined(f"not refined: {error}")
        echem = {name: float(data[key]) for name, key in self.keys.items() if key in data}
        self.derived.event("refinement", {"raw_seq_num": seq_num, **echem, **result.scalars(), "note": result.note})
