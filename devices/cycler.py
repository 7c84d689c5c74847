"""Battery cycler channel (galvanostat): the EPICS class and its simulated twin.

Both are a `Cycler`: the same signals under the same names, the same ``set(step)`` /
``stop()``, so a plan cannot tell them apart.

* Readings (``read()``): ``potential`` (V vs Li/Li+, hinted), ``current`` (mA, + charge),
  ``step_capacity`` and ``total_charge`` (mAh, + charge), ``step_time`` (s),
  ``step_index``, ``cycle_index``, ``state`` (`CyclerState`).
* Configuration: the setpoints of the last step, ``mode``, ``current_setpoint`` (mA,
  magnitude), ``voltage_min`` and ``voltage_max`` (V), ``duration`` (s, 0 = until the
  voltage limit), and the channel's safety maximum ``current_limit`` (mA).
* ``message``: what the channel is doing, how its last step ended, or why it faulted.
* ``mounted_sample`` (configuration): the coin cell on the channel, a
  `nanostrain.schema.sample.SampleRecord` as JSON (`nanostrain.devices.sample`); the
  twin mounts the cell it describes (refused while a step runs).
* ``set(step)`` (bluesky `Movable`): refuses a bad step before anything moves, writes
  the setpoints, starts the step and completes when it ends (state LIMIT_REACHED or
  TIME_REACHED); it fails on FAULT, or when the step is stopped (except by
  ``stop(success=True)``). Watchers see the potential against the voltage limit, or the
  step time against the duration.
* The data log (`CYCLER_LOG_PVS`: ``log_samples``, ``log_count``): the channel's newest
  logged samples; `CyclerLog` reads them as one reading per sample, so a plan that was
  paused or suspended records every sample taken meanwhile.
* ``unattended``: the channel as a plan sets it to run a step through pauses and
  suspensions (`UnattendedChannel`: the RunEngine stops what a plan set, except this).

`EpicsCycler` talks to the Channel Access interface `nanostrain.schema.cycler.CYCLER_PVS`
(documented in docs/cycler-pvs.md; served for tests by tests/iocs/cycler_ioc.py).
`SimCycler` drives a `nanostrain.sim.cycler_engine.CyclerEngine` from a background task,
``time_scale`` simulated seconds per wall second (default 3600: one wall second is one
simulated hour). Modes, states and steps are the neutral `nanostrain.schema.cycler`
types; importing this module (and using `EpicsCycler`) loads nothing of
`nanostrain.sim`: only a connected `SimCycler` imports the simulator's clock.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from abc import abstractmethod
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bluesky.protocols import Checkable, Movable, Stoppable
from ophyd_async.core import (
    DEFAULT_TIMEOUT,
    Array1D,
    AsyncStatus,
    DeviceMock,
    SignalR,
    SignalRW,
    StandardReadable,
    StandardReadableFormat,
    WatchableAsyncStatus,
    WatcherUpdate,
    observe_value,
    soft_signal_r_and_setter,
    soft_signal_rw,
    wait_for_value,
)
from ophyd_async.epics.core import epics_signal_r, epics_signal_rw, epics_triggerable_command

from nanostrain.schema.cycler import (
    CYCLER_LOG_COLUMNS,
    CYCLER_LOG_FIELDS,
    CYCLER_LOG_PVS,
    LOG_LENGTH,
    CYCLER_PVS,
    CyclerMode,
    CyclerPv,
    CyclerState,
    CyclerStep,
)
from nanostrain.schema.sample import SampleRecord

from .sample import mounted_sample_signal, particle_record

if TYPE_CHECKING:  # the simulator is imported only where a twin runs (`SimCycler.connect`)
    from nanostrain.sim.cathode import CathodeParticle
    from nanostrain.sim.cycler_engine import CyclerEngine, WallClock

PROGRESS_INTERVAL_S = 0.2
"""Least time between two progress updates of a running step (the last one always goes):
blueapi publishes each update on its message bus, and a simulated channel or a fast
potential PV would otherwise send hundreds a second."""

__all__ = [
    "Cycler",
    "CyclerFaultError",
    "CyclerLog",
    "CyclerLogOverrunError",
    "CyclerStoppedError",
    "EpicsCycler",
    "SimCycler",
    "UnattendedChannel",
]


class CyclerFaultError(RuntimeError):
    """The channel refused a step or failed while running it."""


class CyclerStoppedError(RuntimeError):
    """The running step was stopped (`Cycler.stop` without ``success``)."""


class _SignalFactory(Protocol):
    """Makes the signal of a `CYCLER_PVS` entry for one kind of `Cycler`."""

    def r(self, attr: str) -> SignalR: ...

    def rw(self, attr: str) -> SignalRW: ...


class Cycler(StandardReadable, Movable[CyclerStep], Checkable[CyclerStep], Stoppable):
    """What every cycler channel offers (see the module docstring); plans type against it.

    Subclasses supply the signals (``signals``) and two actions: `_run_step` (start a
    step from the setpoints, return when it has ended) and `_stop_channel`.
    """

    def __init__(
        self,
        signals: _SignalFactory,
        name: str = "",
        mount: Callable[[SampleRecord], Any] | None = None,
        mounted: Callable[[], SampleRecord | None] | None = None,
    ) -> None:
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.potential = signals.r("potential")
        with self.add_children_as_readables():
            self.current = signals.r("current")
            self.step_capacity = signals.r("step_capacity")
            self.total_charge = signals.r("total_charge")
            self.step_time = signals.r("step_time")
            self.step_index = signals.r("step_index")
            self.cycle_index = signals.r("cycle_index")
            self.state = signals.r("state")
        with self.add_children_as_readables(StandardReadableFormat.CONFIG_SIGNAL):
            self.mode = signals.rw("mode")
            self.current_setpoint = signals.rw("current_setpoint")
            self.voltage_min = signals.rw("voltage_min")
            self.voltage_max = signals.rw("voltage_max")
            self.duration = signals.rw("duration")
            self.current_limit = signals.r("current_limit")
            self.mounted_sample = mounted_sample_signal(mount, mounted)
        self.message = signals.r("message")
        # the channel's data log (`CYCLER_LOG_PVS`), read by `CyclerLog`, not by read()
        for attr in CYCLER_LOG_PVS:
            setattr(self, attr, signals.r(attr))
        self._stop_success = False
        super().__init__(name=name)

    @abstractmethod
    async def _run_step(self) -> None:
        """Start a step from the setpoints; return once the channel has ended it."""

    @abstractmethod
    async def _stop_channel(self) -> None:
        """Stop the running step."""

    async def check_value(self, step: CyclerStep) -> None:
        """Raise (TypeError, ValueError, RuntimeError) if the channel cannot run ``step``
        now: not a `CyclerStep`, current above ``current_limit``, a step running."""
        if not isinstance(step, CyclerStep):
            raise TypeError(f"{self.name}: set() takes a CyclerStep, got {type(step).__name__}")
        limit, state = await asyncio.gather(self.current_limit.get_value(), self.state.get_value())
        if step.current_mA > limit:
            raise ValueError(
                f"{self.name}: {step.current_mA:g} mA exceeds the channel's safety maximum {limit:g} mA"
            )
        if state == CyclerState.RUNNING:
            raise RuntimeError(f"{self.name}: a step is running; stop() it before starting another")

    @WatchableAsyncStatus.wrap
    async def set(self, value: CyclerStep):
        """Run one step: check it, write the setpoints, start, finish when it ends."""
        await self.check_value(value)
        self._stop_success = False
        await asyncio.gather(
            self.mode.set(value.mode),
            self.current_setpoint.set(value.current_mA),
            self.voltage_min.set(value.v_min),
            self.voltage_max.set(value.v_max),
            self.duration.set(value.duration_s),
        )
        if value.duration_s > 0.0:
            progress, initial, target, unit = self.step_time, 0.0, value.duration_s, "s"
        else:
            charging = value.mode == CyclerMode.CC_CHARGE
            progress, initial, target, unit = self.potential, None, value.v_max if charging else value.v_min, "V"
        running = AsyncStatus(self._run_step())
        update, sent = None, -math.inf
        async for current in observe_value(progress, done_status=running):
            initial = current if initial is None else initial
            update = WatcherUpdate(current=current, initial=initial, target=target, name=self.name, unit=unit)
            if time.monotonic() - sent >= PROGRESS_INTERVAL_S:
                sent = time.monotonic()
                yield update
                update = None
        if update is not None:  # the last value always goes out
            yield update
        await wait_for_value(self.state, lambda state: state != CyclerState.RUNNING, timeout=DEFAULT_TIMEOUT)
        state = await self.state.get_value()
        if state == CyclerState.FAULT:
            raise CyclerFaultError(f"{self.name}: {await self.message.get_value()}")
        if state == CyclerState.IDLE and not self._stop_success:
            raise CyclerStoppedError(f"{self.name}: the step was stopped ({await self.message.get_value()})")

    async def stop(self, success: bool = False) -> None:
        """Stop the running step (nothing happens when none runs); its ``set`` status
        then completes if ``success``, else fails."""
        self._stop_success = success
        if await self.state.get_value() == CyclerState.RUNNING:
            await self._stop_channel()

    @property
    def unattended(self) -> UnattendedChannel:
        """This channel as a plan sets it when the step must run on its own, through
        pauses and suspensions (see `UnattendedChannel`)."""
        return UnattendedChannel(self)


class UnattendedChannel(Movable[CyclerStep]):
    """A cycler channel that runs its steps on its own: a `Movable` without ``stop``.

    The RunEngine stops every object a plan has set when it pauses or suspends (a beam
    dump), so a step set on the `Cycler` itself would end there. Set on this view, the
    step goes on; the plan stops the channel itself where it must (`Cycler.stop`, e.g.
    when the plan is aborted), and then this view's status completes instead of failing
    (the plan decided so); a fault still fails it.
    """

    def __init__(self, cycler: Cycler) -> None:
        self.cycler = cycler
        self.name = cycler.name
        self.parent = cycler

    @AsyncStatus.wrap
    async def set(self, value: CyclerStep) -> None:
        """Run ``value`` as `Cycler.set` does; stopping it is not a failure here."""
        try:
            await self.cycler.set(value)
        except CyclerStoppedError:
            return


class CyclerLogOverrunError(RuntimeError):
    """Samples left the channel's log readback before they were read: they are lost."""


