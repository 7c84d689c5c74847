"""Soft IOC for the XAS station's EPICS classes (`nanostrain.devices.dcm.DcmEnergy`,
`nanostrain.devices.xas.EpicsIonChambers`), over CA, one caproto process:

* the DCM Bragg motor record ``PREFIX BRAGG`` (`motor_ioc.motor_record`, starting at
  8350 eV on Si(111));
* the counter ``PREFIX IC:`` with the PVs of `ION_CHAMBER_PVS`: ``CountTime`` (s),
  ``Count`` (bo Done/Count: a put of 1 counts for CountTime and completes when done), ``I0``, ``It``,
  ``Iref``: noiseless counts of ``FLUX`` photons/s through the simulated electrode
  (`nanostrain.sim.xas_model`, `SIM_XAS_SAMPLE`) and the Ni foil at the photon energy of
  the Bragg readback, the simulated chambers' efficiencies (0.1, 0.5, 0.5). While the
  Bragg motor moves (a fly scan at its .VELO), a count sums its photons over the
  readback's energies in ticks of `motor_ioc.TICK_S`, as a scaler gated for CountTime
  integrates a sweeping beam.

Prints ``READY <prefix>`` once serving. ``python xas_ioc.py PREFIX``; run with
EPICS_CAS_INTF_ADDR_LIST=127.0.0.1 (clients: EPICS_CA_ADDR_LIST=127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import sys
from pathlib import Path

FLUX = 1e9
BRAGG = (5.0, 30.0, "deg", 13.69606, 10.0)
"""Bragg motor: (low limit, high limit, units, start position (8350 eV), velocity deg/s)."""


@functools.lru_cache(maxsize=1)
def _electrode():
    from nanostrain.devices.xas import SIM_XAS_SAMPLE
    from nanostrain.sim.xas_model import electrode_specimen

    return electrode_specimen(SIM_XAS_SAMPLE)


def counts(bragg_deg: float, count_time: float) -> tuple[float, float, float]:
    """(I0, It, Iref) of the electrode and foil at the Bragg angle for ``count_time`` (s), noiseless."""
    import numpy as np

    from nanostrain.devices.dcm import energy_from_bragg_eV
    from nanostrain.sim.xas_model import ni_foil_absorbance

    energy = energy_from_bragg_eV(bragg_deg)
    mu = float(_electrode().absorbance(np.array([energy]))[0])
    photons = FLUX * count_time
    transmitted = 0.5 * photons * math.exp(-mu)
    return 0.1 * photons, transmitted, transmitted * math.exp(-ni_foil_absorbance(energy))


def serve(prefix: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from caproto import ChannelType
    from caproto.server import PVGroup, SubGroup, pvproperty, run
    from motor_ioc import TICK_S, motor_record

    from nanostrain.devices.xas import ION_CHAMBER_PVS

    class Counter(PVGroup):
        count_time = pvproperty(value=0.1, name=ION_CHAMBER_PVS["count_time"], precision=3)
        count = pvproperty(value="Done", name=ION_CHAMBER_PVS["count"], dtype=ChannelType.ENUM,
                           enum_strings=["Done", "Count"])
        i0 = pvproperty(value=0.0, name=ION_CHAMBER_PVS["i0"], read_only=True)
        it = pvproperty(value=0.0, name=ION_CHAMBER_PVS["it"], read_only=True)
        iref = pvproperty(value=0.0, name=ION_CHAMBER_PVS["iref"], read_only=True)

        @count.putter
        async def count(self, instance, value):
            if value in ("Count", 1):
                count_time = self.count_time.value
                readback = self.parent.BRAGG.motor.field_inst.user_readback_value
                loop = asyncio.get_running_loop()
                began = last = loop.time()
                totals = [0.0, 0.0, 0.0]
                while last < began + count_time:  # photons of each tick at the tick's readback
                    await asyncio.sleep(min(TICK_S, began + count_time - last))
                    now = min(loop.time(), began + count_time)
                    for index, number in enumerate(counts(readback.value, now - last)):
                        totals[index] += number
                    last = now
                for pv, number in zip((self.i0, self.it, self.iref), totals, strict=True):
                    await pv.write(number)
            return "Done"

    class Station(PVGroup):
        IC = SubGroup(Counter, prefix="IC:")
        BRAGG = SubGroup(motor_record(*BRAGG, ready=f"READY {prefix}"), prefix="BRAGG")

    counts(BRAGG[3], 0.1)  # import the simulator before serving
    ioc = Station(prefix=prefix)
    run(ioc.pvdb, interfaces=["127.0.0.1"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix")
    serve(parser.parse_args().prefix)


if __name__ == "__main__":
    main()
