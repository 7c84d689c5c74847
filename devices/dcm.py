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

import asyncio
import math
import time
from dataclasses import dataclass
from functools import cached_property

from ophyd_async.core import (
    AsyncStatus,
    FlyMotorInfo,
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
from ophyd_async.sim._motor import SimMotorMoveLogic

from nanostrain.analysis.units import HC_EV_A

__all__ = ["DCM_RANGE_EV", "SI111_D_A", "DcmEnergy", "EnergyFlyInfo", "SimBraggMotor", "bragg_angle_deg",
           "energy_from_bragg_eV"]

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


@dataclass(frozen=True)
class EnergyFlyInfo:
    """A continuous-energy move: from ``start_eV`` to ``stop_eV`` (eV, the DCM's calibrated
    scale) at a mean speed of ``velocity_eV_s`` (eV/s, > 0)."""

    start_eV: float
    stop_eV: float
    velocity_eV_s: float

    @property
    def duration_s(self) -> float:
        """Time of the constant-speed part of the move, s."""
        return abs(self.stop_eV - self.start_eV) / self.velocity_eV_s


#: Update period of the simulated Bragg readback while it moves, s (a motor record's
#: readback updates at 10-100 Hz; a fly sample of 0.05 s must see it move).
SIM_TICK_S = 0.002


def trapezoid_position(t: float, begin: float, end: float, speed: float, ramp_s: float) -> tuple[float, float]:
    """(position, total duration in s) at time ``t`` (s) of a move from ``begin`` to
    ``end`` at ``speed`` (units/s) with linear ramps of ``ramp_s`` (s), as a motor record
    moves (a triangle when the move is too short to reach ``speed``)."""
    distance = end - begin
    sign = math.copysign(1.0, distance)
    ramp_distance = 0.5 * speed * ramp_s
    if ramp_s <= 0:
        duration = abs(distance) / speed
        top, ramp = speed, 0.0
    elif 2 * ramp_distance >= abs(distance):
        top = math.sqrt(abs(distance) * speed / ramp_s)
        ramp = abs(distance) / top
        duration = 2 * ramp
    else:
        top, ramp = speed, ramp_s
        duration = 2 * ramp + (abs(distance) - 2 * ramp_distance) / speed
    t = min(max(t, 0.0), duration)
    if t < ramp:
        travelled = 0.5 * top / ramp * t * t
    elif t > duration - ramp:
        left = duration - t
        travelled = abs(distance) - (0.5 * top / ramp * left * left if ramp > 0 else 0.0)
    else:
        travelled = 0.5 * top * ramp + top * (t - ramp)
    return begin + sign * travelled, duration


class _SmoothSimMoveLogic(SimMotorMoveLogic):
    """ophyd-async's simulated move with the readback updated every `SIM_TICK_S` from the
    time elapsed (its own updates come at 10 Hz)."""

    async def _internal_sim_move(self, new_position: float) -> None:
        speed, old_position = await asyncio.gather(self.velocity.get_value(), self.readback.get_value())
        if old_position == new_position:
            return
        await self.setpoint.set(new_position)
        if speed == 0:
            self.readback_set(new_position)
            return
        ramp_s = abs(await self.acceleration_time.get_value())
        start = time.monotonic()
        while await self.setpoint.get_value() == new_position:  # stop() moves the setpoint to the readback
            position, duration = trapezoid_position(time.monotonic() - start, old_position, new_position,
                                                    abs(speed), ramp_s)
            if time.monotonic() - start >= duration:
                self.readback_set(new_position)
                return
            self.readback_set(position)
            await asyncio.sleep(SIM_TICK_S)


class SimBraggMotor(SimMotor):
    """The simulated DCM Bragg motor: instant steps (velocity 0) and, in a fly move, a
    trapezoidal motion in real time whose readback follows the elapsed time."""

    @cached_property
    def movable_logic(self) -> _SmoothSimMoveLogic:
        return _SmoothSimMoveLogic(readback=self.user_readback, readback_set=self._user_readback_set,
                                   setpoint=self.user_setpoint, velocity=self.velocity,
                                   acceleration_time=self.acceleration_time)


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

    bragg_prefix: the Bragg motor record's PV name (None: a simulated motor, `SimBraggMotor`,
    that steps instantly and flies in real time, parked at ``park_eV``).
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
            self.bragg = (SimBraggMotor(units="deg", initial_value=bragg_angle_deg(park_eV))
                          if bragg_prefix is None else Motor(bragg_prefix))
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

    @AsyncStatus.wrap
    async def prepare(self, value: EnergyFlyInfo) -> None:
        """Prepare a fly move over ``value`` (eV): check the range, move the Bragg motor to
        its run-up position and set its fly speed (`FlyMotorInfo`)."""
        if not value.velocity_eV_s > 0:
            raise ValueError(f"velocity_eV_s must be > 0, got {value.velocity_eV_s}")
        for energy in (value.start_eV, value.stop_eV):
            await self.movable_logic.check_move(energy)
        offset = await self.offset_eV.get_value()
        await self.bragg.prepare(FlyMotorInfo(start_position=bragg_angle_deg(value.start_eV - offset),
                                              end_position=bragg_angle_deg(value.stop_eV - offset),
                                              time_for_move=value.duration_s))

    @AsyncStatus.wrap
    async def kickoff(self) -> None:
        """Start the prepared fly move; done once the Bragg motor is at speed."""
        await self.bragg.kickoff()

    @AsyncStatus.wrap
    async def complete(self) -> None:
        """Done when the fly move has run down."""
        await self.bragg.complete()
