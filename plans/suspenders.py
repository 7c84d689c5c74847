"""Beam dumps and a closed shutter suspend the plan, as bluesky does it; each gap is recorded.

`beam_suspenders` builds bluesky's own suspenders: `bluesky.suspenders.SuspendFloor` on
the ring current (suspend below ``min_ring_current_mA``, resume at or above
``resume_ring_current_mA``, then wait ``sleep_s`` for the optics to settle) and
`bluesky.suspenders.SuspendBoolLow` on the shutter's open status. They belong to the
RunEngine, not to a plan: `nanostrain.session.make_session` installs them on its
RunEngine (so the IPython profile and the queue server, which runs the profile, have
them for every plan, and no plan needs a JSON argument for them); with a RunEngine of
your own, ``for s in beam_suspenders(ring_current, shutter): RE.install_suspender(s)``.

While suspended the RunEngine stops the devices a plan has set and waits; then it
rewinds the plan to its last checkpoint (`bps.checkpoint`) and replays from there (a
plan that is not rewindable, like the cycling plans, goes on where it stopped).
Each gap inside a run becomes one event of the ``beam_gaps`` stream (`BeamGapRecord`:
when the beam went, when it came back, why); a gap between runs belongs to no run.

bluesky 1.15's suspenders subscribe the way ophyd (v1) signals do; `watchable` adapts
an ophyd-async signal (the value of each reading goes to the suspender).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.run_engine import call_in_bluesky_event_loop
from bluesky.suspenders import SuspendBoolLow, SuspenderBase, SuspendFloor
from bluesky.utils import IllegalMessageSequence, MsgGenerator
from ophyd_async.core import SignalR

from .validation import PlanArgumentError, require_range

__all__ = ["BEAM_GAPS_STREAM", "BeamGapRecord", "beam_suspenders", "watchable"]

#: The stream a run records its beam gaps in.
BEAM_GAPS_STREAM = "beam_gaps"
#: Largest ring current threshold accepted, mA.
MAX_RING_CURRENT_MA = 1000.0
#: Longest settling wait after the beam returns, s.
MAX_SETTLE_S = 3600.0


def _on_event_loop(function: Callable[[], None]) -> None:
    """Call ``function`` on the bluesky event loop (ophyd-async subscribes only there):
    now if this is that loop, else from its thread, waiting for it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        async def call() -> None:
            function()

        call_in_bluesky_event_loop(call())
    else:
        function()


class _ValueSubscription:
    """An ophyd-async signal subscribed to the way ophyd's are: ``subscribe(callback,
    event_type=None, run=True)`` calls ``callback(value=...)`` with each new value (and
    the current one at once); ``clear_sub(callback)`` ends it; ``name`` and ``get()``
    (the last value seen) for the suspender's messages."""

    def __init__(self, signal: SignalR) -> None:
        self.signal = signal
        self.name = signal.name
        self._value: Any = None
        self._subscriptions: dict[Callable[..., Any], Callable[[dict[str, Any]], None]] = {}

    def get(self) -> Any:
        return self._value

    def subscribe(self, callback: Callable[..., Any], event_type: Any = None, run: bool = True) -> None:
        def on_reading(reading: dict[str, Any]) -> None:
            self._value = reading[self.signal.name]["value"]
            callback(value=self._value)

        self._subscriptions[callback] = on_reading
        _on_event_loop(lambda: self.signal.subscribe_reading(on_reading))

    def clear_sub(self, callback: Callable[..., Any]) -> None:
        on_reading = self._subscriptions.pop(callback)
        _on_event_loop(lambda: self.signal.clear_sub(on_reading))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signal.name!r})"


def watchable(signal: Any) -> Any:
    """``signal`` as a bluesky suspender watches it: an ophyd-async `SignalR` adapted
    (see module docstring), an ophyd (v1) signal as it is."""
    return _ValueSubscription(signal) if isinstance(signal, SignalR) else signal