class CyclerLog:
    """The data log of ``cycler`` as a bluesky `Readable`: one logged sample per ``read()``.

    Staging starts at the channel's next sample. `trigger` reads the log readback
    (``log_samples``, one consistent snapshot) and queues every sample logged since the
    last trigger; ``pending`` says how many are queued; `read` returns the oldest
    (readings stamped with the sample's time) and drops it. So a client that was away
    (a beam dump, a pause) records afterwards every sample the channel took meanwhile.
    Data keys: the cycler's own for `CYCLER_LOG_FIELDS` (``<name>-potential``, ...; an
    ``echem`` stream read from the log has the keys of one read from the cycler) and
    ``<name>-log_index``, the sample's number in the channel's log (0 = first since it
    started). `trigger` fails with `CyclerLogOverrunError` if samples left the readback
    (`nanostrain.schema.cycler.LOG_LENGTH`) unread.
    """

    def __init__(self, cycler: Cycler) -> None:
        self.cycler = cycler
        self.name = cycler.name
        self.parent = None
        self._pending: deque[dict[str, Any]] = deque()
        self._next: int | None = None

    @property
    def pending(self) -> int:
        """Samples queued by `trigger` and not yet read."""
        return len(self._pending)

    @AsyncStatus.wrap
    async def stage(self) -> None:
        self._pending.clear()
        self._next = await self.cycler.log_count.get_value()

    @AsyncStatus.wrap
    async def unstage(self) -> None:
        self._pending.clear()
        self._next = None

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        if self._next is None:
            raise RuntimeError(f"{self.name} log: stage it before triggering")
        rows = (await self.cycler.log_samples.get_value()).reshape(-1, len(CYCLER_LOG_COLUMNS))
        rows = rows[rows[:, 0] >= self._next]
        if len(rows) and rows[0, 0] > self._next:
            raise CyclerLogOverrunError(
                f"{self.name}: samples {self._next} to {int(rows[0, 0]) - 1} of the channel's log were overwritten "
                f"before they were read (the readback holds the newest {LOG_LENGTH})"
            )
        states = list(CyclerState)
        for row in rows:
            sample = dict(zip(CYCLER_LOG_COLUMNS, row.tolist(), strict=True))
            for key in ("index", "step_index", "cycle_index"):
                sample[key] = int(sample[key])
            sample["state"] = states[int(sample["state"])]
            self._pending.append(sample)
        if len(rows):
            self._next = int(rows[-1, 0]) + 1

    async def read(self) -> dict[str, Any]:
        if not self._pending:
            raise RuntimeError(f"{self.name} log: no sample pending; trigger() queues the new ones")
        sample = self._pending.popleft()
        timestamp = sample.pop("time")
        sample["log_index"] = sample.pop("index")
        return {f"{self.name}-{key}": {"value": value, "timestamp": timestamp} for key, value in sample.items()}

    async def describe(self) -> dict[str, Any]:
        described = await self.cycler.describe()
        keys = {f"{self.name}-{field}": described[f"{self.name}-{field}"] for field in CYCLER_LOG_FIELDS}
        index = {"source": f"log of {self.name}", "dtype": "integer", "shape": [], "dtype_numpy": "<i8"}
        return {**keys, f"{self.name}-log_index": index}


