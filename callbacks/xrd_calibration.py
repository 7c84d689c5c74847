"""Live detector calibration: refine the XRD geometry from a calibrant frame.

For a ``technique="xrd_calibration"`` run (plan `calibrate_xrd`), each frame is passed to
`analysis.xrd_calibration.calibrate_geometry` starting from the geometry the plan recorded
(``xrd_geometry``). The refined geometry leaves by one channel only, and writes no file:

* documents: the derived ``calibration`` stream (PONI parameters, pyFAI config, rms
  residual, one event per frame) and ``rings`` stream (the residual per ring: index, h, k,
  l, d, expected 2theta, control points, rms residual, contrast, and the instrumental
  Gaussian and Lorentzian FWHM of its line in degrees 2theta, `ring_widths`, NaN where not
  measured; one event per ring);
* the live value ``geometry`` (a str soft signal): JSON ``{"raw_uid", "raw_seq_num",
  "pyfai_config", "rms_2theta_deg"}``, or ``{"raw_uid", "raw_seq_num", "error"}`` when the
  refinement failed (the error is raised again, so the derived run is closed as failed).

The plan that took the frame waits for the value of ITS run, writes the PONI file and
sets the detector; a replay of the run publishes the same documents and touches no file.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..analysis.xrd import pyfai_geometry
from ..analysis.xrd_calibration import PONI_PARAMETERS, calibrate_geometry, ring_widths
from ..schema.start import XRD_CALIBRATION
from .derived import AnalysisCallback


class XrdCalibrationCallback(AnalysisCallback):
    """Geometry refinement from calibrant frames; see the module docstring.

    refine, max_rings, passes, max_rms_deg, centre_search_px: as `calibrate_geometry`.
    """

    analysis = "xrd_calibration"
    techniques = (XRD_CALIBRATION,)

    def __init__(
        self,
        refine: list[str] | tuple[str, ...] = PONI_PARAMETERS,
        max_rings: int = 10,
        passes: int = 4,
        max_rms_deg: float = 0.02,
        centre_search_px: float = 100.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.refine = list(refine)
        self.max_rings = int(max_rings)
        self.passes = int(passes)
        self.max_rms_deg = float(max_rms_deg)
        self.centre_search_px = float(centre_search_px)
        self.live_signal("geometry", str, "")

    def parameters(self) -> dict[str, Any]:
        return {
            **super().parameters(),
            "refine": list(self.refine),
            "max_rings": self.max_rings,
            "passes": self.passes,
            "max_rms_deg": self.max_rms_deg,
            "centre_search_px": self.centre_search_px,
        }

    def open_run(self, start: dict[str, Any]) -> None:
        self.initial = pyfai_geometry(start["xrd_geometry"])
        self.calibrant = start["calibrant"]

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        message: dict[str, Any] = {"raw_uid": self.raw_start["uid"], "raw_seq_num": seq_num}
        try:
            result = calibrate_geometry(
                frame, self.initial, calibrant=self.calibrant, max_rings=self.max_rings,
                refine=tuple(self.refine), passes=self.passes, max_rms_deg=self.max_rms_deg,
                centre_search_px=self.centre_search_px,
            )
        except Exception as error:  # the plan waiting for this run learns why, then the run fails
            self.set_live("geometry", json.dumps({**message, "error": str(error)}))
            raise
        geometry = result.geometry
        config = json.loads(json.dumps(geometry.get_config()))
        self.derived.event("calibration", {
            "raw_seq_num": seq_num,
            "dist_m": geometry.dist, "poni1_m": geometry.poni1, "poni2_m": geometry.poni2,
            "rot1_rad": geometry.rot1, "rot2_rad": geometry.rot2, "rot3_rad": geometry.rot3,
            "rms_2theta_deg": result.rms_2theta_deg, "n_rings": result.n_rings, "n_points": result.n_points,
            "centre_shift_row_px": result.centre_shift_px[0], "centre_shift_col_px": result.centre_shift_px[1],
            "pyfai_config": json.dumps(config),
        })
        widths = {w.ring: w for w in ring_widths(frame, geometry, self.calibrant, tuple(r.ring for r in result.rings))}
        for ring in result.rings:
            width = widths.get(ring.ring)
            self.derived.event("rings", {
                "raw_seq_num": seq_num, "ring": ring.ring, **dict(zip("hkl", ring.hkl)), "d_A": ring.d_A,
                "two_theta_deg": ring.two_theta_deg, "n_points": ring.n_points,
                "rms_2theta_deg": ring.rms_2theta_deg, "contrast": ring.contrast,
                "fwhm_gaussian_deg": width.gaussian_fwhm_deg if width else math.nan,
                "fwhm_lorentzian_deg": width.lorentzian_fwhm_deg if width else math.nan,
            })
        self.set_live("geometry", json.dumps({**message, "pyfai_config": config, "rms_2theta_deg": result.rms_2theta_deg}))