class BeamGapRecord:
    """What a suspension records in the open run: a bluesky `Readable` whose reading is
    the last gap, ``<name>-start`` and ``<name>-end`` (POSIX s), ``<name>-duration_s``
    and ``<name>-reason`` (the suspender's message)."""

    def __init__(self, name: str = "beam_gap") -> None:
        self.name = name
        self.parent = None
        self._gap: dict[str, Any] = {"start": 0.0, "end": 0.0, "duration_s": 0.0, "reason": ""}

    def started(self, reason: str) -> MsgGenerator[None]:
        """Plan (a suspender's ``pre_plan``): the RunEngine suspends now, for ``reason``."""
        self._gap = {"start": time.time(), "end": float("nan"), "duration_s": float("nan"), "reason": reason}
        yield from bps.null()

    def ended(self) -> MsgGenerator[None]:
        """Plan (a suspender's ``post_plan``): the beam is back; record the gap as an
        event of `BEAM_GAPS_STREAM` if a run is open."""
        end = time.time()
        self._gap = {**self._gap, "end": end, "duration_s": end - self._gap["start"]}
        try:
            yield from bps.trigger_and_read([self], name=BEAM_GAPS_STREAM)
        except IllegalMessageSequence:  # the RunEngine's answer when no run is open
            return

    def read(self) -> dict[str, Any]:
        stamp = self._gap["end"]
        return {f"{self.name}-{key}": {"value": value, "timestamp": stamp} for key, value in self._gap.items()}

    def describe(self) -> dict[str, Any]:
        def key(dtype: str, units: str | None = None) -> dict[str, Any]:
            return {"source": "suspender", "dtype": dtype, "shape": [], **({"units": units} if units else {})}

        return {f"{self.name}-start": key("number", "s"), f"{self.name}-end": key("number", "s"),
                f"{self.name}-duration_s": key("number", "s"), f"{self.name}-reason": key("string")}


def beam_suspenders(
    ring_current: Any = None,
    shutter: Any = None,
    *,
    min_ring_current_mA: float = 10.0,
    resume_ring_current_mA: float | None = None,
    sleep_s: float = 0.0,
) -> list[SuspenderBase]:
    """bluesky suspenders for the beam (see module docstring).

    ring_current: a device with a ``current`` signal (mA; `devices.beam.SimRingCurrent`,
    `EpicsRingCurrent`) or such a signal; suspends below ``min_ring_current_mA`` and
    resumes at or above ``resume_ring_current_mA`` (default: the same).
    shutter: a device with an ``open_status`` signal (`devices.beam.SimShutter`,
    `EpicsShutter`) or such a signal; suspends while it reads False.
    sleep_s: wait after the beam returns before the plan goes on, s.
    Every suspender records its gaps in the ``beam_gaps`` stream of the open run.
    Raises `PlanArgumentError` naming a bad threshold.
    """
    min_ring_current_mA = require_range("min_ring_current_mA", min_ring_current_mA, 0.0, MAX_RING_CURRENT_MA, "mA")
    resume = min_ring_current_mA if resume_ring_current_mA is None else require_range(
        "resume_ring_current_mA", resume_ring_current_mA, min_ring_current_mA, MAX_RING_CURRENT_MA, "mA")
    sleep_s = require_range("sleep_s", sleep_s, 0.0, MAX_SETTLE_S, "s")
    record = BeamGapRecord()
    suspenders: list[SuspenderBase] = []
    if ring_current is not None:
        reason = f"ring current below {min_ring_current_mA:g} mA (beam dump)"
        suspenders.append(SuspendFloor(
            watchable(getattr(ring_current, "current", ring_current)), min_ring_current_mA,
            resume_thresh=resume, sleep=sleep_s, tripped_message=reason,
            pre_plan=partial(record.started, reason), post_plan=record.ended))
    if shutter is not None:
        reason = "shutter closed"
        suspenders.append(SuspendBoolLow(
            watchable(getattr(shutter, "open_status", shutter)), sleep=sleep_s, tripped_message=reason,
            pre_plan=partial(record.started, reason), post_plan=record.ended))
    if not suspenders:
        raise PlanArgumentError("beam_suspenders needs ring_current, shutter or both.")
    return suspenders
