"""The beam spot an alignment camera sees: a Gaussian on a flat background, Poisson noise.

Forward model of the simulated alignment bench (`nanostrain.devices.alignment`): the spot
sits on camera column c0 = cols / 2 + x_mm * pixels_per_mm when the sample stage is at
x_mm (row r0 = rows / 2), and its brightness follows the beam's flux:

    counts(r, c) ~ Poisson(t * (peak_rate * f * exp(-((r - r0)^2 + (c - c0)^2) / (2 s^2)) + bg))

with t the exposure (s), f the flux as a fraction of nominal, s = ``spot_px`` (px), rates
in counts/s per pixel.
"""

from __future__ import annotations

import numpy as np


class BeamSpot:
    """Frames of the beam spot (see the module docstring); ``seed`` fixes the noise."""

    def __init__(
        self,
        shape: tuple[int, int] = (64, 96),
        pixels_per_mm: float = 20.0,
        spot_px: float = 3.0,
        peak_rate: float = 2e4,
        background_rate: float = 50.0,
        seed: int = 1,
    ) -> None:
        self.shape = shape
        self.pixels_per_mm, self.spot_px = pixels_per_mm, spot_px
        self.peak_rate, self.background_rate = peak_rate, background_rate
        self._rng = np.random.default_rng(seed)
        self._rows, self._cols = np.indices(shape, dtype=np.float64)

    def spot_col(self, x_mm: float) -> float:
        """Camera column of the spot centre with the stage at ``x_mm``, px."""
        return self.shape[1] / 2 + x_mm * self.pixels_per_mm

    def frame(self, x_mm: float, flux_fraction: float, exposure_s: float) -> np.ndarray:
        """One noisy frame (uint32 counts) with the stage at ``x_mm`` and the beam at
        ``flux_fraction`` of its nominal flux, exposed ``exposure_s`` seconds."""
        r0, c0 = self.shape[0] / 2, self.spot_col(x_mm)
        rate = self.peak_rate * flux_fraction * np.exp(
            -((self._rows - r0) ** 2 + (self._cols - c0) ** 2) / (2 * self.spot_px**2)
        ) + self.background_rate
        return self._rng.poisson(rate * exposure_s).astype(np.uint32)
