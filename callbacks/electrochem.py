"""Electrochemistry of a cycling run: capacities per cycle, efficiency, retention, GITT.

Reads the ``echem`` stream that the cycling plans record (one event per sample of the
cycler channel's own data log, `nanostrain.devices.cycler.CyclerLog`, so none is lost
while the plan is paused or suspended; the data keys are named in the start document's ``echem_keys``) and, when the run ends,
publishes a derived run with a ``cycles`` stream (charge/discharge capacity in mAh/g,
coulombic efficiency and retention in %) and, for a GITT run, a ``gitt`` stream per
titration: state of charge ``soc``, chemical diffusion coefficient ``D_cm2_s`` in cm^2/s
from the pulse's sqrt(t) transient (SCIENCE.md eq. 2) and ``D_relaxation_cm2_s`` from the
rest's relaxation (`analysis.electrochem.gitt_diffusion`: valid also where r_p^2 / D is not
much longer than the sqrt(t) window, where eq. 2 reads D several times too low).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analysis.electrochem import CyclingAccumulator
from ..schema.start import ELECTROCHEMISTRY, XRD
from .derived import AnalysisCallback


class ElectrochemistryCallback(AnalysisCallback):
    """Per-cycle capacities and GITT diffusivity of cycling runs (see module docstring).

    gitt_radius_um: particle radius r_p for eq. 2 when the start document's sample
    metadata has no ``radius_um``.
    """

    analysis = "electrochemistry"
    techniques = (XRD, ELECTROCHEMISTRY)
    needs_frames = False

    def __init__(self, gitt_radius_um: float = 2.0, stream: str = "echem", **kwargs: Any):
        super().__init__(stream=stream, **kwargs)
        self.gitt_radius_um = gitt_radius_um

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "gitt_radius_um": self.gitt_radius_um}

    def open_run(self, start: dict[str, Any]) -> None:
        self.keys = start["echem_keys"]
        sample = start.get("sample") or {}
        radius_um = sample.get("radius_um", self.gitt_radius_um) if isinstance(sample, dict) else self.gitt_radius_um
        gitt = start.get("plan_name") == "gitt"
        self.reducer = CyclingAccumulator(start["active_mass_g"], gitt_radius_cm=radius_um * 1e-4 if gitt else None)

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        names = ("step_time_s", "step_index", "cycle_index", "potential_V", "current_mA")
        self.reducer.add(*(data[self.keys[name]] for name in names))

    def finish(self) -> None:
        if len(self.reducer) < 2:
            return
        summary = self.reducer.result()
        caps = summary.capacities
        for i in range(caps.cycle.size):
            self.derived.event("cycles", {
                "cycle": int(caps.cycle[i]),
                "charge_mAh_g": float(caps.charge[i]),
                "discharge_mAh_g": float(caps.discharge[i]),
                "coulombic_efficiency_pct": float(summary.coulombic_efficiency_pct[i]),
                "retention_pct": float(summary.retention_pct[i]),
            })
        if summary.gitt is not None:
            for row in summary.gitt:
                self.derived.event("gitt", {"soc": float(row["soc"]), "D_cm2_s": float(row["D"]),
                                            "D_relaxation_cm2_s": float(row["D_relaxation"])})
