"""A simulated alignment bench: a sample stage and a camera that sees a beam spot.

The camera shows `nanostrain.sim.beam_spot.BeamSpot` for the stage's position and the
beam monitor's flux: the spot sits on camera column ``cols / 2 + x_mm * pixels_per_mm``
when the stage is at ``x_mm``. This is what a beamline scientist does first (find the
beam, align the sample), and it gives the end-to-end tests a known answer: the centroid
the live analysis finds must follow the stage. The simulator is imported only when a
bench is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from ophyd_async.core import PathProvider
from ophyd_async.sim import SimMotor

from .beam import SimBeamMonitor
from .sim_area_detector import SimAreaDetector

if TYPE_CHECKING:
    from nanostrain.sim.beam_spot import BeamSpot


class _BenchCamera:
    """The camera's renderer: the spot for the stage's position and the monitor's flux now."""

    def __init__(self, spot: BeamSpot, stage: SimMotor, monitor: SimBeamMonitor) -> None:
        self.spot, self.stage, self.monitor = spot, stage, monitor

    async def __call__(self, exposure_s: float) -> np.ndarray:
        x_mm = await self.stage.user_readback.get_value()
        flux_fraction = self.monitor.expected_flux() / self.monitor.nominal_flux
        return self.spot.frame(x_mm, flux_fraction, exposure_s)


def make_alignment_bench(path_provider: PathProvider) -> dict:
    """The simulated stage ``sx``, beam monitor ``i0`` (ophyd v1) and camera ``cam``."""
    from nanostrain.sim.beam_spot import BeamSpot

    stage = SimMotor(name="sx", instant=True)
    monitor = SimBeamMonitor(name="i0")
    spot = BeamSpot()
    cam = SimAreaDetector(path_provider, _BenchCamera(spot, stage, monitor), spot.shape, dtype="uint32", name="cam")
    return {"sx": stage, "i0": monitor, "cam": cam}
