"""A soft IOC serving what beam suspenders watch: the ring current and a shutter's status.

Records under ``--prefix`` (pythonSoftIOC): ``Current-I`` (ao, mA, initially 400: the
PV of `nanostrain.devices.beam.EpicsRingCurrent`) and ``Open-Sts`` (bo, Closed/Open,
initially Open: the PV of `EpicsShutter`). Both are output records so a test can dump
the beam or close the shutter with a Channel Access put, as the machine would.

Usage: ``python -m tests.iocs.beam_ioc --prefix X:`` from the repository root; prints
``READY <prefix>`` once serving (see tests/iocs/cycler_ioc.py for the loopback setup).
"""

from __future__ import annotations

import argparse
import asyncio

from softioc import asyncio_dispatcher, builder, softioc

RING_CURRENT_MA = 400.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", required=True, help="PV prefix")
    args = parser.parse_args()
    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    builder.aOut(args.prefix + "Current-I", initial_value=RING_CURRENT_MA, EGU="mA", PREC=2)
    builder.boolOut(args.prefix + "Open-Sts", ZNAM="Closed", ONAM="Open", initial_value=1)
    builder.LoadDatabase()
    softioc.iocInit(dispatcher, enable_pva=False)
    print(f"READY {args.prefix}", flush=True)
    asyncio.run_coroutine_threadsafe(asyncio.Event().wait(), dispatcher.loop).result()  # serve until killed


if __name__ == "__main__":
    main()
