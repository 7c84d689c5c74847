"""Soft IOCs for the nanoprobe's EPICS classes (`nanostrain.devices.nanoprobe`), over CA.

Two servers, one per process (two CA servers sharing UDP port 5064 on one host each get
only some unicast searches, so the tests run one at a time):

``python nanoprobe_ioc.py motors PREFIX``: caproto serves four motor records
    ``PREFIX{X,Y,Z,TH}`` with the fields ophyd-async's `Motor` uses (.VAL, .RBV, .DMOV,
    .VELO, .VMAX, .LLM, .HLM, ...); a put to .VAL moves the readback at .VELO in 10 ms
    ticks and completes (put callback) when the move is done, as the motor record does;
    a put outside [LLM, HLM] is refused. Limits: +-50 (X, Y, Z, um), -5..60 (TH, deg).

``python nanoprobe_ioc.py softioc PREFIX [--flux F] [--xrf-rate R] [--d-A D] [--theta-xz T]``:
    pythonSoftIOC serves
    * ``PREFIX I0:Flux`` = F photons/s (ai);
    * ``PREFIX XRF:AcquireTime`` (ao), ``XRF:Acquire`` (busy bo: the put callback
      completes after AcquireTime s, when ``XRF:C1_ROI1:Value_RBV`` = R x AcquireTime);
    * ``PREFIX MERLIN:`` and ``PREFIX EIGER:``: areaDetector ports (driver ``cam1:``,
      HDF5 plugin ``HDF1:`` and NDStats ``Stats1:``) built on `ad_ioc`'s record factory
      and HDF5 plugin, with the ADMerlin / ADEiger trigger records. Acquire (busy) takes
      NumImages frames; each is `NanoprobeSimulation.frame` of a uniform crystal of d =
      D (A) and rotation theta_xz = T (deg), seen at its Bragg angle, on the default
      nanoprobe geometry (64 x 64, 12000 eV, 0.35 m); Stats1:Total_RBV = its sum.

Prints ``READY <prefix>`` once serving. Run with EPICS_CAS_INTF_ADDR_LIST=127.0.0.1 and
clients with EPICS_CA_ADDR_LIST=127.0.0.1, EPICS_CA_AUTO_ADDR_LIST=NO.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np

MOTORS = {
    "X": (-50.0, 50.0, "um", 0.0, 100.0),
    "Y": (-50.0, 50.0, "um", 0.0, 100.0),
    "Z": (-50.0, 50.0, "um", 0.0, 100.0),
    "TH": (-5.0, 60.0, "deg", 0.0, 100.0),
}
"""Motor records: (low limit, high limit, units, start position, velocity per s)."""
MERLIN_TRIGGER_MODES = (
    "Internal", "Trigger Enable", "Trigger start rising", "Trigger start falling", "Trigger both rising",
    "LVDS Trig Enable", "LVDS Trig start rising", "LVDS Trig start falling", "LVDS Trig both rising", "Software",
)
EIGER_TRIGGER_MODES = ("Internal Series", "Internal Enable", "External Series", "External Enable")


# --------------------------------------------------------------------------------------
# pythonSoftIOC: plain records and areaDetector ports
# --------------------------------------------------------------------------------------
def serve_softioc(prefix: str, flux: float, xrf_rate: float, d_A: float, theta_xz_deg: float) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ad_ioc
    from softioc import asyncio_dispatcher, builder, softioc

    from nanostrain.analysis.sxdm_geometry import bragg_angle
    from nanostrain.sim.nanoprobe import NanoprobeSimulation, ProjectedCrystal

    builder.SetDeviceName(prefix + "I0")
    builder.aIn("Flux", initial_value=flux, PREC=1)

    builder.SetDeviceName(prefix + "XRF")
    acquire_time = builder.aOut("AcquireTime", initial_value=0.1, PREC=3)
    counts = builder.aIn("C1_ROI1:Value_RBV", initial_value=0.0, PREC=1)

    async def acquire_xrf(value: int) -> None:
        if value:
            await asyncio.sleep(acquire_time.get())
            counts.set(xrf_rate * acquire_time.get())
            xrf_acquire.set(0, process=False)

    xrf_acquire = builder.boolOut("Acquire", ZNAM="Done", ONAM="Acquire", initial_value=0,
                                  on_update=acquire_xrf, blocking=True)

    crystal = ProjectedCrystal.from_maps(np.full((3, 3), d_A), 0.0, theta_xz_deg, np.ones((3, 3)), (-1.0, -1.0), 1.0)
    simulation = NanoprobeSimulation(crystal=crystal, drift=lambda theta: (0.0, 0.0), seed=1)
    simulation.point_detector_at(3.0 * d_A)
    theta_bragg = float(bragg_angle(d_A, simulation.geometry.energy_eV)) - theta_xz_deg
    for port, trigger_modes in (("MERLIN", MERLIN_TRIGGER_MODES), ("EIGER", EIGER_TRIGGER_MODES)):
        hdf = ad_ioc.HdfPlugin(f"{prefix}{port}:", simulation.frame_shape)
        stats = StatsPlugin(f"{prefix}{port}:", simulation.frame_shape)
        PixelDriver(f"{prefix}{port}:", trigger_modes, hdf, stats,
                    lambda exposure: simulation.frame(theta_bragg, 0.0, 0.0, exposure))

    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    builder.LoadDatabase()
    softioc.iocInit(dispatcher, enable_pva=False)
    print(f"READY {prefix}", flush=True)
    softioc.non_interactive_ioc()


class StatsPlugin:
    """NDStats records (ADCore NDStats.template, the part ophyd-async's NDStatsIO uses);
    ``Total_RBV`` = sum of each frame while callbacks are enabled."""

    def __init__(self, prefix: str, shape: tuple[int, int]) -> None:
        import ad_ioc
        from softioc import builder

        builder.SetDeviceName(prefix + "Stats1")
        self.r = r = ad_ioc.Records()
        r.nd_array_base("STATS1", shape)
        r.plugin_base("DRV1")
        for name in ("ComputeStatistics", "ComputeCentroid", "ComputeProfiles", "ComputeHistogram"):
            r.rw(name, "bool", 0)
        for name in ("BgdWidth", "CursorX", "CursorY", "HistSize"):
            r.rw(name, "long", 0)
        for name in ("CentroidThreshold", "HistMin", "HistMax"):
            r.rw(name, "float", 0.0)
        r.ro("Total_RBV", "float", 0.0)
        r.ro("ProfileSizeX_RBV", "long", shape[1])
        r.ro("ProfileSizeY_RBV", "long", shape[0])

    def on_frame(self, frame: np.ndarray) -> None:
        if self.r.out["EnableCallbacks"].get():
            self.r.rbv["Total_RBV"].set(float(frame.sum(dtype=np.float64)))


class PixelDriver:
    """ADBase driver records plus TriggerMode (the detector's choices), NumTriggers,
    PhotonEnergy and Armed (ADEiger; served for both); Acquire takes NumImages frames of
    ``render(exposure)`` (Armed = 1 meanwhile) into the HDF5 and NDStats plugins."""

    def __init__(self, prefix: str, trigger_modes, hdf, stats: StatsPlugin, render) -> None:
        import ad_ioc
        from softioc import builder

        self.hdf, self.stats, self.render = hdf, stats, render
        builder.SetDeviceName(prefix + "cam1")
        self.r = r = ad_ioc.Records()
        r.nd_array_base("DRV1", (64, 64))
        r.rw("AcquireTime", "float", 0.1)
        r.rw("AcquirePeriod", "float", 0.1)
        r.rw("NumImages", "long", 1)
        r.rw("ImageMode", "enum", 0, *ad_ioc.IMAGE_MODES)
        r.ro("DetectorState_RBV", "enum", 0, *ad_ioc.AD_STATES)
        self.acquire = r.rw("Acquire", "bool", 0, "Done", "Acquire", on_change=self._acquire, blocking=True)
        r.rw("WaitForPlugins", "bool", 0, rbv=False)
        for name, value in (("Manufacturer_RBV", "nanostrain"), ("Model_RBV", "soft pixel detector"),
                            ("SerialNumber_RBV", "0"), ("SDKVersion_RBV", "n/a"), ("FirmwareVersion_RBV", "n/a")):
            r.ro(name, "string", value)
        r.rw("TriggerMode", "enum", 0, *trigger_modes)
        r.rw("NumTriggers", "long", 1)
        r.rw("PhotonEnergy", "float", 12000.0)
        r.ro("Armed", "bool", 0)

    async def _acquire(self, value: int) -> None:
        import ad_ioc

        if not value:
            return  # a stop: seen by the running acquisition through VAL
        r = self.r
        n_frames = r.out["NumImages"].get() if ad_ioc.IMAGE_MODES[r.out["ImageMode"].get()] == "Multiple" else 1
        r.rbv["DetectorState_RBV"].set(ad_ioc.AD_STATES.index("Acquire"))
        r.rbv["Armed"].set(1)
        taken = 0
        while taken < n_frames and ad_ioc.current_value(self.acquire):
            exposure = r.out["AcquireTime"].get()
            await asyncio.sleep(exposure)
            frame = self.render(exposure)
            counter = r.out["ArrayCounter"].get() + 1
            r.out["ArrayCounter"].set(counter)
            r.rbv["UniqueId_RBV"].set(counter)
            self.stats.on_frame(frame)
            self.hdf.on_frame(frame, counter)
            taken += 1
        r.rbv["Armed"].set(0)
        r.rbv["DetectorState_RBV"].set(ad_ioc.AD_STATES.index("Idle" if taken >= n_frames else "Aborted"))
        r.rbv["Acquire_RBV"].set(0)
        self.acquire.set(0, process=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=("motors", "softioc"))
    parser.add_argument("prefix")
    parser.add_argument("--flux", type=float, default=1e9, help="I0:Flux, photons/s")
    parser.add_argument("--xrf-rate", type=float, default=1000.0, help="XRF ROI counts per second")
    parser.add_argument("--d-A", type=float, default=14.0 / 3.0, help="d of the crystal the detectors see (A)")
    parser.add_argument("--theta-xz", type=float, default=0.0, help="its rotation theta_xz (deg)")
    args = parser.parse_args()
    if args.server == "motors":
        from motor_ioc import serve_motors  # beside this script, run as a file

        serve_motors(args.prefix, MOTORS)
    else:
        serve_softioc(args.prefix, args.flux, args.xrf_rate, args.d_A, args.theta_xz)


if __name__ == "__main__":
    main()
