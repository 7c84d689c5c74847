"""Soft IOCs for the TXM's EPICS classes (`nanostrain.devices.txm`), over CA.

Two servers, one per process:

``python txm_ioc.py motors PREFIX``: caproto serves the motor records
    ``PREFIX{BRAGG, ZPZ, DETZ, ROT, SX, SY, SZ}`` with the fields ophyd-async's `Motor` uses
    (.VAL, .RBV, .DMOV, .VELO, .VMAX, .LLM, .HLM, .DLLM, .DHLM, .EGU, ...): a put to .VAL
    moves the readback at .VELO in 10 ms ticks and completes (put callback) when the move
    is done, as the motor record does; a put outside [LLM, HLM] is refused. Limits and
    start positions in `MOTORS` (Bragg at 8350 eV on Si(111)).

``python txm_ioc.py softioc PREFIX``: pythonSoftIOC serves
    * the photon shutter ``PREFIX SH:Cmd:Opn-Cmd``, ``SH:Cmd:Cls-Cmd`` (longOut; a put of 1
      starts the blade) and ``SH:Pos-Sts`` (bi "Open" / "Not Open"), which follows a
      command after ``SHUTTER_TRAVEL_S``;
    * an ADAndor camera ``PREFIX CAM:``: driver ``cam1:`` (ADBase records with the
      ADAndor trigger modes and ``AndorAccumulatePeriod_RBV``), HDF5 plugin ``HDF1:`` and
      statistics plugin ``Stats1:`` built on `ad_ioc` (record factory, HDF5 plugin) and
      `nanoprobe_ioc` (generic driver, NDStats plugin). Each frame is a 64 x 64 TXM flat
      field (`nanostrain.sim.txm.TxmImaging`, 8350 eV, no specimen); Stats1:Total_RBV =
      its sum.

Prints ``READY <prefix>`` once serving. Run with EPICS_CAS_INTF_ADDR_LIST=127.0.0.1 (and
EPICS_CA_SERVER_PORT to serve on a port of its own) and clients with
EPICS_CA_ADDR_LIST=127.0.0.1[:port], EPICS_CA_AUTO_ADDR_LIST=NO.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


MOTORS = {
    "BRAGG": (5.0, 30.0, "deg", 13.7, 10.0),
    "ZPZ": (-20.0, 20.0, "mm", 0.0, 10.0),
    "DETZ": (-200.0, 200.0, "mm", 0.0, 200.0),
    "ROT": (-370.0, 370.0, "deg", 0.0, 720.0),
    "SX": (-10.0, 10.0, "mm", 0.0, 50.0),
    "SY": (-10.0, 10.0, "mm", 0.0, 50.0),
    "SZ": (-10.0, 10.0, "mm", 0.0, 50.0),
}
"""Motor records: (low limit, high limit, units, start position, velocity per s)."""
SHUTTER_TRAVEL_S = 0.05
ANDOR_TRIGGER_MODES = ("Internal", "External", "External Start", "External Exposure", "External FVP", "Software")
FRAME_SHAPE = (64, 64)


# --------------------------------------------------------------------------------------
# pythonSoftIOC: shutter and camera
# --------------------------------------------------------------------------------------
def serve_softioc(prefix: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ad_ioc
    from nanoprobe_ioc import PixelDriver, StatsPlugin
    from softioc import asyncio_dispatcher, builder, softioc

    from nanostrain.sim.txm import TxmImaging

    builder.SetDeviceName(prefix + "SH")
    status = builder.boolIn("Pos-Sts", ZNAM="Open", ONAM="Not Open", initial_value=1)

    def command(state: int):
        async def move(value: int) -> None:
            if value:
                await asyncio.sleep(SHUTTER_TRAVEL_S)
                status.set(state)

        return move

    builder.longOut("Cmd:Opn-Cmd", initial_value=0, on_update=command(0), always_update=True)
    builder.longOut("Cmd:Cls-Cmd", initial_value=0, on_update=command(1), always_update=True)

    camera = f"{prefix}CAM:"
    imaging = TxmImaging(FRAME_SHAPE, seed=2)
    hdf = ad_ioc.HdfPlugin(camera, FRAME_SHAPE)
    stats = StatsPlugin(camera, FRAME_SHAPE)
    PixelDriver(camera, ANDOR_TRIGGER_MODES, hdf, stats, lambda exposure: imaging.frame(None, 8350.0, 0.0, exposure))
    builder.SetDeviceName(camera + "cam1")
    builder.aIn("AndorAccumulatePeriod_RBV", initial_value=0.0, PREC=3)

    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    builder.LoadDatabase()
    softioc.iocInit(dispatcher, enable_pva=False)
    print(f"READY {prefix}", flush=True)
    softioc.non_interactive_ioc()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=("motors", "softioc"))
    parser.add_argument("prefix")
    args = parser.parse_args()
    if args.server == "motors":
        from motor_ioc import serve_motors  # beside this script, run as a file

        serve_motors(args.prefix, MOTORS)
    else:
        serve_softioc(args.prefix)


if __name__ == "__main__":
    main()
