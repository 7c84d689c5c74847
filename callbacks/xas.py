"""Live ex situ XAS analysis (SCIENCE.md section 5): mu(E) point by point while the scan
runs, the reduction and the first-shell fit when it ends.

Raw run (``technique="xas"``, from `plans.xas.xas_scan` or `plans.xas.xas_fly_scan`):
one ``primary`` stream whose events carry the energy and the I0, It, Iref counts (data
keys named in the start document's ``xas_keys``; a fly scan's energy is the mean of the
DCM energy at the start and end of each count, its samples unevenly spaced); ``e0_eV``
(the k origin) and ``reference_edge_eV`` (the
reference foil's tabulated edge) come from the start document. Rows go to the streaming
reducer `analysis.xas.XasAccumulator`, which holds all the science.

Derived run streams: ``points`` (per point: energy, mu = ln(I0/It)), ``spectrum`` (one
event: aligned energies, mu, normalised mu, the foil's mu), ``exafs`` (one event: k,
chi(k), R, |chi(R)|) and ``fit`` (one event: the edge, the foil alignment and the Ni-O
R and sigma^2 with their standard errors). Live values: ``edge_shift_eV``, ``r_A``,
``sigma2_A2``, ``points_done``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..analysis.xas import XasAccumulator, XasOptions
from ..schema.start import XAS
from .derived import AnalysisCallback

_DEFAULTS = XasOptions()


class XasCallback(AnalysisCallback):
    """XAS reduction of ``technique="xas"`` runs; see the module docstring.

    Keyword arguments: the fields of `analysis.xas.XasOptions` but ``k_origin_eV`` (the
    run's ``e0_eV``), documented there, and ``stream``. `parameters` returns them.
    """

    analysis = "xas"
    techniques = (XAS,)
    needs_frames = False

    def __init__(
        self,
        rbkg: float = _DEFAULTS.rbkg,
        kweight: int = _DEFAULTS.kweight,
        k_range: tuple[float, float] = _DEFAULTS.k_range,
        r_range: tuple[float, float] = _DEFAULTS.r_range,
        dk: float = _DEFAULTS.dk,
        coordination: float = _DEFAULTS.coordination,
        s02: float = _DEFAULTS.s02,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = {"rbkg": float(rbkg), "kweight": int(kweight), "k_range": tuple(map(float, k_range)),
                         "r_range": tuple(map(float, r_range)), "dk": float(dk),
                         "coordination": float(coordination), "s02": float(s02)}
        XasOptions(**self.settings)  # refuse bad settings now, not at the end of a run
        self.reducer: XasAccumulator | None = None
        for name in ("edge_shift_eV", "r_A", "sigma2_A2"):
            self.live_signal(name, float, math.nan)
        self.live_signal("points_done", int, 0)

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), **{k: list(v) if isinstance(v, tuple) else v for k, v in self.settings.items()}}

    def open_run(self, start: dict[str, Any]) -> None:
        self.keys = start["xas_keys"]
        options = XasOptions(k_origin_eV=float(start["e0_eV"]), **self.settings)
        self.reducer = XasAccumulator(float(start["reference_edge_eV"]), options)
        self.set_live("points_done", 0)

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        energy = float(data[self.keys["energy"]])
        mu = self.reducer.add(energy, *(float(data[self.keys[name]]) for name in ("i0", "it", "iref")))
        self.derived.event("points", {"energy_eV": energy, "mu": mu})
        self.set_live("points_done", len(self.reducer))

    def finish(self) -> None:
        result, self.reducer = self.reducer.result(), None
        self.derived.event("spectrum", {"energy_eV": result.energies_eV, "mu": result.mu, "norm": result.norm,
                                        "mu_reference": result.mu_reference})
        self.derived.event("exafs", {"k": result.k, "chi": result.chi, "r_A": result.r_A,
                                     "chir_mag": result.chir_mag})
        fit = dataclasses.asdict(result.fit)
        self.derived.event("fit", {
            "e0_eV": result.e0_eV, "edge_shift_eV": result.edge_shift_eV, "edge_step": result.edge_step,
            "reference_e0_eV": result.reference_e0_eV, "energy_shift_eV": result.energy_shift_eV,
            "k_origin_eV": result.options.k_origin_eV, **fit,
        })
        self.set_live("edge_shift_eV", result.edge_shift_eV)
        self.set_live("r_A", result.fit.r_A)
        self.set_live("sigma2_A2", result.fit.sigma2_A2)
