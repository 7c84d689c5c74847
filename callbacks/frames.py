"""Detector frames for callbacks, live or in replay, through one API.

A StreamDatum document says "frames ``indices.start:indices.stop`` of the file named by
StreamResource ``uid`` belong to events ``seq_nums.start:seq_nums.stop``". Where the
frames are read from depends on when the callback runs:

* live: `HDF5FrameSource` opens the file the detector is writing (SWMR, refreshed) and
  reads the frames as soon as their StreamDatum arrives;
* replay: `TiledFrameSource` reads the same frames through the catalog
  (``run[stream][data_key][seq_num - 1]``), so a replay needs no access to the files.

Both yield ``(seq_num, frame)`` pairs in small chunks, so a thousand 2048x2048 frames
never sit in memory at once.
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


def _span(datum: Document, key: str) -> range:
    return range(datum[key]["start"], datum[key]["stop"])


def resource_path(resource: Document) -> Path:
    """Local path of a StreamResource ``file://host/path`` URI."""
    parts = urlsplit(resource["uri"])
    if parts.scheme not in ("file", ""):
        raise ValueError(f"Cannot open {resource['uri']!r} as a local file.")
    return Path(unquote(parts.path))


class HDF5FrameSource:
    """Reads frames from the HDF5 files detectors are writing (SWMR), for live callbacks;
    compressed frames too (hdf5plugin's filters: bitshuffle/LZ4 as areaDetector writes)."""

    def __init__(self, chunk: int = 8):
        self.chunk = chunk
        self._files: dict[str, Any] = {}

    def _dataset(self, resource: Document):
        import h5py
        import hdf5plugin  # noqa: F401  (registers the filters of compressed detector files, e.g. bitshuffle/LZ4)

        uid = resource["uid"]
        if uid not in self._files:
            self._files[uid] = h5py.File(resource_path(resource), "r", swmr=True)
        dataset = self._files[uid][resource["parameters"]["dataset"]]
        dataset.refresh()
        return dataset

    def iter_frames(
        self, stream: str, resource: Document, datum: Document
    ) -> Iterator[tuple[int, np.ndarray]]:
        dataset = self._dataset(resource)
        seq_nums, indices = _span(datum, "seq_nums"), _span(datum, "indices")
        if len(indices) != len(seq_nums):
            raise ValueError("Only one frame per event is supported by HDF5FrameSource.")
        for lo in range(0, len(indices), self.chunk):
            block = dataset[indices[lo] : indices[min(lo + self.chunk, len(indices)) - 1] + 1]
            for offset, frame in enumerate(block):
                yield seq_nums[lo + offset], frame

    def close(self) -> None:
        """Close every file opened for the run (the writer may then reopen or delete it)."""
        for handle in self._files.values():
            handle.close()
        self._files.clear()


class TiledFrameSource:
    """Reads frames through a catalog run (a `BlueskyRun` Tiled client), for replay.

    It opens nothing of its own (the run's client and its connection belong to the
    caller), hence no ``close()``.
    """

    def __init__(self, run, chunk: int = 8):
        self.run = run
        self.chunk = chunk

    def iter_frames(
        self, stream: str, resource: Document, datum: Document
    ) -> Iterator[tuple[int, np.ndarray]]:
        array = self.run[stream][resource["data_key"]]
        seq_nums = _span(datum, "seq_nums")
        for lo in range(0, len(seq_nums), self.chunk):
            hi = min(lo + self.chunk, len(seq_nums))
            block = np.asarray(array[seq_nums[lo] - 1 : seq_nums[hi - 1]])
            block = block.reshape(hi - lo, *block.shape[-2:])
            for offset, frame in enumerate(block):
                yield seq_nums[lo + offset], frame
