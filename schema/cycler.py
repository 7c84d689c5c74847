"""What a battery cycler channel and its clients agree on: modes, states, one step, the PVs.

Shared by the devices (`nanostrain.devices.cycler`: the EPICS class and its twin), the
simulated channel (`nanostrain.sim.cycler_engine`), the cycling plans and the test IOC, so
none of them imports another for its vocabulary. Units: current in mA (a magnitude; the
mode sets the sign: + charge = delithiation), potential in V vs Li/Li+, time in s,
specific current in mA/g. docs/cycler-pvs.md is the table of `CYCLER_PVS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ophyd_async.core import StrictEnum

__all__ = [
    "CONSTANT_CURRENT_MODES",
    "CYCLER_LOG_COLUMNS",
    "CYCLER_LOG_FIELDS",
    "CYCLER_LOG_PVS",
    "CYCLER_PVS",
    "LOG_LENGTH",
    "MAX_RATE_MA_G",
    "VOLTAGE_WINDOW_V",
    "CyclerMode",
    "CyclerPv",
    "CyclerState",
    "CyclerStep",
]

VOLTAGE_WINDOW_V = (2.0, 4.8)
"""Safe window of the cell, V vs Li/Li+: every voltage limit must lie inside it."""

MAX_RATE_MA_G = 1400.0
"""Safety maximum of the specific current, mA/g (~5C for ~275 mAh/g)."""


class CyclerMode(StrictEnum):
    """What a step does (the ``Mode`` record's choices, in this order)."""

    REST = "REST"
    CC_CHARGE = "CC_CHARGE"
    CC_DISCHARGE = "CC_DISCHARGE"
    OCV = "OCV"


class CyclerState(StrictEnum):
    """What the channel is doing, or how its last step ended (``State-RB`` choices)."""

    IDLE = "IDLE"
    """No step has run yet, or the last one was stopped."""
    RUNNING = "RUNNING"
    LIMIT_REACHED = "LIMIT_REACHED"
    """The last CC step ended on its voltage limit."""
    TIME_REACHED = "TIME_REACHED"
    """The last step ran for its duration."""
    FAULT = "FAULT"
    """A command was refused or the channel failed; the ``message`` readback says why."""


CONSTANT_CURRENT_MODES = (CyclerMode.CC_CHARGE, CyclerMode.CC_DISCHARGE)
"""The modes that drive a current (the others are open circuit)."""


@dataclass(frozen=True)
class CyclerStep:
    """One step of a cycler channel (validated on construction, ValueError if bad).

    mode: a `CyclerMode` (or its name). current_mA: current magnitude, mA (> 0 for the CC
    modes, 0 for REST/OCV; the mode sets the sign). v_min, v_max: voltage limits, V,
    inside `VOLTAGE_WINDOW_V`; a CC step ends on the limit in its direction.
    duration_s: step duration, s (0 = until the voltage limit; required for REST/OCV).
    """

    mode: CyclerMode
    current_mA: float = 0.0
    v_min: float = 2.7
    v_max: float = 4.5
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in CyclerMode.__members__:
            raise ValueError(f"mode must be one of {list(CyclerMode.__members__)}, got {self.mode!r}")
        object.__setattr__(self, "mode", CyclerMode(self.mode))
        for field in ("current_mA", "v_min", "v_max", "duration_s"):
            if not math.isfinite(getattr(self, field)):
                raise ValueError(f"{field} must be a finite number, got {getattr(self, field)}")
        if self.current_mA < 0.0:
            raise ValueError(
                f"current_mA is a magnitude (>= 0; the mode sets the direction), got {self.current_mA}"
            )
        low, high = VOLTAGE_WINDOW_V
        for field in ("v_min", "v_max"):
            if not low <= getattr(self, field) <= high:
                raise ValueError(f"{field} = {getattr(self, field)} V is outside the cell's safe window {low}-{high} V")
        if self.v_min >= self.v_max:
            raise ValueError(f"v_min ({self.v_min} V) must be below v_max ({self.v_max} V)")
        if self.duration_s < 0.0:
            raise ValueError(f"duration_s must be >= 0 (0 = until the voltage limit), got {self.duration_s}")
        if self.mode in CONSTANT_CURRENT_MODES and self.current_mA == 0.0:
            raise ValueError(f"a {self.mode.value} step needs a current > 0 mA")
        if self.mode not in CONSTANT_CURRENT_MODES:
            if self.current_mA != 0.0:
                raise ValueError(f"a {self.mode.value} step carries no current, got {self.current_mA} mA")
            if self.duration_s == 0.0:
                raise ValueError(f"a {self.mode.value} step needs a duration_s > 0")

    @property
    def signed_current_mA(self) -> float:
        """The current the step drives, mA: +I on charge, -I on discharge, 0 at rest."""
        sign = {CyclerMode.CC_CHARGE: 1.0, CyclerMode.CC_DISCHARGE: -1.0}.get(self.mode, 0.0)
        return sign * self.current_mA


@dataclass(frozen=True)
class CyclerPv:
    """One record of the cycler's Channel Access interface, ``<prefix><suffix>``.

    datatype: value type (float, int, bool, str or an enum of the record's choices);
    initial: value at IOC start (and of the soft twin); units, precision: EGU and PREC
    of numeric records; writable: an output record (setpoint or command).
    """

    suffix: str
    datatype: type
    initial: Any
    units: str | None = None
    precision: int | None = None
    writable: bool = False
    description: str = ""
    length: int = 0


#: The PV interface, by device attribute name (docs/cycler-pvs.md is its table).
CYCLER_PVS: Mapping[str, CyclerPv] = MappingProxyType({
    # setpoints of the next step and the commands
    "mode": CyclerPv("Mode", CyclerMode, CyclerMode.REST, writable=True, description="mode of the next step"),
    "current_setpoint": CyclerPv(
        "Current-SP", float, 0.0, "mA", 4, writable=True,
        description="current magnitude of the next step (>= 0; the mode sets the sign)"),
    "voltage_max": CyclerPv(
        "VoltageMax-SP", float, 4.5, "V", 4, writable=True,
        description="upper voltage limit (ends a charge), 2.0-4.8 V"),
    "voltage_min": CyclerPv(
        "VoltageMin-SP", float, 2.7, "V", 4, writable=True,
        description="lower voltage limit (ends a discharge), 2.0-4.8 V"),
    "duration": CyclerPv(
        "Duration-SP", float, 0.0, "s", 1, writable=True,
        description="step duration, 0 = until the voltage limit (required for REST/OCV)"),
    "start_step": CyclerPv(
        "Start", bool, False, writable=True,
        description="busy: a put of 1 starts a step from the setpoints and, put with callback, "
                    "completes when the step ends; reads 1 while it runs"),
    "stop_step": CyclerPv("Stop", bool, False, writable=True, description="a put of 1 stops the running step"),
    # readbacks
    "potential": CyclerPv("Potential-RB", float, 0.0, "V", 4, description="cell potential vs Li/Li+"),
    "current": CyclerPv("Current-RB", float, 0.0, "mA", 4, description="current, + charge, - discharge"),
    "step_capacity": CyclerPv(
        "StepCapacity-RB", float, 0.0, "mAh", 6,
        description="charge passed in the running (or last) step, + charge"),
    "total_charge": CyclerPv(
        "TotalCharge-RB", float, 0.0, "mAh", 6,
        description="net charge passed since the channel started, + charge"),
    "step_time": CyclerPv(
        "StepTime-RB", float, 0.0, "s", 1,
        description="time since the running step started (the last step's duration once it ended)"),
    "step_index": CyclerPv("Step-RB", int, 0, "", description="steps started so far"),
    "cycle_index": CyclerPv(
        "Cycle-RB", int, 0, "", description="cycle number, from 0; + 1 on each charge after a discharge"),
    "state": CyclerPv("State-RB", CyclerState, CyclerState.IDLE, description="channel state"),
    "current_limit": CyclerPv(
        "CurrentMax-RB", float, 0.0, "mA", 4, description="safety maximum of the current"),
    "message": CyclerPv(
        "Message-RB", str, "", description="what the channel does, how the last step ended, or why it faulted"),
})


LOG_LENGTH = 4096
"""Samples the log readback holds: the channel's newest, oldest first."""

CYCLER_LOG_FIELDS = (
    "potential", "current", "step_capacity", "total_charge", "step_time", "step_index", "cycle_index", "state",
)
"""The readbacks the channel logs at every sample (a `CYCLER_PVS` entry each)."""

CYCLER_LOG_COLUMNS = ("index", "time", *CYCLER_LOG_FIELDS)
"""One row of the log readback: the sample's number in the log (0 = the first since the
channel started), when it was taken (POSIX s), then `CYCLER_LOG_FIELDS` (``state`` as
the index of its `CyclerState`), every value a float."""

#: The channel's data log, read back in one waveform (so one read is one consistent
#: snapshot): the newest `LOG_LENGTH` samples as rows of `CYCLER_LOG_COLUMNS`, oldest
#: first, flattened; and the number of samples logged since the channel started. A client
#: that was away (a beam dump, a paused plan) reads what it missed. docs/cycler-pvs.md.
CYCLER_LOG_PVS: Mapping[str, CyclerPv] = MappingProxyType({
    "log_samples": CyclerPv(
        "Log:Samples-RB", float, (), length=LOG_LENGTH * len(CYCLER_LOG_COLUMNS),
        description="the newest logged samples, rows of CYCLER_LOG_COLUMNS flattened, oldest first"),
    "log_count": CyclerPv(
        "Log:Count-RB", int, 0, "", description="samples logged since the channel started (updated last)"),
})
