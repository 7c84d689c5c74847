"""Live detector calibration: refine the XRD geometry from a calibrant frame.

For a ``technique="xrd_calibration"`` run (plan `calibrate_xrd`), each frame is passed to
`analysis.xrd_calibration.calibrate_geometry` starting from the geometry the plan recorded
(``xrd_geometry``); the refined geometry is published in a derived ``calibration`` stream
(PONI parameters, residual) and, if the start document names ``poni_path``, written
there as a PONI file for the detector and the reduction to use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.xrd import pyfai_geometry
from ..analysis.xrd_calibration import calibrate_geometry
from .derived import AnalysisCallback


class XrdCalibrationCallback(AnalysisCallback):
    """Geometry refinement from calibrant frames; see the module docstring."""

    analysis = "xrd_calibration"
    techniques = ("xrd_calibration",)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.live_signal("rms_2theta_deg", float, float("nan"))

    def open_run(self, start: dict[str, Any]) -> None:
        self.initial = pyfai_geometry(start["xrd_geometry"])
        self.calibrant = start.get("calibrant", "CeO2")
        self.poni_path = start.get("poni_path")

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        result = calibrate_geometry(frame, self.initial, calibrant=self.calibrant)
        geometry = result.geometry
        self.derived.event("calibration", {
            "raw_seq_num": seq_num,
            "dist_m": geometry.dist, "poni1_m": geometry.poni1, "poni2_m": geometry.poni2,
            "rot1_rad": geometry.rot1, "rot2_rad": geometry.rot2, "rot3_rad": geometry.rot3,
            "rms_2theta_deg": result.rms_2theta_deg, "n_rings": result.n_rings, "n_points": result.n_points,
            "pyfai_config": json.dumps(geometry.get_config()),
        })
        self.set_live("rms_2theta_deg", result.rms_2theta_deg)
        if self.poni_path:
            path = Path(self.poni_path)
            path.unlink(missing_ok=True)  # pyFAI appends to an existing PONI file
            geometry.save(str(path))
