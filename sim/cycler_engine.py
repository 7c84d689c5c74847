"""One channel of a battery cycler (galvanostat) driving a coin cell of `CathodeParticle`s.

No devices, no EPICS: the physics behind `nanostrain.devices.cycler.SimCycler` and the test IOC
(`tests/iocs/cycler_ioc.py`). Units: time in s, current in mA (signed readbacks: > 0 =
charge = delithiation), charge in mAh, specific current in mA/g, specific capacity in
mAh/g, potential in V vs Li/Li+.

A channel runs one `CyclerStep` at a time:

* CC_CHARGE / CC_DISCHARGE: constant current I (mA) into the cell, i.e. i = I / m mA/g
  into the particle (m = active mass, default 4 mg/cm2 on a 14 mm disc = 6.16e-3 g);
  ends on the voltage limit in the direction of the current (v_max on charge, v_min on
  discharge: LIMIT_REACHED) or after ``duration_s`` (> 0: TIME_REACHED), whichever
  comes first.
* REST / OCV: open circuit for ``duration_s`` (TIME_REACHED). Both are the same physics
  here; OCV marks a rest whose voltage the plan records (GITT relaxation).

The step's charge is exactly Q = I t / 3600 (constant current over the step time t), so
``step_capacity_mAh`` and ``total_charge_mAh`` carry no integration error. The cell is
at open circuit whenever no step runs, and relaxes (the potential readback moves).
`advance` integrates in sub-steps of at most ``max_substep_mAh_g`` of charge and
``max_substep_s`` of time, checks the limits after each and returns early at the end
of a step. Until simulated time passes again, the readbacks hold the step's last sample
(potential and current at the limit), as a cycler's record ends; then the circuit is
open and the cell relaxes. `WallClock` carries the time not advanced into its next tick.

The channel logs a sample of `nanostrain.schema.cycler.CYCLER_LOG_FIELDS` (with the
wall time from ``clock``) just before a step starts from rest (the state it starts
from), when a step is stopped, on a fault and at the end of
every `advance` that a running step began, as a cycler's data log does; `log_readbacks` serves its newest
`LOG_LENGTH` samples and the count since the engine was made.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from nanostrain.schema.cycler import (
    CONSTANT_CURRENT_MODES,
    CYCLER_LOG_COLUMNS,
    CYCLER_LOG_FIELDS,
    LOG_LENGTH,
    MAX_RATE_MA_G,
    CyclerMode,
    CyclerState,
    CyclerStep,
)
from nanostrain.sim.cathode import CathodeParticle

__all__ = ["ACTIVE_MASS_G", "CyclerEngine", "WallClock"]

ACTIVE_MASS_G = 4e-3 * 1.54
"""Active mass of the reference coin cell: 4 mg/cm2 on a 14 mm disc (1.54 cm2), g."""

SECONDS_PER_HOUR = 3600.0

EMPTY_LI_FRACTION = 1e-9
"""Li fraction (of the mean, to 0 or from 1) below which the cathode counts as empty/full."""


class CyclerEngine:
    """A cycler channel connected to a coin cell whose cathode is ``particle``.

    particle: the cathode (stepped in place: other simulated instruments read it).
    active_mass_g: cathode active mass m, g; the particle sees i = I / m mA/g.
    max_rate_mA_g: safety maximum of the specific current, mA/g; the channel refuses
        steps above ``max_current_mA`` = max_rate_mA_g * m.
    max_substep_mAh_g, max_substep_s: largest integration sub-step in specific charge
        (mAh/g, sets how far past a voltage limit a step can end) and in time (s).
    """

    def __init__(
        self,
        particle: CathodeParticle,
        active_mass_g: float = ACTIVE_MASS_G,
        *,
        max_rate_mA_g: float = MAX_RATE_MA_G,
        max_substep_mAh_g: float = 0.25,
        max_substep_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (
            ("active_mass_g", active_mass_g),
            ("max_rate_mA_g", max_rate_mA_g),
            ("max_substep_mAh_g", max_substep_mAh_g),
            ("max_substep_s", max_substep_s),
        ):
            if not value > 0.0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.particle = particle
        self.active_mass_g = float(active_mass_g)
        self.max_current_mA = float(max_rate_mA_g) * self.active_mass_g
        self.max_substep_mAh_g = float(max_substep_mAh_g)
        self.max_substep_s = float(max_substep_s)
        self._time_s = 0.0
        self._step: CyclerStep | None = None
        self._state = CyclerState.IDLE
        self._message = "idle"
        self._step_time_s = 0.0
        self._step_index = 0
        self._cycle_index = 0
        self._last_cc_mode: CyclerMode | None = None
        self._charge_before_step_mAh = 0.0
        self._applied_mA = 0.0
        self._clock = clock
        self._log = np.empty((LOG_LENGTH, len(CYCLER_LOG_COLUMNS)))  # a ring: sample k in row k % LOG_LENGTH
        self.log_count = 0
        self.particle.relax(0.0)  # open circuit until a step starts

    # --- commands -------------------------------------------------------------------

    def start(self, step: CyclerStep) -> None:
        """Start ``step`` now (a running step is superseded).

        Raises ValueError, before anything changes, if the current exceeds
        ``max_current_mA``. A charge after a discharge starts a new cycle
        (`cycle_index` + 1).
        """
        if not isinstance(step, CyclerStep):
            raise TypeError(f"step must be a CyclerStep, got {type(step).__name__}")
        if step.current_mA > self.max_current_mA:
            raise ValueError(
                f"{step.current_mA:g} mA exceeds the channel's safety maximum "
                f"{self.max_current_mA:.4g} mA ({self.max_current_mA / self.active_mass_g:g} mA/g "
                f"x {self.active_mass_g:g} g)"
            )
        if self._state is not CyclerState.RUNNING:
            self._log_sample()  # the state the step starts from (a GITT pulse's relaxed potential)
        self._end_step()
        if step.mode is CyclerMode.CC_CHARGE and self._last_cc_mode is CyclerMode.CC_DISCHARGE:
            self._cycle_index += 1
        if step.mode in CONSTANT_CURRENT_MODES:
            self._last_cc_mode = step.mode
        self._step = step
        self._step_index += 1
        self._step_time_s = 0.0
        self._state = CyclerState.RUNNING
        self._message = f"step {self._step_index}: {step.mode.value} running"
        self._applied_mA = step.signed_current_mA
        self.particle.step(self._applied_mA / self.active_mass_g, 0.0)  # the potential under current
        self._check_limit()

    def start_setpoints(
        self, mode: CyclerMode | str, current_mA: float, v_min: float, v_max: float, duration_s: float
    ) -> None:
        """Start a step from setpoint values, as a channel's firmware does on its Start
        command: a refused step does not raise but leaves FAULT with the reason in
        `message`, for the client to read (see `CyclerStep` for the arguments)."""
        try:
            self.start(CyclerStep(mode, current_mA, v_min, v_max, duration_s))
        except ValueError as error:
            self.fault(str(error))

    def stop(self) -> None:
        """Stop the running step (IDLE; open circuit from the next `advance`); nothing
        happens if none runs."""
        if self._state is CyclerState.RUNNING:
            self._finish(CyclerState.IDLE, "stopped")
            self._log_sample()

    def fault(self, message: str) -> None:
        """Put the channel into FAULT with ``message`` (a refused command, a failure):
        any running step ends (open circuit from the next `advance`). The next `start`
        clears it."""
        self._end_step()
        self._state = CyclerState.FAULT
        self._message = message
        self._log_sample()

    def advance(self, dt_s: float) -> float:
        """Let ``dt_s`` seconds of simulated time pass; return the seconds advanced.

        The running step is integrated in sub-steps and ends on its voltage limit or its
        duration; the advance then returns early (the end-of-step state is readable),
        and the caller passes the rest of the time in its next call. With no step
        running the cell relaxes at open circuit for the whole ``dt_s``.
        """
        if not dt_s >= 0.0:
            raise ValueError(f"dt_s must be >= 0, got {dt_s}")
        remaining = float(dt_s)
        was_running = self._state is CyclerState.RUNNING
        while remaining > 0.0:
            running = self._state is CyclerState.RUNNING
            h = min(remaining, self._substep_s() if running else self.max_substep_s)
            if not running:
                self._applied_mA = 0.0
                self.particle.relax(h)
                self._time_s += h
                remaining -= h
                continue
            step = self._step
            h = min(h, self._time_to_empty_s())
            if h <= 0.0:
                full = "delithiated" if step.signed_current_mA > 0.0 else "lithiated"
                self.fault(f"step {self._step_index}: the cathode is fully {full} before the voltage limit")
                break
            reaches_duration = step.duration_s > 0.0 and h >= step.duration_s - self._step_time_s
            if reaches_duration:
                h = step.duration_s - self._step_time_s
            self.particle.step(step.signed_current_mA / self.active_mass_g, h)
            self._time_s += h
            remaining -= h
            self._step_time_s = step.duration_s if reaches_duration else self._step_time_s + h
            if self._check_limit():
                break
            if reaches_duration:
                self._finish(CyclerState.TIME_REACHED, f"duration {step.duration_s:g} s reached")
                break
        if was_running and dt_s > 0.0:
            self._log_sample()
        return float(dt_s) - remaining

    # --- integration helpers ---------------------------------------------------------

    def _substep_s(self) -> float:
        """Sub-step of the running step: max_substep_s, and max_substep_mAh_g of charge."""
        current_mA_g = abs(self._step.signed_current_mA) / self.active_mass_g
        if current_mA_g == 0.0:
            return self.max_substep_s
        return min(self.max_substep_s, self.max_substep_mAh_g * SECONDS_PER_HOUR / current_mA_g)

    def _time_to_empty_s(self) -> float:
        """Time until the running current would take the mean Li fraction out of [0, 1], s."""
        current_mA_g = self._step.signed_current_mA / self.active_mass_g
        if current_mA_g == 0.0:
            return math.inf
        room = self.particle.x_mean if current_mA_g > 0.0 else 1.0 - self.particle.x_mean
        if room <= EMPTY_LI_FRACTION:
            return 0.0
        return room * self.particle.specific_capacity_mAh_g * SECONDS_PER_HOUR / abs(current_mA_g)

    def _check_limit(self) -> bool:
        """End a CC step whose potential has reached the limit in its direction."""
        step, potential = self._step, self.particle.potential_V
        if step.mode is CyclerMode.CC_CHARGE and potential >= step.v_max:
            limit = f"v_max {step.v_max:g} V"
        elif step.mode is CyclerMode.CC_DISCHARGE and potential <= step.v_min:
            limit = f"v_min {step.v_min:g} V"
        else:
            return False
        self._finish(CyclerState.LIMIT_REACHED, f"{limit} reached")
        return True

    def _finish(self, state: CyclerState, reason: str) -> None:
        """End the running step with ``state``; its clock stops, its last sample stays."""
        self._end_step()
        self._state = state
        self._message = (
            f"step {self._step_index}: {self._step.mode.value} {reason} after {self._step_time_s:.1f} s"
        )

    def _end_step(self) -> None:
        """Book the running step's charge into the total (the step itself stays readable)."""
        if self._state is CyclerState.RUNNING:
            self._charge_before_step_mAh += self.step_capacity_mAh
            self._state = CyclerState.IDLE

    def _log_sample(self) -> None:
        readbacks = self.readbacks()
        readbacks["state"] = list(CyclerState).index(readbacks["state"])
        self._log[self.log_count % LOG_LENGTH] = (
            self.log_count, self._clock(), *(readbacks[field] for field in CYCLER_LOG_FIELDS))
        self.log_count += 1

    # --- readbacks ------------------------------------------------------------------

    @property
    def state(self) -> CyclerState:
        """RUNNING, or how the last step ended (IDLE if stopped or none yet; FAULT)."""
        return self._state

    @property
    def message(self) -> str:
        """What the channel is doing, how the last step ended, or why it is in FAULT."""
        return self._message

    @property
    def potential_V(self) -> float:
        """Cell potential, V vs Li/Li+ (with the overpotential while current flows)."""
        return self.particle.potential_V

    @property
    def current_mA(self) -> float:
        """Current of the last sample, mA (+ charge, - discharge, 0 at open circuit)."""
        return self._applied_mA

    @property
    def step_time_s(self) -> float:
        """Time since the running step started, or the duration of the last step, s."""
        return self._step_time_s

    @property
    def step_capacity_mAh(self) -> float:
        """Charge passed in the running (or last) step, I t / 3600, mAh (+ on charge)."""
        if self._step is None:
            return 0.0
        return self._step.signed_current_mA * self._step_time_s / SECONDS_PER_HOUR

    @property
    def specific_capacity_mAh_g(self) -> float:
        """`step_capacity_mAh` per gram of active mass, mAh/g."""
        return self.step_capacity_mAh / self.active_mass_g

    @property
    def total_charge_mAh(self) -> float:
        """Net charge passed since the engine was made, mAh (+ charge, - discharge)."""
        running = self.step_capacity_mAh if self._state is CyclerState.RUNNING else 0.0
        return self._charge_before_step_mAh + running

    @property
    def time_s(self) -> float:
        """Simulated time since the engine was made, s."""
        return self._time_s

    @property
    def step_index(self) -> int:
        """Steps started so far (the running or last step's number; 0 before the first)."""
        return self._step_index

    @property
    def cycle_index(self) -> int:
        """Cycle number: starts at 0 and increases on each charge step after a discharge."""
        return self._cycle_index

    def readbacks(self) -> dict[str, Any]:
        """The channel's readback values by device attribute name (the read-only keys of
        `nanostrain.schema.cycler.CYCLER_PVS`); ``state`` comes last, so a publisher that
        follows this order updates the values before the state that announces them."""
        return {
            "potential": self.potential_V,
            "current": self.current_mA,
            "step_capacity": self.step_capacity_mAh,
            "total_charge": self.total_charge_mAh,
            "step_time": self.step_time_s,
            "step_index": self.step_index,
            "cycle_index": self.cycle_index,
            "current_limit": self.max_current_mA,
            "message": self.message,
            "state": self.state,
        }


    def log_readbacks(self) -> dict[str, Any]:
        """The log readbacks by device attribute name (the keys of
        `nanostrain.schema.cycler.CYCLER_LOG_PVS`): ``log_samples``, the newest samples
        as rows of `CYCLER_LOG_COLUMNS` flattened (a float array), oldest first, and ``log_count`` last,
        so a publisher in this order updates the samples first."""
        held = min(self.log_count, LOG_LENGTH)
        rows = np.roll(self._log[:held], -(self.log_count % held if held else 0), axis=0)  # oldest first
        return {"log_samples": rows.ravel(), "log_count": self.log_count}


class WallClock:
    """Drives a `CyclerEngine` from the wall clock at ``time_scale`` simulated s per s.

    Each `tick` advances the engine by the wall time since the previous tick (or since
    the clock was made) times ``time_scale``; time not advanced because a step ended
    is carried into the next tick, so the simulated time stays wall x time_scale.
    ``now`` is the wall clock, s (monotonic).
    """

    def __init__(self, engine: CyclerEngine, now: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self._now = now
        self._last = now()
        self._pending_s = 0.0

    def tick(self, time_scale: float) -> None:
        """Advance the engine; ``time_scale`` (simulated s per wall s, >= 0) may change
        between ticks (0 freezes the simulated world)."""
        if not time_scale >= 0.0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        now = self._now()
        self._pending_s += (now - self._last) * time_scale
        self._last = now
        self._pending_s -= self.engine.advance(self._pending_s)