# --------------------------------------------------------------------------------------
# EPICS
# --------------------------------------------------------------------------------------
def _pv(attr: str) -> CyclerPv:
    return CYCLER_PVS[attr] if attr in CYCLER_PVS else CYCLER_LOG_PVS[attr]


def _element(pv: CyclerPv) -> type[np.generic]:
    """The numpy type of one element of waveform ``pv``."""
    return np.float64 if pv.datatype is float else np.int32


def _datatype(pv: CyclerPv) -> Any:
    """The signal datatype of ``pv``: its own, or a 1D array of its elements for a waveform."""
    return Array1D[_element(pv)] if pv.length else pv.datatype


class _EpicsSignals:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def r(self, attr: str) -> SignalR:
        pv = _pv(attr)
        return epics_signal_r(_datatype(pv), self.prefix + pv.suffix)

    def rw(self, attr: str) -> SignalRW:
        pv = CYCLER_PVS[attr]
        return epics_signal_rw(pv.datatype, self.prefix + pv.suffix)


class EpicsCycler(Cycler):
    """A cycler channel over Channel Access: the records `CYCLER_PVS` under ``prefix``
    (e.g. ``"XF:17BM-ES{Cycler:1}"``; see docs/cycler-pvs.md)."""

    def __init__(self, prefix: str, name: str = "") -> None:
        self.start_step = epics_signal_rw(bool, prefix + CYCLER_PVS["start_step"].suffix)
        self.stop_step = epics_triggerable_command(prefix + CYCLER_PVS["stop_step"].suffix)
        super().__init__(_EpicsSignals(prefix), name=name)

    async def _run_step(self) -> None:
        # Start is a busy record: the put callback comes when the step has ended.
        await self.start_step.set(True, timeout=None)

    async def _stop_channel(self) -> None:
        await self.stop_step.trigger()


