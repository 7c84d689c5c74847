"""A simulated area detector that writes HDF5 the way an areaDetector HDF5 plugin does.

`SimAreaDetector` is an ophyd-async `StandardDetector`: it is prepared, triggered, staged
and unstaged like a real one, writes every frame into an SWMR HDF5 file
(``/entry/data/data``, shape ``(n, rows, cols)``), and emits StreamResource/StreamDatum
documents, so the catalog, live callbacks and replay see exactly the data shape a real
detector produces. Frames are compressed as an areaDetector HDF5 plugin set to
``Compression = BSLZ4`` writes them (`nanostrain.devices.hdf5_compression`; ``compression``
turns it off). What each frame shows comes from a *renderer*, a callable
``render(exposure_s) -> ndarray`` (or an ``async def``, to read other devices' signals)
supplied by the technique (powder rings from the cathode
simulator, a Bragg peak from the nanoprobe particle, a TXM projection...).

Each technique's simulated twin is a `SimAreaDetector` with its own renderer; the real
EPICS class beside it satisfies the same bluesky protocols, so a plan cannot tell them
apart.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from pathlib import PurePath

import h5py
import numpy as np
from ophyd_async.core import (
    DEFAULT_TIMEOUT,
    DetectorAcquireLogic,
    DetectorDataLogic,
    DetectorTriggerLogic,
    PathProvider,
    SignalR,
    StandardDetector,
    StreamableDataProvider,
    StreamResourceDataProvider,
    StreamResourceInfo,
    TriggerInfo,
    WatchableAsyncStatus,
    soft_signal_r_and_setter,
)

from .hdf5_compression import DEFAULT_COMPRESSION, check_compression, dataset_options

DATA_PATH = "/entry/data/data"

Renderer = Callable[[float], np.ndarray | Awaitable[np.ndarray]]


class _FrameFile:
    """An SWMR HDF5 file growing one frame at a time, as the AD HDF5 plugin writes it
    (one frame per chunk, compressed with NDFileHDF5 ``compression``)."""

    def __init__(self, path: PurePath, shape: tuple[int, int], dtype: np.dtype, compression: str):
        # "w-": a new file; an existing one (recorded frames) is never truncated
        self.file = h5py.File(path, "w-", libver="latest")
        self.data = self.file.create_dataset(
            DATA_PATH,
            shape=(0, *shape),
            maxshape=(None, *shape),
            dtype=dtype,
            **dataset_options(compression, shape),
        )
        self.file.swmr_mode = True
        self.count = 0

    def append(self, frame: np.ndarray) -> None:
        self.data.resize(self.count + 1, axis=0)
        self.data[self.count] = frame
        self.data.flush()
        self.count += 1

    def truncate(self, count: int) -> None:
        """Keep the first ``count`` frames."""
        if count < self.count:
            self.data.resize(count, axis=0)
            self.data.flush()
            self.count = count

    def close(self) -> None:
        self.file.close()


class _FrameWriter:
    """Shared state of the three detector logics: acquisition settings and the open file."""

    def __init__(self, render: Renderer, shape: tuple[int, int], dtype: np.dtype, time_scale: float,
                 compression: str):
        self.render = render
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.time_scale = time_scale
        self.compression = compression
        self.exposure_s = 0.1
        self.period_s = 0.1
        self.n_frames = 1
        self.file: _FrameFile | None = None
        self.frames_written, self._set_frames_written = soft_signal_r_and_setter(int)

    def open(self, path: PurePath) -> None:
        self.file = _FrameFile(path, self.shape, self.dtype, self.compression)
        self._set_frames_written(0)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def truncate(self, count: int) -> None:
        """Keep the first ``count`` frames of the open file."""
        self.file.truncate(count)
        self._set_frames_written(self.file.count)

    async def acquire(self) -> None:
        if self.file is None:
            raise RuntimeError("The detector was not staged and prepared: no file is open.")
        for _ in range(self.n_frames):
            await asyncio.sleep(self.period_s * self.time_scale)
            frame = self.render(self.exposure_s)
            if inspect.isawaitable(frame):
                frame = await frame
            frame = np.asarray(frame)
            if frame.shape != self.shape:
                raise ValueError(f"Renderer returned a {frame.shape} frame, detector is {self.shape}.")
            self.file.append(frame.astype(self.dtype, copy=False))
            self._set_frames_written(self.file.count)


class _Trigger(DetectorTriggerLogic):
    def __init__(self, writer: _FrameWriter):
        self.writer = writer

    async def prepare_internal(self, num: int, livetime: float, deadtime: float) -> None:
        self.writer.n_frames = num or 1
        self.writer.exposure_s = livetime or self.writer.exposure_s
        self.writer.period_s = self.writer.exposure_s + deadtime

    async def default_trigger_info(self) -> TriggerInfo:
        return TriggerInfo(livetime=self.writer.exposure_s)


class _Acquire(DetectorAcquireLogic):
    def __init__(self, writer: _FrameWriter):
        self.writer = writer
        self.task: asyncio.Task | None = None

    async def start_acquiring(self) -> None:
        self.task = asyncio.create_task(self.writer.acquire())

    async def wait_for_idle(self) -> None:
        if self.task:
            await self.task

    async def ensure_stopped(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            self.task = None


class _Data(DetectorDataLogic):
    def __init__(self, writer: _FrameWriter, path_provider: PathProvider):
        self.writer = writer
        self.path_provider = path_provider
        self.provider: StreamResourceDataProvider | None = None

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        info = self.path_provider(datakey_name)
        self.writer.open(info.directory_path / f"{info.filename}.h5")
        self.provider = self._provider(info, datakey_name)
        return self.provider

    def drop_unread_frames(self) -> None:
        """Cut the file back to the frames the documents reference: a frame finished
        while the plan was paused belongs to no event (the plan retakes its point), so
        frame i of the file stays the i-th frame of the run."""
        if self.provider is not None and self.writer.file is not None:
            self.writer.truncate(self.provider.last_emitted)

    def _provider(self, info, datakey_name: str) -> StreamResourceDataProvider:
        resource = StreamResourceInfo(
            data_key=datakey_name,
            shape=self.writer.shape,
            chunk_shape=(1, *self.writer.shape),
            dtype_numpy=self.writer.dtype.str,
            parameters={"dataset": DATA_PATH},
        )
        return StreamResourceDataProvider(
            uri=f"{info.directory_uri}{info.filename}.h5",
            resources=[resource],
            mimetype="application/x-hdf5",
            collections_written_signal=self.writer.frames_written,
        )

    async def stop(self) -> None:
        self.writer.close()

    def get_hinted_fields(self, datakey_name: str) -> Sequence[str]:
        return [datakey_name]


class SimAreaDetector(StandardDetector):
    """Simulated area detector: frames from ``render``, HDF5 files from ``path_provider``.

    Parameters
    ----------
    path_provider: where files go (a folder the catalog server can read).
    render: ``render(exposure_s) -> ndarray`` of ``shape`` (sync or async); called once per frame, at the
        moment the frame is taken, so it sees the simulated world as it is then.
    shape: (rows, cols) of a frame.
    dtype: stored pixel type (uint16 for counting detectors, uint32 for integrating).
    time_scale: wall seconds slept per second of exposure (0 = as fast as possible).
    config_sigs: signals recorded in the descriptor configuration (geometry, energy...).
    compression: NDFileHDF5 ``Compression`` of the files (`hdf5_compression.COMPRESSIONS`;
        default ``"BSLZ4"``, lossless; ``"None"`` writes frames as they are); also settable
        later (`compression`), for the next file.
    """

    def __init__(
        self,
        path_provider: PathProvider,
        render: Renderer,
        shape: tuple[int, int],
        dtype: np.dtype | str = "uint32",
        time_scale: float = 0.0,
        config_sigs: Sequence[SignalR] = (),
        name: str = "",
        compression: str = DEFAULT_COMPRESSION,
    ) -> None:
        self._writer = _FrameWriter(render, tuple(shape), np.dtype(dtype), time_scale, check_compression(compression))
        self._acquire, self._data = _Acquire(self._writer), _Data(self._writer, path_provider)
        self._trigger_status: WatchableAsyncStatus | None = None
        self.add_detector_logics(_Trigger(self._writer), self._acquire, self._data)
        self.add_config_signals(*config_sigs)
        super().__init__(name=name)

    def trigger(self) -> WatchableAsyncStatus:
        self._trigger_status = super().trigger()
        return self._trigger_status

    async def pause(self) -> None:
        """bluesky `Pausable`: the RunEngine pauses or suspends. An exposure in
        progress finishes (a real detector's would too; at most DEFAULT_TIMEOUT s more
        than it takes, then it is stopped), so nothing writes while paused."""
        status = self._trigger_status
        if status is not None and not status.done:
            expected_s = self._writer.period_s * self._writer.n_frames * self._writer.time_scale
            await asyncio.wait([status.task], timeout=expected_s + DEFAULT_TIMEOUT)
        await self._acquire.ensure_stopped()

    async def resume(self) -> None:
        """bluesky `Pausable`: the plan goes on and retakes its interrupted point; the
        frame of the exposure the pause interrupted, which no event references, leaves
        the file (frame i of the file stays the i-th frame of the run)."""
        self._data.drop_unread_frames()

    @property
    def compression(self) -> str:
        """NDFileHDF5 ``Compression`` of the next file (``"BSLZ4"``, ``"None"``...)."""
        return self._writer.compression

    @compression.setter
    def compression(self, compression: str) -> None:
        self._writer.compression = check_compression(compression)

    def set_renderer(self, render: Renderer) -> None:
        """Change what the detector sees (e.g. a new sample mounted in the simulation)."""
        self._writer.render = render
