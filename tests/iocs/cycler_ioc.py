"""A soft cycler IOC: one channel of `nanostrain.sim.cycler_engine.CyclerEngine`, driving a
simulated coin cell, served over Channel Access by pythonSoftIOC.

It serves exactly the records of `nanostrain.schema.cycler.CYCLER_PVS` and
`CYCLER_LOG_PVS` (the channel's data log) under
``--prefix`` (docs/cycler-pvs.md), with their units and precision, and behaves as
`EpicsCycler` expects:

* ``Start`` is a busy record: a put of 1 starts a step from the setpoint records (Mode,
  Current-SP, VoltageMin-SP, VoltageMax-SP, Duration-SP) and, put with callback,
  completes when the step ends; a refused step ends at once in FAULT with the reason in
  Message-RB. ``Stop`` (a put of 1) stops the running step.
* A clock advances the engine by ``--time-scale`` simulated seconds per wall second
  and updates the readback records every ``--update-period-s``.

Usage: ``python -m tests.iocs.cycler_ioc --prefix X: [--time-scale 3600] [--material NC91]
[--morphology PC] [--active-mass-g 6.16e-3]`` from the repository root; prints
``READY <prefix>`` once serving. Run it with EPICS_CAS_INTF_ADDR_LIST=127.0.0.1 (and the
client with EPICS_CA_ADDR_LIST=127.0.0.1, EPICS_CA_AUTO_ADDR_LIST=NO) to keep it on
loopback; give both the same EPICS_CA_SERVER_PORT to keep it apart from other IOCs.
"""

from __future__ import annotations

import argparse
import asyncio
from enum import Enum
from typing import Any

import numpy as np
from softioc import asyncio_dispatcher, builder, softioc

from nanostrain.schema.cycler import CYCLER_LOG_PVS, CYCLER_PVS, CyclerMode, CyclerPv, CyclerState
from nanostrain.sim.cathode import CathodeParticle
from nanostrain.sim.cycler_engine import ACTIVE_MASS_G, CyclerEngine, WallClock

MESSAGE_LENGTH = 256
"""Characters of Message-RB (a long string: a char waveform)."""


def make_record(name: str, pv: CyclerPv, **fields: Any):
    """The softioc record of ``pv`` named ``name`` (an In or Out record by ``pv.writable``)."""
    writable = pv.writable
    if pv.length:
        element = np.float64 if pv.datatype is float else np.int32
        return builder.WaveformIn(name, length=pv.length, datatype=element, initial_value=np.zeros(0, element),
                                  **({"EGU": pv.units} if pv.units else {}), **fields)
    if issubclass(pv.datatype, Enum):
        make = builder.mbbOut if writable else builder.mbbIn
        choices = list(pv.datatype)
        return make(name, *(c.value for c in choices), initial_value=choices.index(pv.initial), **fields)
    if pv.datatype is bool:
        make = builder.boolOut if writable else builder.boolIn
        return make(name, ZNAM="Done", ONAM="Busy", initial_value=int(pv.initial), **fields)
    if pv.datatype is float:
        make = builder.aOut if writable else builder.aIn
        return make(name, EGU=pv.units, PREC=pv.precision, initial_value=pv.initial, **fields)
    if pv.datatype is int:
        make = builder.longOut if writable else builder.longIn
        return make(name, EGU=pv.units, initial_value=pv.initial, **fields)
    if pv.datatype is str and not writable:
        return builder.longStringIn(name, initial_value=pv.initial, length=MESSAGE_LENGTH, **fields)
    raise TypeError(f"no record for {pv}")


def record_value(value: Any) -> Any:
    """A readback value as its record takes it (enums by index)."""
    return list(type(value)).index(value) if isinstance(value, Enum) else value


class CyclerIoc:
    """The records of one cycler channel, fed by ``engine`` at ``time_scale``."""

    def __init__(self, prefix: str, engine: CyclerEngine, time_scale: float, update_period_s: float = 0.05):
        self.engine = engine
        self.time_scale = time_scale
        self.update_period_s = update_period_s
        actions = {
            "start_step": {"on_update": self._start, "blocking": True, "always_update": True},
            "stop_step": {"on_update": self._stop, "always_update": True},
        }
        self.records = {
            attr: make_record(prefix + pv.suffix, pv, **actions.get(attr, {}))
            for attr, pv in {**CYCLER_PVS, **CYCLER_LOG_PVS}.items()
        }
        self._published: dict[str, Any] = {}
        self._published_log_count = -1
        self._step_over = asyncio.Event()
        self.publish()

    def publish(self) -> None:
        """Write the engine's readbacks that changed into their records (state last),
        then its log if it grew (the count last)."""
        for attr, value in self.engine.readbacks().items():
            if self._published.get(attr) != value:
                self.records[attr].set(record_value(value))
                self._published[attr] = value
        if self.engine.log_count != self._published_log_count:
            for attr, value in self.engine.log_readbacks().items():
                self.records[attr].set(value)
            self._published_log_count = self.engine.log_count
        if self.engine.state is not CyclerState.RUNNING:
            self._step_over.set()

    async def _start(self, value: int) -> None:
        if value:
            out = self.records
            self._step_over.clear()
            self.engine.start_setpoints(
                list(CyclerMode)[out["mode"].get()],
                out["current_setpoint"].get(),
                out["voltage_min"].get(),
                out["voltage_max"].get(),
                out["duration"].get(),
            )
            self.publish()
            await self._step_over.wait()
        self.records["start_step"].set(0, process=False)

    def _stop(self, value: int) -> None:
        if value:
            self.engine.stop()
            self.publish()

    async def run(self) -> None:
        """Advance the engine on the wall clock and publish, forever."""
        clock = WallClock(self.engine)
        while True:
            await asyncio.sleep(self.update_period_s)
            clock.tick(self.time_scale)
            self.publish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True, help="PV prefix, e.g. 'XF:17BM-ES{Cycler:1}'")
    parser.add_argument("--time-scale", type=float, default=3600.0, help="simulated s per wall s (default 3600)")
    parser.add_argument("--material", default="NC91", help="cathode material (NC91, NM91)")
    parser.add_argument("--morphology", default="PC", help="SC or PC")
    parser.add_argument("--active-mass-g", type=float, default=ACTIVE_MASS_G, help="active mass, g")
    args = parser.parse_args()
    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    engine = CyclerEngine(CathodeParticle(args.material, args.morphology), args.active_mass_g)
    ioc = CyclerIoc(args.prefix, engine, args.time_scale)
    builder.LoadDatabase()
    softioc.iocInit(dispatcher, enable_pva=False)
    clock = asyncio.run_coroutine_threadsafe(ioc.run(), dispatcher.loop)
    print(f"READY {args.prefix}", flush=True)
    clock.result()  # serve until killed; a failing clock ends the IOC with its traceback


if __name__ == "__main__":
    main()
