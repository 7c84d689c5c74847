"""Detector frames for callbacks, live or in replay, through one API.

A StreamDatum document says "frames ``indices.start:indices.stop`` of the file named by
StreamResource ``uid`` belong to events ``seq_nums.start:seq_nums.stop``". Where the
frames are read from depends on when the callback runs:

* live: `HDF5FrameSource` opens the file the detector is writing (SWMR, refreshed) and
  reads the frames as soon as their StreamDatum arrives;
* replay: `TiledFrameSource` reads the same frames through the catalog
  (``run[stream][data_key][seq_num - 1]``), so a replay needs no access to the files.

Both yield ``(seq_num, frame)`` pairs in small chunks, so a thousand 2048x2048 frames
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


def _unwritten_frames(dataset, indices: range) -> list[int]:
    """Frames of a chunked ``dataset`` whose chunk holding the frame's first pixel was never
    allocated (h5py would return the fill value, zeros, for them); [] for a contiguous one."""
    if dataset.chunks is None:
        return []
    origin = (0,) * (dataset.ndim - 1)
    return [i for i in indices if dataset.id.get_chunk_info_by_coord((i, *origin)).byte_offset is None]


def check_frames(path: Path, dataset, indices: range) -> None:
    """Raise `DetectorFileError` unless ``dataset`` (of the file at ``path``) holds every
    frame of ``indices``, each written."""
    if len(indices) and dataset.shape[0] < indices.stop:
        raise DetectorFileError(
            f"detector file {path} holds {dataset.shape[0]} frames; the run needs frames "
            f"{indices.start} to {indices.stop - 1}"
        )
    unwritten = _unwritten_frames(dataset, indices)
    if unwritten:
        raise DetectorFileError(
            f"detector file {path}: frames {unwritten} were never written "
            "(their chunks are missing: they would read as the fill value)"
        )


def verify_local_file(resource: Document, indices: range) -> None:
    """Check the file of StreamResource ``resource`` for ``indices`` if it is on this
    machine (its folder exists here): it must exist, open *without* SWMR (a reader in
    SWMR mode skips HDF5's end-of-file check, so a truncated file reads as zeros) and pass
    `check_frames`. A file whose folder is elsewhere (replay on another machine) is left
    to the catalog. Raises `DetectorFileError` naming the file."""
    import h5py

    path = resource_path(resource)
    if not path.parent.is_dir():
        return
    try:
        with h5py.File(path, "r") as handle:
            check_frames(path, handle[resource["parameters"]["dataset"]], indices)
    except (OSError, KeyError) as error:
        raise DetectorFileError(f"detector file {path}: cannot read {resource['parameters']['dataset']!r}: {error}") from error


class HDF5FrameSource:
    """Reads frames from the HDF5 files detectors are writing (SWMR), for live callbacks;
    compressed frames too (hdf5plugin's filters: bitshuffle/LZ4 as areaDetector writes)."""

    def __init__(self, chunk: int = 8):
        self.chunk = chunk
        self._files: dict[str, Any] = {}

    def _dataset(self, resource: Document):
        import h5py
        import hdf5plugin  # noqa: F401  (registers the filters of compressed detector files, e.g. bitshuffle/LZ4)

        uid, path = resource["uid"], resource_path(resource)
        try:
            if uid not in self._files:
                self._files[uid] = h5py.File(path, "r", swmr=True)
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
    """Reads frames through a catalog run (a `BlueskyRun` Tiled client), for replay.

    Where the detector files are on this machine too, each datum's frames are first
    verified in the file (`verify_local_file`): the catalog's HDF5 reader opens files in
    SWMR mode and would serve a truncated file's lost frames as zeros. It keeps no file
    open (the run's client and its connection belong to the caller), hence no ``close()``.
    """

    def __init__(self, run, chunk: int = 8):
        self.run = run
        self.chunk = chunk

    def iter_frames(
        self, stream: str, resource: Document, datum: Document
    ) -> Iterator[tuple[int, np.ndarray]]:
        seq_nums = _span(datum, "seq_nums")
        verify_local_file(resource, _span(datum, "indices"))
        try:
            array = self.run[stream][resource["data_key"]]
            if len(seq_nums) and array.shape[0] < seq_nums.stop - 1:
                raise DetectorFileError(
                    f"the catalog holds {array.shape[0]} frames of {resource['data_key']!r}; "
                    f"the run needs frames {seq_nums.start} to {seq_nums.stop - 1}"
                )
            for lo in range(0, len(seq_nums), self.chunk):
                hi = min(lo + self.chunk, len(seq_nums))
                block = np.asarray(array[seq_nums[lo] - 1 : seq_nums[hi - 1]])
                block = block.reshape(hi - lo, *block.shape[-2:])
                for offset, frame in enumerate(block):
                    yield seq_nums[lo + offset], frame
        except DetectorFileError:
            raise
        except Exception as error:  # the server's answer for a missing or damaged file is an HTTP 500
            raise DetectorFileError(
                f"detector file {resource['uri']} (frames {seq_nums.start} to {seq_nums.stop - 1} of "
                f"{resource['data_key']!r}) cannot be read through the catalog: {type(error).__name__}: {error}"
            ) from error