# --------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------
class _SoftSignals:
    """Soft signals with the units and precision of the records; keeps the setters of
    the read-only ones for the simulation to publish its readbacks."""

    def __init__(self) -> None:
        self.setters: dict[str, Callable[[Any], None]] = {}

    def r(self, attr: str) -> SignalR:
        pv = _pv(attr)
        initial = np.zeros(0, _element(pv)) if pv.length else pv.initial
        signal, self.setters[attr] = soft_signal_r_and_setter(
            _datatype(pv), initial, units=pv.units, precision=pv.precision
        )
        return signal

    def rw(self, attr: str) -> SignalRW:
        pv = CYCLER_PVS[attr]
        return soft_signal_rw(pv.datatype, pv.initial, units=pv.units, precision=pv.precision)


def _check_time_scale(value: float) -> None:
    if not value >= 0.0:
        raise ValueError(f"time_scale must be >= 0 simulated s per wall s, got {value}")


async def _run_clock(cycler_ref: weakref.ref[SimCycler], clock: WallClock, period_s: float) -> None:
    """Tick ``clock`` every ``period_s`` wall seconds and publish, while the cycler lives
    (the task holds it only weakly, so a discarded SimCycler stops its clock)."""
    while True:
        await asyncio.sleep(period_s)
        cycler = cycler_ref()
        if cycler is None:
            return
        clock.tick(await cycler.time_scale.get_value())
        cycler._publish()
        del cycler


