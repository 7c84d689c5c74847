"""Beam monitors (incident flux, I0).

`SimBeamMonitor` is an ophyd (v1) device, as many beamlines' monitors still are; plans
read it alongside ophyd-async devices. Its beam can be switched off to rehearse beam
dumps (suspenders, gaps in in-situ data).
"""

from __future__ import annotations

import numpy as np
from ophyd import Component, Device
from ophyd.sim import SynSignal


class SimBeamMonitor(Device):
    """Simulated ion chamber: ``flux`` in photons/s, Poisson-noisy around ``nominal_flux``."""

    flux = Component(SynSignal, kind="hinted")

    def __init__(self, *args, nominal_flux: float = 1e9, seed: int | None = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.nominal_flux = nominal_flux
        self.beam_on = True
        self._rng = np.random.default_rng(seed)
        self.flux._func = self._reading

    def trigger(self):
        """Take a new reading (a v1 Device does not trigger its components by itself)."""
        return self.flux.trigger()

    def expected_flux(self) -> float:
        """The flux the simulated source delivers now (photons/s), without counting noise."""
        return self.nominal_flux if self.beam_on else 0.0

    def _reading(self) -> float:
        # Poisson statistics of ~1e6 counted photons scaled to the source's flux.
        return float(self._rng.poisson(1e6) * self.expected_flux() / 1e6)
