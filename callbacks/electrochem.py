"""Electrochemistry of a cycling run: capacities per cycle, efficiency, retention, GITT.

Reads the ``echem`` stream that the cycling plans record (cycler readings at every poll;
the data keys are named in the start document's ``echem_keys``) and, when the run ends,
publishes a derived run with a ``cycles`` stream (charge/discharge capacity in mAh/g,
coulombic efficiency and retention in %) and, for a GITT run, a ``gitt`` stream (state of
charge and chemical diffusion coefficient D in cm^2/s per titration, SCIENCE.md eq. 2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analysis.electrochem import capacity_retention, coulombic_efficiency, cycle_capacities, gitt_diffusion
from ..schema.start import ELECTROCHEMISTRY, XRD
from .derived import AnalysisCallback


def cumulative_time(step_time_s: np.ndarray, step_index: np.ndarray) -> np.ndarray:
    """Time since the start of the protocol from each step's own clock: at every change
    of step the last step time seen is added to an offset (s)."""
    offsets = np.zeros_like(step_time_s, dtype=float)
    offset = 0.0
    for k in range(1, step_time_s.size):
        if step_index[k] != step_index[k - 1]:
            offset += step_time_s[k - 1]
        offsets[k] = offset
    return step_time_s + offsets


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
        self.mass_g = start["active_mass_g"]
        self.is_gitt = start.get("plan_name") == "gitt"
        sample = start.get("sample") or {}
        self.radius_um = sample.get("radius_um", self.gitt_radius_um) if isinstance(sample, dict) else self.gitt_radius_um
        self.rows: list[tuple[float, ...]] = []

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        names = ("step_time_s", "step_index", "cycle_index", "potential_V", "current_mA")
        self.rows.append(tuple(float(data[self.keys[name]]) for name in names))

    def finish(self) -> None:
        if len(self.rows) < 2 or not self.mass_g:
            return
        step_time, step, cycle, potential, current_mA = np.asarray(self.rows).T
        time_s = cumulative_time(step_time, step)
        # Two readings of one instant (a step's last, the next step's first): keep the
        # later, whose current is the one flowing from then on.
        keep = np.concatenate([np.diff(time_s) > 0, [True]])
        time_s, cycle, potential, current_A = time_s[keep], cycle[keep], potential[keep], current_mA[keep] / 1e3
        caps = cycle_capacities(time_s, current_A, self.mass_g, cycle_index=cycle)
        with np.errstate(divide="ignore", invalid="ignore"):
            efficiency = coulombic_efficiency(caps.charge, caps.discharge)
            retention = capacity_retention(caps.discharge) if caps.discharge[0] > 0 else np.full(caps.cycle.size, np.nan)
        for i in range(caps.cycle.size):
            self.derived.event("cycles", {
                "cycle": int(caps.cycle[i]),
                "charge_mAh_g": float(caps.charge[i]),
                "discharge_mAh_g": float(caps.discharge[i]),
                "coulombic_efficiency_pct": float(efficiency[i]),
                "retention_pct": float(retention[i]),
            })
        if self.is_gitt:
            table = gitt_diffusion(time_s, potential, current_A, radius_cm=self.radius_um * 1e-4)
            for row in table:
                self.derived.event("gitt", {"soc": float(row["soc"]), "D_cm2_s": float(row["D"])})
