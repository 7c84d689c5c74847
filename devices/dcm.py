"""The double-crystal monochromator (DCM) as an energy axis of its own.

`DcmEnergy` is the photon energy (eV) over the DCM's Bragg motor alone, for techniques
whose optics do not follow the energy (XAS in transmission, `devices.xas`). The TXM's
energy (`devices.txm.TxmEnergy`) moves the same Bragg axis together with the zone plate
and the camera; both use the Si(111) relations here.

DCM Si(111): E = hc / (2 d sin theta), hc = 12398.42 eV A, d = 3.13560 A. The readback
is the energy of the Bragg readback plus ``offset_eV``, the energy calibration (true
energy minus the DCM's own scale), as a reference-foil edge measures it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from ophyd_async.core import (
    MovableLogic,
    SignalR,
    StandardMovable,
    StandardReadable,
    TimeoutCalculator,
    derived_signal_r,
    soft_signal_rw,
)
from ophyd_async.core import StandardReadableFormat as Format
from ophyd_async.epics.motor import Motor
from ophyd_async.sim import SimMotor

from nanostrain.analysis.units import HC_EV_A

__all__ = ["DCM_RANGE_EV", "SI111_D_A", "DcmEnergy", "bragg_angle_deg", "energy_from_bragg_eV"]

#: Si(111) lattice-plane spacing, angstrom.
SI111_D_A = 3.13560
#: DCM energy range, eV.
DCM_RANGE_EV = (5000.0, 11000.0)


def bragg_angle_deg(energy_eV: float, d_A: float = SI111_D_A) -> float:
    """theta = asin(hc / (2 d E)), degrees."""
    return math.degrees(math.asin(HC_EV_A / (2.0 * d_A * energy_eV)))


def energy_from_bragg_eV(theta_deg: float, d_A: float = SI111_D_A) -> float:
    """E = hc / (2 d sin theta), eV (NaN for theta <= 0)."""
    sine = math.sin(math.radians(theta_deg))
    return HC_EV_A / (2.0 * d_A * sine) if sine > 0 else math.nan


def calibrated_energy_eV(bragg_deg: float, offset_eV: float) -> float:
    """The energy readback: E(theta) + offset, eV."""
    return energy_from_bragg_eV(bragg_deg) + offset_eV


@dataclass
class _DcmLogic(MovableLogic[float]):
    """Moves the Bragg motor to the angle of E - offset (the DCM's own energy scale)."""

    bragg: Motor | SimMotor
    offset_eV: SignalR[float]
    limits_eV: tuple[float, float]

    async def check_move(self, new_position: float) -> None:
        low, high = self.limits_eV
        if not low <= new_position <= high:
            raise ValueError(f"energy {new_position} eV is outside the DCM range {low}-{high} eV")

    async def move(self, new_position: float, timeout: TimeoutCalculator) -> None:
        await self.setpoint.set(new_position)
        offset = await self.offset_eV.get_value()
        await self.bragg.set(bragg_angle_deg(new_position - offset))

    async def stop(self) -> None:
        await self.bragg.stop()


class DcmEnergy(StandardReadable, StandardMovable[float]):
    """Photon energy (eV) of a Si(111) DCM: ``set(E)`` moves the Bragg motor ``bragg``
    (degrees) to asin(hc / (2 d (E - offset))); the readback (named like the device) is
    E(theta_readback) + offset. ``offset_eV`` (configuration, eV) is the energy
    calibration. ``limits_eV``: the DCM range, checked before any motion.

    bragg_prefix: the Bragg motor record's PV name (None: a simulated motor that moves
    instantly, parked at ``park_eV``).
    """

    def __init__(
        self,
        bragg_prefix: str | None = None,
        limits_eV: tuple[float, float] = DCM_RANGE_EV,
        park_eV: float = 8350.0,
        name: str = "",
    ) -> None:
        self.limits_eV = (float(limits_eV[0]), float(limits_eV[1]))
        with self.add_children_as_readables():
            self.bragg = (SimMotor(units="deg", initial_value=bragg_angle_deg(park_eV)) if bragg_prefix is None
                          else Motor(bragg_prefix))
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.offset_eV = soft_signal_rw(float, 0.0, units="eV")
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.readback = derived_signal_r(
                calibrated_energy_eV, derived_units="eV", bragg_deg=self.bragg.user_readback, offset_eV=self.offset_eV
            )
        self.setpoint = soft_signal_rw(float, 0.0, units="eV")
        super().__init__(name=name)

    @cached_property
    def movable_logic(self) -> _DcmLogic:
        return _DcmLogic(setpoint=self.setpoint, readback=self.readback, bragg=self.bragg,
                         offset_eV=self.offset_eV, limits_eV=self.limits_eV)