class SimCycler(Cycler):
    """A simulated cycler channel driving ``engine`` (a coin cell of `CathodeParticle`s).

    time_scale: simulated seconds per wall second (default 3600: 1 wall s = 1 simulated
        hour), also the signal ``time_scale`` (units s/s; change it at any time, 0
        freezes the simulated world).
    update_period_s: wall seconds between clock ticks, i.e. between readback updates.
    The clock starts when the device is connected.

    Writing ``mounted_sample`` puts a new cell (`nanostrain.sim.samples.cathode_particle`)
    in the engine and hands it (particle, record) to every callback in ``cell_viewers``
    (the simulated XRD detector that sees the same cell). ``sample_record``: the cell's
    record (default: the engine's particle, fresh).
    """

    def __init__(
        self,
        engine: CyclerEngine,
        time_scale: float = 3600.0,
        name: str = "",
        *,
        update_period_s: float = 0.05,
        sample_record: SampleRecord | None = None,
    ) -> None:
        _check_time_scale(time_scale)
        if not update_period_s > 0.0:
            raise ValueError(f"update_period_s must be positive, got {update_period_s}")
        self.engine = engine
        self.update_period_s = update_period_s
        self.time_scale = soft_signal_rw(float, time_scale, units="s/s", setter=_check_time_scale)
        self._signals = _SoftSignals()
        self._published_log_count = -1
        self._clock_task: asyncio.Task | None = None
        self.cell_viewers: list[Callable[[CathodeParticle, SampleRecord], None]] = []
        self.sample_record = particle_record(engine.particle) if sample_record is None else sample_record
        super().__init__(self._signals, name=name, mount=self._mount, mounted=lambda: self.sample_record)
        self._publish()

    async def _mount(self, record: SampleRecord) -> None:
        if await self.state.get_value() == CyclerState.RUNNING:
            raise RuntimeError(f"{self.name}: a step is running; stop() it before mounting another cell")
        from nanostrain.sim.samples import cathode_particle

        particle = cathode_particle(record)
        self.engine.particle, self.sample_record = particle, record
        for view in self.cell_viewers:
            view(particle, record)
        self._publish()

    async def connect(
        self, mock: bool | DeviceMock = False, timeout: float = DEFAULT_TIMEOUT, force_reconnect: bool = False
    ) -> None:
        """Connect the soft signals and start the simulated clock (not in mock mode)."""
        await super().connect(mock=mock, timeout=timeout, force_reconnect=force_reconnect)
        if not mock and (self._clock_task is None or self._clock_task.done()):
            from nanostrain.sim.cycler_engine import WallClock

            clock = WallClock(self.engine)
            self._clock_task = asyncio.create_task(_run_clock(weakref.ref(self), clock, self.update_period_s))

    def _publish(self) -> None:
        for attr, value in self.engine.readbacks().items():
            self._signals.setters[attr](value)
        if self.engine.log_count != self._published_log_count:  # the log grew
            for attr, value in self.engine.log_readbacks().items():
                pv = CYCLER_LOG_PVS[attr]
                self._signals.setters[attr](np.asarray(value, _element(pv)) if pv.length else value)
            self._published_log_count = self.engine.log_count

    async def _run_step(self) -> None:
        setpoints = await asyncio.gather(
            self.mode.get_value(),
            self.current_setpoint.get_value(),
            self.voltage_min.get_value(),
            self.voltage_max.get_value(),
            self.duration.get_value(),
        )
        self.engine.start_setpoints(*setpoints)
        self._publish()
        await wait_for_value(self.state, lambda state: state != CyclerState.RUNNING, timeout=None)

    async def _stop_channel(self) -> None:
        self.engine.stop()
        self._publish()
