"""Detector frames for callbacks, live or in replay, through one API.

A StreamDatum document says "frames ``indices.start:indices.stop`` of the file named by
StreamResource ``uid`` belong to events ``seq_nums.start:seq_nums.stop``". Where the
frames are read from depends on when the callback runs:

* live: `HDF5FrameSource` opens the file the detector is writing (SWMR, refreshed) and
  reads the frames as soon as their StreamDatum arrives;
* replay: `TiledFrameSource` reads the same frames in large blocks, from the file where
  this machine sees it, else through the catalog (``run[stream][data_key][seq_num - 1]``),
  so a replay needs no access to the files.

Both yield ``(seq_num, frame)`` pairs from bounded blocks, so a thousand 2048x2048 frames
never sit in memory at once. Both verify what they read: a file that is missing, cannot
be read, is truncated, holds fewer frames than the StreamDatum names or frames never
written raises `DetectorFileError` naming the file (the analysis then fails its derived
run with that reason), never frames of zeros.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import numpy as np

Document = dict[str, Any]


class FrameSource(Protocol):
    """Where a callback gets the frames a StreamDatum points at.

    A source that holds open handles (files) also has a ``close()`` method, which the
    analysis calls at the raw run's stop or when it fails; the next run reopens.
    """

    def iter_frames(
        self, stream: str, resource: Document, datum: Document
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(seq_num, frame)`` for every frame of ``datum``, in seq_num order."""
        ...


class DetectorFileError(RuntimeError):
    """A detector file a run refers to is missing, unreadable or holds too few frames."""


def _span(datum: Document, key: str) -> range:
    return range(datum[key]["start"], datum[key]["stop"])


def resource_path(resource: Document) -> Path:
    """Local path of a StreamResource ``file://host/path`` URI."""
    parts = urlsplit(resource["uri"])
    if parts.scheme not in ("file", ""):
        raise ValueError(f"Cannot open {resource['uri']!r} as a local file.")
    return Path(unquote(parts.path))


def written_frames(dataset) -> np.ndarray | None:
    """Per frame of a chunked ``dataset``, whether the chunk holding its first pixel was
    ever allocated (h5py reads an unallocated chunk as the fill value, zeros), from one
    pass over the file's chunk index (``H5Dchunk_iter``: 8 ms for 12,096 chunks, where one
    lookup per frame costs 0.1-0.7 ms each and grows with the file). None for a contiguous
    dataset (every frame is written)."""
    if dataset.chunks is None:
        return None
    written = np.zeros(dataset.shape[0], dtype=bool)
    depth = dataset.chunks[0]

    def mark(info) -> None:
        if not any(info.chunk_offset[1:]):
            written[info.chunk_offset[0] : info.chunk_offset[0] + depth] = True

    dataset.id.chunk_iter(mark)
    return written


def _unwritten_frames(dataset, indices: range, written: np.ndarray | None = None) -> list[int]:
    """Frames of ``indices`` whose first pixel's chunk was never allocated: from
    ``written`` (`written_frames`, made once for a file that no longer grows) or one
    lookup per frame (a file being written); [] for a contiguous dataset."""
    if dataset.chunks is None:
        return []
    if written is not None:
        return [i for i in indices if not written[i]]
    origin = (0,) * (dataset.ndim - 1)
    return [i for i in indices if dataset.id.get_chunk_info_by_coord((i, *origin)).byte_offset is None]


def check_frames(path: Path, dataset, indices: range, written: np.ndarray | None = None) -> None:
    """Raise `DetectorFileError` unless ``dataset`` (of the file at ``path``) holds every
    frame of ``indices``, each written (``written``: `written_frames` of a finished file)."""
    if len(indices) and dataset.shape[0] < indices.stop:
        raise DetectorFileError(
            f"detector file {path} holds {dataset.shape[0]} frames; the run needs frames "
            f"{indices.start} to {indices.stop - 1}"
        )
    unwritten = _unwritten_frames(dataset, indices, written)
    if unwritten:
        raise DetectorFileError(
            f"detector file {path}: frames {unwritten} were never written "
            "(their chunks are missing: they would read as the fill value)"
        )


def local_file(resource: Document) -> Path | None:
    """The path of StreamResource ``resource``'s file if this machine sees its folder
    (the beamline's own machines), else None (a replay elsewhere: the catalog serves it)."""
    try:
        path = resource_path(resource)
    except ValueError:
        return None
    return path if path.parent.is_dir() else None


