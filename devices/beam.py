"""The beam: storage-ring current, the beamline shutter, beam monitors (incident flux, I0).

What suspenders watch (`nanostrain.plans.suspenders`): the ring current (a beam dump
takes it to 0 mA) and the shutter's open status. Each has an EPICS class and a
simulated twin with the same signals, so a plan or a suspender cannot tell them apart:

* `EpicsRingCurrent` / `SimRingCurrent`: ``current`` (mA, hinted).
* `EpicsShutter` / `SimShutter`: ``open_status`` (bool, True = open, hinted).

The twins are driven by the simulation: `SimRingCurrent.dump` / `refill` and
`SimShutter.close` / `open` rehearse a beam dump or a closed hutch, and a
`SimBeamMonitor` given them as ``sources`` sees no flux while either cuts the beam (so
simulated detectors that read it see no beam either).

`SimBeamMonitor` is an ophyd (v1) device, as many beamlines' monitors still are; plans
read it alongside ophyd-async devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from ophyd import Component, Device
from ophyd.sim import SynSignal
from ophyd_async.core import StandardReadable, StandardReadableFormat, soft_signal_r_and_setter
from ophyd_async.epics.core import epics_signal_r

__all__ = ["EpicsRingCurrent", "EpicsShutter", "SimBeamMonitor", "SimRingCurrent", "SimShutter"]

#: Stored current of the simulated ring, mA.
SIM_RING_CURRENT_MA = 400.0


class BeamSource(Protocol):
    """A simulated part of the beam path that can cut the beam."""

    @property
    def delivers_beam(self) -> bool: ...


class EpicsRingCurrent(StandardReadable):
    """The storage ring's stored current over Channel Access: ``current`` (mA) from the
    PV ``pv`` (e.g. ``"SR:OPS-BI{DCCT:1}I:Real-I"``)."""

    def __init__(self, pv: str, name: str = "") -> None:
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.current = epics_signal_r(float, pv)
        super().__init__(name=name)


class SimRingCurrent(StandardReadable):
    """A simulated storage ring: ``current`` is ``nominal_mA`` until `dump`, 0 mA until
    `refill`. Call both on the RunEngine's event loop (where suspenders listen)."""

    def __init__(self, nominal_mA: float = SIM_RING_CURRENT_MA, name: str = "") -> None:
        if not nominal_mA > 0.0:
            raise ValueError(f"nominal_mA must be positive, got {nominal_mA}")
        self.nominal_mA = nominal_mA
        self._current_mA = nominal_mA
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.current, self._set_current = soft_signal_r_and_setter(float, nominal_mA, units="mA", precision=2)
        super().__init__(name=name)

    @property
    def delivers_beam(self) -> bool:
        """Whether electrons are stored (the current is above 0 mA)."""
        return self._current_mA > 0.0

    def dump(self) -> None:
        """Lose the stored beam: the current drops to 0 mA."""
        self._current_mA = 0.0
        self._set_current(0.0)

    def refill(self) -> None:
        """Inject again: the current is back at ``nominal_mA``."""
        self._current_mA = self.nominal_mA
        self._set_current(self.nominal_mA)


class EpicsShutter(StandardReadable):
    """A beamline shutter's status over Channel Access: ``open_status`` (True = open)
    from the binary PV ``pv`` (e.g. ``"XF:17BM-PPS{Sh:FE}Pos-Sts"``, ONAM = open)."""

    def __init__(self, pv: str, name: str = "") -> None:
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.open_status = epics_signal_r(bool, pv)
        super().__init__(name=name)


class SimShutter(StandardReadable):
    """A simulated shutter: ``open_status`` True until `close`, again after `open`.
    Call both on the RunEngine's event loop."""

    def __init__(self, name: str = "") -> None:
        self._open = True
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.open_status, self._set_open = soft_signal_r_and_setter(bool, True)
        super().__init__(name=name)

    @property
    def delivers_beam(self) -> bool:
        """Whether the shutter is open."""
        return self._open

    def close(self) -> None:
        self._open = False
        self._set_open(False)

    def open(self) -> None:
        self._open = True
        self._set_open(True)


class SimBeamMonitor(Device):
    """Simulated ion chamber: ``flux`` in photons/s, Poisson-noisy around ``nominal_flux``
    while ``beam_on`` and every one of ``sources`` (a `SimRingCurrent`, a `SimShutter`)
    delivers beam, else 0."""

    flux = Component(SynSignal, kind="hinted")

    def __init__(self, *args, nominal_flux: float = 1e9, seed: int | None = 0,
                 sources: Sequence[BeamSource] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.nominal_flux = nominal_flux
        self.beam_on = True
        self.sources = list(sources)
        self._rng = np.random.default_rng(seed)
        self.flux._func = self._reading

    def trigger(self):
        """Take a new reading (a v1 Device does not trigger its components by itself)."""
        return self.flux.trigger()

    def expected_flux(self) -> float:
        """The flux the simulated source delivers now (photons/s), without counting noise."""
        delivered = self.beam_on and all(source.delivers_beam for source in self.sources)
        return self.nominal_flux if delivered else 0.0

    def _reading(self) -> float:
        # Poisson statistics of ~1e6 counted photons scaled to the source's flux.
        return float(self._rng.poisson(1e6) * self.expected_flux() / 1e6)
