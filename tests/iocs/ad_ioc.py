"""A soft areaDetector IOC: an ADPerkinElmer driver and an NDFileHDF5 plugin, served over
Channel Access by pythonSoftIOC, writing real HDF5 files.

It serves the records the ophyd-async areaDetector classes connect to (ADCore
NDArrayBase/ADBase/NDPluginBase/NDFile/NDFileHDF5 templates, and the PerkinElmer records
of `nanostrain.devices.xrd.PerkinElmerDriverIO`) under ``<prefix>cam1:`` and
``<prefix>HDF1:``, with write records echoed to their ``_RBV`` readbacks, and behaves as
the real IOC does where ophyd-async depends on it:

* ``cam1:Acquire`` and ``HDF1:Capture`` are busy records: a put of 1 with callback
  completes when the acquisition (NumImages frames in Multiple mode, 1 in Single, until
  stopped in Continuous) or the capture (NumCapture frames, 0 = until stopped) is over;
  a put of 0 stops them. DetectorState_RBV goes Acquire -> Idle (Aborted when stopped).
* Every frame (`nanostrain.sim.powder.PowderRenderer`: pristine cathode, Al current
  collector, on a PerkinElmer panel binned ``--binning`` x) increments ArrayCounter_RBV;
  while capturing with callbacks enabled, the HDF5 plugin appends it to
  ``/entry/data/data`` (SWMR, chunks of one frame) of the file FullFileName_RBV =
  FileTemplate % (FilePath, FileName, FileNumber), opened at the first frame
  (LazyOpen), and counts NumCaptured_RBV. The dataset is compressed as ``Compression``
  says (None, zlib, LZ4, BSLZ4: `nanostrain.devices.hdf5_compression`; the other
  choices fail the file's creation with a ValueError in the IOC's log; the IOC starts at
  None, as the plugin does). FilePathExists_RBV reflects the folder
  (created when CreateDirectory != 0). FileWriteMode is recorded; every mode streams.
* ``cam1:PEAcquireOffset`` (busy) takes PENumOffsetFrames x AcquireTime and then
  sets PEOffsetAvailable.

Usage: ``python ad_ioc.py PREFIX [--binning N]``; prints ``READY <prefix>`` once serving.
Run it with EPICS_CAS_INTF_ADDR_LIST=127.0.0.1 (and the client with
EPICS_CA_ADDR_LIST=127.0.0.1, EPICS_CA_AUTO_ADDR_LIST=NO) to keep it on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import time

import h5py
import numpy as np
from softioc import asyncio_dispatcher, builder, softioc

from nanostrain.analysis.xrd import perkinelmer_geometry
from nanostrain.devices.hdf5_compression import dataset_options
from nanostrain.sim.cathode import LatticeState
from nanostrain.sim.powder import PowderRenderer

DATA_PATH = "/entry/data/data"
AD_STATES = ("Idle", "Acquire", "Readout", "Correct", "Saving", "Aborting", "Error",
             "Waiting", "Initializing", "Disconnected", "Aborted")
DATA_TYPES = ("Int8", "UInt8", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float32", "Float64")
COLOR_MODES = ("Mono", "Bayer", "RGB1", "RGB2", "RGB3", "YUV444", "YUV422", "YUV421")
IMAGE_MODES = ("Single", "Multiple", "Continuous", "Average")
TRIGGER_MODES = ("Internal", "External", "Free Running", "Soft Trigger")
SYNC_MODES = ("DDD Clear", "DDD No Clear", "Linewise", "Framewise", "AutoTrigger")
WRITE_MODES = ("Single", "Capture", "Stream")
COMPRESSIONS = ("None", "N-bit", "szip", "zlib", "Blosc", "BSLZ4", "LZ4", "JPEG")
ENABLE = ("Disable", "Enable")
PATH_LENGTH = 1024


def current_value(record) -> object:
    """The VAL field now: a put to a busy (PACT) record writes VAL at once and defers
    processing, so `record.get()` (the last processed value) does not show a stop yet."""
    return record._epics_to_value(record._read_value(record._record))


class Records:
    """Record factory for one areaDetector port (prefix already set with SetDeviceName)."""

    def __init__(self) -> None:
        self.out: dict[str, object] = {}
        self.rbv: dict[str, object] = {}

    def ro(self, name: str, kind: str, initial, *choices: str, **fields):
        """A read-only record ``name`` (kind: long, float, bool, enum, string, path)."""
        self.rbv[name] = _record(kind, False, name, initial, choices, **fields)
        return self.rbv[name]

    def rw(self, name: str, kind: str, initial, *choices: str, on_change=None, rbv: bool = True, **fields):
        """A write record ``name`` and, with ``rbv``, its readback ``name_RBV``; a write
        updates the readback, then calls ``on_change(value)`` (sync or async)."""
        readback = _record(kind, False, f"{name}_RBV", initial, choices) if rbv else None

        async def update(value):
            if readback is not None:
                readback.set(value)
            if on_change is not None:
                result = on_change(value)
                if asyncio.iscoroutine(result):
                    await result

        self.out[name] = _record(kind, True, name, initial, choices, on_update=update, **fields)
        if readback is not None:
            self.rbv[f"{name}_RBV"] = readback
        return self.out[name]

    def nd_array_base(self, port: str, shape: tuple[int, int]) -> None:
        """NDArrayBase.template records (drivers and plugins)."""
        self.ro("PortName_RBV", "string", port)
        self.ro("UniqueId_RBV", "long", 0)
        self.rw("NDAttributesFile", "path", "", rbv=False)
        for axis, size in (("X", shape[1]), ("Y", shape[0]), ("Z", 0)):
            self.ro(f"ArraySize{axis}_RBV", "long", size)
        for index, size in enumerate((shape[1], shape[0], 0)):
            self.ro(f"ArraySize{index}_RBV", "long", size)
        self.ro("ColorMode_RBV", "enum", 0, *COLOR_MODES)
        self.ro("DataType_RBV", "enum", DATA_TYPES.index("UInt16"), *DATA_TYPES)
        self.rw("ArrayCounter", "long", 0)
        self.ro("ADCoreVersion_RBV", "string", "3.12.1")
        self.ro("DriverVersion_RBV", "string", "2.11.0")

    def plugin_base(self, source_port: str) -> None:
        """NDPluginBase.template records."""
        self.rw("NDArrayPort", "string", source_port)
        self.rw("EnableCallbacks", "bool", 0, *ENABLE)
        self.rw("NDArrayAddress", "long", 0)
        self.rw("QueueSize", "long", 20)


def _record(kind: str, output: bool, name: str, initial, choices, **fields):
    """One softioc record of the given kind; ``initial`` is an index for enums."""
    if kind == "long":
        make = builder.longOut if output else builder.longIn
    elif kind == "float":
        make = builder.aOut if output else builder.aIn
        fields.setdefault("PREC", 4)
    elif kind == "bool":
        make = builder.boolOut if output else builder.boolIn
        fields.update(ZNAM=choices[0] if choices else "No", ONAM=choices[1] if choices else "Yes")
    elif kind == "enum":
        return (builder.mbbOut if output else builder.mbbIn)(name, *choices, initial_value=initial, **fields)
    elif kind == "string":
        make = builder.stringOut if output else builder.stringIn
    elif kind == "path":
        make = builder.longStringOut if output else builder.longStringIn
        fields.setdefault("length", PATH_LENGTH)
    else:
        raise ValueError(kind)
    return make(name, initial_value=initial, **fields)


def format_file_name(template: str, path: str, name: str, number: int) -> str:
    """C printf of an areaDetector FileTemplate with (FilePath, FileName, FileNumber)."""
    n_args = len(re.findall(r"%(?!%)[-#0 +]*\d*(?:\.\d+)?[a-zA-Z]", template))
    return template % (path, name, number)[:n_args]


class HdfPlugin:
    """NDFileHDF5 plugin: capture frames into an SWMR HDF5 file."""

    def __init__(self, prefix: str, shape: tuple[int, int]) -> None:
        builder.SetDeviceName(prefix + "HDF1")
        self.r = r = Records()
        r.nd_array_base("FileHDF1", shape)
        r.plugin_base("PE1")
        r.rw("FilePath", "path", "", on_change=self._path_changed, blocking=True)
        r.rw("FileName", "path", "")
        r.ro("FilePathExists_RBV", "bool", 0)
        r.rw("FileTemplate", "path", "%s%s_%3.3d.h5")
        r.ro("FullFileName_RBV", "path", "")
        r.rw("FileNumber", "long", 0, rbv=False)
        r.rw("AutoIncrement", "bool", 0, rbv=False)
        r.rw("FileWriteMode", "enum", 0, *WRITE_MODES)
        r.rw("NumCapture", "long", 1)
        r.ro("NumCaptured_RBV", "long", 0)
        self.capture = r.rw("Capture", "bool", 0, "Done", "Capture", on_change=self._capture, blocking=True)
        r.ro("ArraySize0", "long", shape[1])
        r.ro("ArraySize1", "long", shape[0])
        r.rw("CreateDirectory", "long", 0, rbv=False)
        r.rw("PositionMode", "bool", 0)
        r.rw("Compression", "enum", 0, *COMPRESSIONS)
        r.rw("NumExtraDims", "long", 0)
        r.rw("SWMRMode", "bool", 0)
        r.rw("FlushNow", "bool", 0, rbv=False, on_change=self._flush, always_update=True)
        r.rw("XMLFileName", "path", "")
        r.rw("NumFramesChunks", "long", 0)
        r.rw("ChunkSizeAuto", "bool", 0)
        r.rw("LazyOpen", "bool", 0)
        self.file: h5py.File | None = None
        self.captured = 0
        self._done: asyncio.Event | None = None

    def _path_changed(self, path: str) -> None:
        if not os.path.isdir(path) and self.r.out["CreateDirectory"].get() != 0:
            os.makedirs(path, exist_ok=True)
        self.r.rbv["FilePathExists_RBV"].set(int(os.path.isdir(path) and os.access(path, os.W_OK)))

    async def _capture(self, value: int) -> None:
        if not value:
            return  # a stop: seen by the running capture below, through VAL
        self.captured = 0
        self.r.rbv["NumCaptured_RBV"].set(0)
        self._done = asyncio.Event()
        target = self.r.out["NumCapture"].get()
        while current_value(self.capture) and (target == 0 or self.captured < target):
            try:
                await asyncio.wait_for(self._done.wait(), 0.02)
            except TimeoutError:
                pass
        self._close()
        self.r.rbv["Capture_RBV"].set(0)
        self.capture.set(0, process=False)

    def _open(self) -> None:
        out = self.r.out
        name = format_file_name(out["FileTemplate"].get(), out["FilePath"].get(), out["FileName"].get(),
                                out["FileNumber"].get())
        self.file = h5py.File(name, "w", libver="latest")
        shape = (self.r.rbv["ArraySize1"].get(), self.r.rbv["ArraySize0"].get())
        compression = COMPRESSIONS[out["Compression"].get()]
        self.data = self.file.create_dataset(
            DATA_PATH, shape=(0, *shape), maxshape=(None, *shape), dtype="<u2", **dataset_options(compression, shape)
        )
        if out["SWMRMode"].get():
            self.file.swmr_mode = True
        self.r.rbv["FullFileName_RBV"].set(name)
        if out["AutoIncrement"].get():
            out["FileNumber"].set(out["FileNumber"].get() + 1, process=False)

    def _close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def _flush(self, value: int) -> None:
        if value and self.file is not None:
            self.file.flush()

    def on_frame(self, frame: np.ndarray, unique_id: int) -> None:
        """An NDArray from the driver: count it and, while capturing, write it."""
        r = self.r
        if not r.out["EnableCallbacks"].get():
            return
        r.out["ArrayCounter"].set(r.out["ArrayCounter"].get() + 1)
        r.rbv["UniqueId_RBV"].set(unique_id)
        if not (r.rbv["Capture_RBV"].get() and current_value(self.capture)):
            return
        if self.file is None:
            self._open()
        self.data.resize(self.captured + 1, axis=0)
        self.data[self.captured] = frame
        self.data.flush()
        self.captured += 1
        r.rbv["NumCaptured_RBV"].set(self.captured)
        target = r.out["NumCapture"].get()
        if target and self.captured >= target and self._done is not None:
            self._done.set()


class PerkinElmerDriver:
    """ADPerkinElmer driver records; frames from a PowderRenderer."""

    def __init__(self, prefix: str, binning: int, hdf: HdfPlugin) -> None:
        self.renderer = PowderRenderer(perkinelmer_geometry(1.5, 0.1665, binning))
        self.lattice = LatticeState(np.array([2.87]), np.array([14.2]), np.array([1.0]))
        self.rng = np.random.default_rng(0)
        self.hdf = hdf
        builder.SetDeviceName(prefix + "cam1")
        self.r = r = Records()
        r.nd_array_base("PE1", self.renderer.shape)
        r.rw("AcquireTime", "float", 0.1)
        r.rw("AcquirePeriod", "float", 0.1)
        r.rw("NumImages", "long", 1)
        r.rw("ImageMode", "enum", 0, *IMAGE_MODES)
        r.ro("DetectorState_RBV", "enum", 0, *AD_STATES)
        self.acquire = r.rw("Acquire", "bool", 0, "Done", "Acquire", on_change=self._acquire, blocking=True)
        r.rw("WaitForPlugins", "bool", 0, rbv=False)
        for name, value in (("Manufacturer_RBV", "Perkin Elmer"), ("Model_RBV", "XRD 1621 (soft IOC)"),
                            ("SerialNumber_RBV", "0"), ("SDKVersion_RBV", "XISL"),
                            ("FirmwareVersion_RBV", "n/a")):
            r.ro(name, "string", value)
        r.rw("TriggerMode", "enum", 0, *TRIGGER_MODES)
        r.rw("PESyncMode", "enum", SYNC_MODES.index("Framewise"), *SYNC_MODES)
        self.acquire_offset = r.rw("PEAcquireOffset", "bool", 0, "Done", "Acquire", rbv=False,
                                   on_change=self._acquire_offset, blocking=True)
        r.rw("PENumOffsetFrames", "long", 10, rbv=False)
        r.rw("PEUseOffset", "bool", 0, *ENABLE, rbv=False)
        r.ro("PEOffsetAvailable", "bool", 0, "Not Available", "Available")

    def _state(self, name: str) -> None:
        self.r.rbv["DetectorState_RBV"].set(AD_STATES.index(name))

    def frame(self, exposure_s: float) -> np.ndarray:
        counts = self.renderer.render(self.lattice, 0.0, 4e4, exposure_s, self.rng)
        return np.minimum(counts, np.iinfo(np.uint16).max).astype(np.uint16)

    async def _acquire(self, value: int) -> None:
        if not value:
            return  # a stop: seen by the running acquisition below, through VAL
        r = self.r
        mode = IMAGE_MODES[r.out["ImageMode"].get()]
        n_frames = {"Multiple": r.out["NumImages"].get(), "Continuous": math.inf}.get(mode, 1)
        self._state("Acquire")
        taken = 0
        while taken < n_frames and current_value(self.acquire):
            exposure = r.out["AcquireTime"].get()
            start = time.monotonic()
            await asyncio.sleep(exposure)
            frame = self.frame(exposure)
            counter = r.out["ArrayCounter"].get() + 1
            r.out["ArrayCounter"].set(counter)
            r.rbv["UniqueId_RBV"].set(counter)
            self.hdf.on_frame(frame, counter)
            taken += 1
            await asyncio.sleep(max(0.0, r.out["AcquirePeriod"].get() - (time.monotonic() - start)))
        self._state("Idle" if taken >= n_frames else "Aborted")
        r.rbv["Acquire_RBV"].set(0)
        self.acquire.set(0, process=False)

    async def _acquire_offset(self, value: int) -> None:
        if not value:
            return
        await asyncio.sleep(self.r.out["PENumOffsetFrames"].get() * self.r.out["AcquireTime"].get())
        self.r.rbv["PEOffsetAvailable"].set(1)
        self.acquire_offset.set(0, process=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefix", help="PV prefix, e.g. 'XF:17BM-ES{PE:1}' (records <prefix>cam1:..., <prefix>HDF1:...)")
    parser.add_argument("--binning", type=int, default=16, help="panel binning (16: 128 x 128 pixels)")
    args = parser.parse_args()
    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    hdf = HdfPlugin(args.prefix, (2048 // args.binning, 2048 // args.binning))
    PerkinElmerDriver(args.prefix, args.binning, hdf)
    builder.LoadDatabase()
    softioc.iocInit(dispatcher, enable_pva=False)
    print(f"READY {args.prefix}", flush=True)
    softioc.non_interactive_ioc()


if __name__ == "__main__":
    main()