def _open_dataset(path: Path, resource: Document, swmr: bool = False):
    """``(file, dataset)`` of StreamResource ``resource`` in the file at ``path``; raises
    `DetectorFileError` naming the file. Without ``swmr`` (replay), HDF5 checks the file's
    end on opening: a reader in SWMR mode (a live one, while the detector writes) skips
    that check, so a truncated file would read as zeros."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers the filters of compressed detector files, e.g. bitshuffle/LZ4)

    try:
        handle = h5py.File(path, "r", swmr=swmr)
    except OSError as error:
        raise DetectorFileError(f"detector file {path}: cannot read {resource['parameters']['dataset']!r}: {error}") from error
    try:
        return handle, handle[resource["parameters"]["dataset"]]
    except KeyError as error:
        handle.close()
        raise DetectorFileError(f"detector file {path}: cannot read {resource['parameters']['dataset']!r}: {error}") from error


def verify_local_file(resource: Document, indices: range) -> None:
    """Check the file of StreamResource ``resource`` for ``indices`` if it is on this
    machine (`local_file`): it must exist, open without SWMR and pass `check_frames`. A
    file whose folder is elsewhere is left to the catalog. Raises `DetectorFileError`."""
    path = local_file(resource)
    if path is None:
        return
    handle, dataset = _open_dataset(path, resource)
    with handle:
        check_frames(path, dataset, indices, written_frames(dataset))


def frames_per_block(frame_shape: tuple[int, ...], dtype, block_bytes: int) -> int:
    """How many frames of ``frame_shape`` and ``dtype`` fit in ``block_bytes`` (at least 1)."""
    return max(1, int(block_bytes) // max(1, int(np.prod(frame_shape)) * np.dtype(dtype).itemsize))


class HDF5FrameSource:
    """Reads frames from the HDF5 files detectors are writing (SWMR), for live callbacks;
    compressed frames too (hdf5plugin's filters: bitshuffle/LZ4 as areaDetector writes)."""

    def __init__(self, chunk: int = 8):
        self.chunk = chunk
        self._files: dict[str, Any] = {}

    def _dataset(self, resource: Document):
        uid, path = resource["uid"], resource_path(resource)
        if uid not in self._files:
            self._files[uid] = _open_dataset(path, resource, swmr=True)[0]
        try:
            dataset = self._files[uid][resource["parameters"]["dataset"]]
            dataset.refresh()
        except (OSError, KeyError) as error:
            raise DetectorFileError(f"detector file {path}: cannot read {resource['parameters']['dataset']!r}: {error}") from error
        return dataset

    def iter_frames(
        self, stream: str, resource: Document, datum: Document
    ) -> Iterator[tuple[int, np.ndarray]]:
        dataset = self._dataset(resource)
        seq_nums, indices = _span(datum, "seq_nums"), _span(datum, "indices")
        if len(indices) != len(seq_nums):
            raise ValueError("Only one frame per event is supported by HDF5FrameSource.")
        check_frames(resource_path(resource), dataset, indices)
        for lo in range(0, len(indices), self.chunk):
            try:
                block = dataset[indices[lo] : indices[min(lo + self.chunk, len(indices)) - 1] + 1]
            except OSError as error:
                raise DetectorFileError(f"detector file {resource_path(resource)}: cannot read frames: {error}") from error
            for offset, frame in enumerate(block):
                yield seq_nums[lo + offset], frame

    def close(self) -> None:
        """Close every file opened for the run (the writer may then reopen or delete it)."""
        for handle in self._files.values():
            handle.close()
        self._files.clear()


class TiledFrameSource:
    """Reads a stored run's frames for replay and offline analysis, in large blocks.

    * Where this machine sees the detector file (`local_file`), straight from it: opened
      once per file without SWMR (HDF5's end-of-file check then catches a truncated file)
      and verified (`check_frames`) before each datum's frames are read.
    * Elsewhere through the catalog, ``run[stream][data_key][lo:hi]``: one request of
      about ``block_bytes`` per block (Tiled's binary array transfer), reading ahead of
      the datum at hand (the next datums' frames then come from that block); the array
      client and the last block are kept per (stream, data key).

    Blocks of about ``block_bytes`` (default 64 MiB: ~500 frames of 256x256 uint16, 4 of
    2048x2048 float64) bound the memory whatever the datum's size. ``local_files=False``
    reads through the catalog even where the files are visible (their frames are still
    verified in the file first). `close` closes the files opened (the analysis calls it at
    the raw run's stop); a later read reopens them.
    """

    def __init__(self, run, block_bytes: int = 64 * 2**20, local_files: bool = True):
        if block_bytes < 1:
            raise ValueError(f"block_bytes must be positive, got {block_bytes!r}")
        self.run = run
        self.block_bytes = block_bytes
        self.local_files = local_files
        self._arrays: dict[tuple[str, str], Any] = {}
        self._blocks: dict[tuple[str, str], tuple[int, np.ndarray]] = {}
        self._files: dict[str, tuple[Any, Any, np.ndarray | None]] = {}  # file, dataset, written_frames

    def iter_frames(
        self, stream: str, resource: Document, datum: Document
    ) -> Iterator[tuple[int, np.ndarray]]:
        path = local_file(resource)
        if self.local_files and path is not None:
            yield from self._from_file(path, resource, datum)
        else:
            verify_local_file(resource, _span(datum, "indices"))
            yield from self._from_catalog(stream, resource, datum)

    def _from_file(self, path: Path, resource: Document, datum: Document) -> Iterator[tuple[int, np.ndarray]]:
        seq_nums, indices = _span(datum, "seq_nums"), _span(datum, "indices")
        if len(indices) != len(seq_nums):
            raise ValueError("Only one frame per event is supported by TiledFrameSource.")
        if resource["uid"] not in self._files:
            handle, dataset = _open_dataset(path, resource)
            self._files[resource["uid"]] = (handle, dataset, written_frames(dataset))
        _, dataset, written = self._files[resource["uid"]]
        check_frames(path, dataset, indices, written)
        step = frames_per_block(dataset.shape[1:], dataset.dtype, self.block_bytes)
        for lo in range(0, len(indices), step):
            hi = min(lo + step, len(indices))
            try:
                block = dataset[indices[lo] : indices[hi - 1] + 1]
            except OSError as error:
                raise DetectorFileError(f"detector file {path}: cannot read frames: {error}") from error
            for offset, frame in enumerate(block):
                yield seq_nums[lo + offset], frame

    def _from_catalog(self, stream: str, resource: Document, datum: Document) -> Iterator[tuple[int, np.ndarray]]:
        seq_nums = _span(datum, "seq_nums")
        try:
            array = self._array(stream, resource["data_key"])
            if len(seq_nums) and array.shape[0] < seq_nums.stop - 1:
                raise DetectorFileError(
                    f"the catalog holds {array.shape[0]} frames of {resource['data_key']!r}; "
                    f"the run needs frames {seq_nums.start} to {seq_nums.stop - 1}"
                )
            for seq_num in seq_nums:
                yield seq_num, self._frame(stream, resource["data_key"], array, seq_num)
        except DetectorFileError:
            raise
        except Exception as error:  # the server's answer for a missing or damaged file is an HTTP 500
            raise DetectorFileError(
                f"detector file {resource['uri']} (frames {seq_nums.start} to {seq_nums.stop - 1} of "
                f"{resource['data_key']!r}) cannot be read through the catalog: {type(error).__name__}: {error}"
            ) from error

    def _array(self, stream: str, data_key: str):
        if (stream, data_key) not in self._arrays:
            self._arrays[stream, data_key] = self.run[stream][data_key]
        return self._arrays[stream, data_key]

    def _frame(self, stream: str, data_key: str, array, seq_num: int) -> np.ndarray:
        """Frame ``seq_num`` of the catalog's ``array``, from the block read last or from a
        new block that starts at it and reads ahead (a run's datums come in order, many of
        a few frames each: one request per block, not per datum)."""
        first, block = self._blocks.get((stream, data_key), (0, None))
        if block is None or not first <= seq_num < first + len(block):
            step = frames_per_block(array.shape[-2:], array.dtype, self.block_bytes)
            stop = min(seq_num - 1 + step, array.shape[0])
            block = np.asarray(array[seq_num - 1 : stop])
            block = block.reshape(stop - seq_num + 1, *block.shape[-2:])
            first = seq_num
            self._blocks[stream, data_key] = (first, block)
        return block[seq_num - first]

    def close(self) -> None:
        """Close the detector files opened and drop the blocks read (a later read
        reopens and reads again)."""
        for handle, *_ in self._files.values():
            handle.close()
        self._files.clear()
        self._blocks.clear()
