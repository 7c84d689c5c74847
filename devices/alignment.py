"""A simulated alignment bench: a sample stage and a camera that sees a beam spot.

The spot sits on camera column ``centre_col + x_mm * pixels_per_mm`` when the stage is at
``x_mm``; its brightness follows the beam monitor's flux. This is what a beamline scientist
does first (find the beam, align the sample), and it gives the end-to-end tests a
known answer: the centroid the live analysis finds must follow the stage.
"""

from __future__ import annotations

import numpy as np
from ophyd_async.core import PathProvider
from ophyd_async.sim import SimMotor

from .beam import SimBeamMonitor
from .sim_area_detector import SimAreaDetector


class BeamSpotRenderer:
    """Gaussian spot (sigma ``spot_px``) on a flat background, Poisson noise.

    counts(r, c) ~ Poisson(exposure * (peak_rate * exp(-((r-r0)^2 + (c-c0)^2) / (2 s^2)) + bg))
    with c0 = centre_col + x_mm * pixels_per_mm and peak_rate scaled by flux / nominal.
    """

    def __init__(
        self,
        stage: SimMotor,
        monitor: SimBeamMonitor,
        shape: tuple[int, int] = (64, 96),
        pixels_per_mm: float = 20.0,
        spot_px: float = 3.0,
        peak_rate: float = 2e4,
        background_rate: float = 50.0,
        seed: int = 1,
    ):
        self.stage, self.monitor, self.shape = stage, monitor, shape
        self.pixels_per_mm, self.spot_px = pixels_per_mm, spot_px
        self.peak_rate, self.background_rate = peak_rate, background_rate
        self._rng = np.random.default_rng(seed)
        self._rows, self._cols = np.indices(shape, dtype=np.float64)

    def spot_col(self, x_mm: float) -> float:
        return self.shape[1] / 2 + x_mm * self.pixels_per_mm

    async def __call__(self, exposure_s: float) -> np.ndarray:
        x_mm = await self.stage.user_readback.get_value()
        scale = self.monitor.expected_flux() / self.monitor.nominal_flux
        r0, c0 = self.shape[0] / 2, self.spot_col(x_mm)
        rate = self.peak_rate * scale * np.exp(
            -((self._rows - r0) ** 2 + (self._cols - c0) ** 2) / (2 * self.spot_px**2)
        ) + self.background_rate
        return self._rng.poisson(rate * exposure_s).astype(np.uint32)


def make_alignment_bench(path_provider: PathProvider) -> dict:
    """The simulated stage ``sx``, beam monitor ``i0`` (ophyd v1) and camera ``cam``."""
    stage = SimMotor(name="sx", instant=True)
    monitor = SimBeamMonitor(name="i0")
    renderer = BeamSpotRenderer(stage, monitor)
    cam = SimAreaDetector(path_provider, renderer, renderer.shape, dtype="uint32", name="cam")
    return {"sx": stage, "i0": monitor, "cam": cam}
