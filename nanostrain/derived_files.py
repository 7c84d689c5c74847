"""HDF5 files of the large arrays of derived runs (the `ArraySink` sessions and workers inject).

`HDF5ArraySink` writes ``<folder>/<derived run uid>/<stream>.h5`` (the catalog's folder is
``<data_dir>/derived``, `nanostrain.catalog.CatalogSettings.derived_dir`, which the
catalog server reads and registers files from), one dataset ``/entry/data/<key>`` of
shape ``(n_events, *shape)`` per external data key, as the detectors write their frames:

* compressed with bitshuffle + LZ4 (`nanostrain.devices.hdf5_compression`, the
  detectors' default; Tiled's HDF5 adapter imports the filter);
* one event per chunk (``(1, *shape)``), as the detectors' ``NumFramesChunks = 1``: an
  event's arrays are written once, never rewritten (a chunk of several events would be
  compressed and written again at every event, and HDF5 does not reuse the space the
  older copies held: 11 I(Q) patterns of 3.5 KiB took 239 kB in chunks of 293 events),
  and slicing a few patterns reads only their chunks. An array larger than `CHUNK_BYTES`
  (a tomographic volume) is cut along its first axis into chunks of whole rows (slices)
  of at most that size: HDF5 refuses chunks of 4 GiB, and a reader slicing a few slices
  should not decompress the whole volume;
* an event's array may be lazy (`callbacks.external_arrays.is_lazy_array`: a dask or
  zarr array of an offline analysis): it is read and written `COPY_BYTES` at a time, so
  a volume larger than memory is copied in bounded memory;
* SWMR (``libver="latest"``): the catalog server reads a file while its run goes on, and
  each `HDF5ArrayFile.append` flushes and fsyncs before it returns (as the journal
  fsyncs each StreamDatum), so a StreamDatum published after it never points at data not
  yet in the file, even after a power cut. A writer killed mid-run leaves a file holding
  every row its published datums name.

`nanostrain.callbacks.external_arrays` decides which arrays go there and publishes the
documents; this module only writes files, and `remove_run_folder` deletes a derived run's
files once the catalog no longer holds the run (`nanostrain.schema.catalog.SupersedingWriter`
calls it with each run it deleted).
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .callbacks.external_arrays import DEFAULT_MIN_BYTES, is_lazy_array
from .devices.hdf5_compression import DEFAULT_COMPRESSION, dataset_options

#: where the datasets sit in a file
DATA_GROUP = "/entry/data"

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

CHUNK_BYTES = 8 * 2**20
"""Largest chunk of a dataset (bytes, before compression) when an event's array is cut."""

COPY_BYTES = 256 * 2**20
"""Largest block of a lazy array read into memory at once while it is written."""


def chunk_shape(shape: tuple[int, ...], itemsize: int, chunk_bytes: int = CHUNK_BYTES) -> tuple[int, ...]:
    """The chunk of a dataset of events of ``shape``: one event, cut along the array's
    first axis into whole rows so that a chunk holds at most ``chunk_bytes`` (at least
    one row)."""
    if not shape:
        return (1,)
    row_bytes = itemsize * math.prod(shape[1:])
    rows = max(1, min(shape[0], chunk_bytes // max(1, row_bytes)))
    return (1, rows, *shape[1:])


def _write_row(dataset: h5py.Dataset, index: int, value: Any) -> None:
    """``dataset[index] = value``; a lazy ``value`` block by block (`COPY_BYTES`, whole chunks)."""
    if not is_lazy_array(value) or value.ndim == 0:
        dataset[index] = np.asarray(value)
        return
    rows_per_chunk = dataset.chunks[1]
    row_bytes = dataset.dtype.itemsize * math.prod(value.shape[1:])
    step = max(1, COPY_BYTES // max(1, row_bytes * rows_per_chunk)) * rows_per_chunk
    for first in range(0, value.shape[0], step):
        dataset[index, first: first + step] = np.asarray(value[first: first + step], dtype=dataset.dtype)


def _checked_name(what: str, name: str) -> str:
    """``name`` if it is a plain file or dataset name (no path separator, not ``.``/``..``)."""
    if not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"{what} {name!r} cannot name a file or dataset (letters, digits, '_', '.', '-' only)")
    return name


class HDF5ArrayFile:
    """One stream's file of a derived run (`nanostrain.callbacks.external_arrays.ArrayFile`)."""

    def __init__(self, path: Path, arrays: Mapping[str, tuple[tuple[int, ...], np.dtype]],
                 compression: str = DEFAULT_COMPRESSION):
        self.path = path
        self.uri = f"file://localhost{path}"
        # "w-": a new file; a derived run's uid is new, so an existing file is an error
        self._file = h5py.File(path, "w-", libver="latest")
        self._datasets: dict[str, h5py.Dataset] = {}
        for key, (shape, dtype) in arrays.items():
            self._datasets[key] = self._file.create_dataset(
                f"{DATA_GROUP}/{_checked_name('data key', key)}", shape=(0, *shape), maxshape=(None, *shape),
                dtype=dtype, **{**dataset_options(compression, shape), "chunks": chunk_shape(shape, np.dtype(dtype).itemsize)})
        self._file.swmr_mode = True
        self.count = 0

    def parameters(self, key: str) -> dict[str, Any]:
        dataset = self._datasets[key]
        return {"dataset": dataset.name, "chunk_shape": list(dataset.chunks), "swmr": True}

    def append(self, rows: Mapping[str, Any]) -> int:
        """Write ``rows`` (key -> one event's array, in memory or lazy) as row `count`,
        flush and fsync; its index."""
        if set(rows) != set(self._datasets):
            raise ValueError(f"{self.path}: rows for {sorted(rows)}, the file holds {sorted(self._datasets)}")
        index = self.count
        for key, dataset in self._datasets.items():
            dataset.resize(index + 1, axis=0)
            _write_row(dataset, index, rows[key])
        self._file.flush()
        os.fsync(self._file.id.get_vfd_handle())
        self.count += 1
        return index

    def close(self) -> None:
        self._file.close()


class HDF5ArraySink:
    """Writes derived runs' large arrays under ``folder`` (`nanostrain.callbacks.external_arrays.ArraySink`):
    ``<folder>/<run uid>/<stream>.h5``; arrays of at least ``min_bytes`` bytes per event
    go there, compressed with NDFileHDF5 ``compression``."""

    def __init__(self, folder: Path, min_bytes: int = DEFAULT_MIN_BYTES, compression: str = DEFAULT_COMPRESSION):
        self.folder = Path(folder).resolve()
        self.min_bytes = min_bytes
        self.compression = compression

    def open(self, run_uid: str, stream: str, arrays: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> HDF5ArrayFile:
        folder = self.folder / _checked_name("derived run uid", run_uid)
        folder.mkdir(parents=True, exist_ok=True)
        return HDF5ArrayFile(folder / f"{_checked_name('stream', stream)}.h5", arrays, self.compression)


def remove_run_folder(folder: Path, run_uid: str) -> bool:
    """Delete ``<folder>/<run_uid>``, the files of a derived run the catalog deleted; True
    if there was one.

    Only a real folder that is a direct child of ``folder`` goes, so nothing outside
    ``folder`` is ever touched: a uid that is no plain name (a path separator, ``..``)
    raises ValueError, a symbolic link of that name is left as it is (and what it points
    at), and `shutil.rmtree` does not follow the links inside the folder."""
    run_folder = Path(folder).resolve() / _checked_name("derived run uid", run_uid)
    if run_folder.is_symlink() or not run_folder.is_dir():
        return False
    shutil.rmtree(run_folder)
    return True
