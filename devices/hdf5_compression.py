"""Lossless compression of detector frames, as the areaDetector NDFileHDF5 plugin writes it.

NDFileHDF5's ``Compression`` record chooses the HDF5 filter of ``/entry/data/data``; the
names here are its choices. The default, ``"BSLZ4"``, is bitshuffle + LZ4 (HDF5 filter
32008 with options ``(0, 2)``: automatic block size, LZ4), what Dectris detectors and most
hard X-ray beamlines write: it shuffles the bits of neighbouring pixels so that the
high-order bits (zero in counting data) form long runs LZ4 packs away; it packs more
than zlib and writes and reads several times faster (benchmarks/README.md). The filter comes from hdf5plugin, which registers it with the HDF5
library when imported; every process that opens such a file imports it first: the
catalog server's HDF5 adapter (tiled.adapters.hdf5, which serves StreamResources of
mimetype ``application/x-hdf5``) does so itself, live readers in
`nanostrain.callbacks.frames`.

Frames are chunked one per chunk (``(1, rows, cols)``), as the plugin's
``NumFramesChunks = 1`` does: a frame is read without decompressing its neighbours.

Two writers follow it: the simulated detectors (h5py, `dataset_options`) and the real
areaDetector classes, whose HDF5 plugin `hdf_writer` sets (``Compression``,
``NumFramesChunks``) before every capture. ophyd-async's ``ADWriterFactory.hdf`` leaves
the plugin's compression as it finds it; `CompressedHDFDataLogic` adds only that.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

import hdf5plugin
from ophyd_async.core import PathProvider, StreamableDataProvider
from ophyd_async.epics.adcore import ADCompression, ADHDFDataLogic, ADWriterFactory, NDFileHDF5IO

#: The NDFileHDF5 ``Compression`` choices this package writes, and the default.
COMPRESSIONS = ("None", "zlib", "LZ4", "BSLZ4")
DEFAULT_COMPRESSION = "BSLZ4"

#: NDFileHDF5's default ``ZLevel`` (deflate level of ``"zlib"``).
ZLIB_LEVEL = 6


def check_compression(compression: str) -> str:
    """``compression`` if it is one of `COMPRESSIONS`; ValueError naming it otherwise."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    return compression


def dataset_options(compression: str, frame_shape: tuple[int, ...]) -> Mapping[str, Any]:
    """Keyword arguments of h5py's ``create_dataset`` for a growing stack of frames of
    ``frame_shape`` written with NDFileHDF5 ``compression``: one frame per chunk and the
    filter (none for ``"None"``)."""
    filters = {
        "None": {},
        "zlib": {"compression": "gzip", "compression_opts": ZLIB_LEVEL},
        "LZ4": hdf5plugin.LZ4(),
        "BSLZ4": hdf5plugin.Bitshuffle(nelems=0, cname="lz4"),
    }[check_compression(compression)]
    return {"chunks": (1, *frame_shape), **filters}


@dataclasses.dataclass
class CompressedHDFDataLogic(ADHDFDataLogic):
    """ophyd-async's HDF5 plugin logic, which also sets the plugin's ``Compression`` and
    one frame per chunk (``NumFramesChunks = 1``) before each capture."""

    compression: str = DEFAULT_COMPRESSION

    async def prepare_unbounded(self, datakey_name: str) -> StreamableDataProvider:
        await asyncio.gather(
            self.writer.compression.set(ADCompression(check_compression(self.compression))),
            self.writer.num_frames_chunks.set(1),
        )
        return await super().prepare_unbounded(datakey_name)


def hdf_writer(
    path_provider: PathProvider, writer_suffix: str = "HDF1:", compression: str = DEFAULT_COMPRESSION
) -> ADWriterFactory[NDFileHDF5IO]:
    """``ADWriterFactory.hdf(path_provider, writer_suffix)`` whose plugin writes with
    NDFileHDF5 ``compression`` (default ``"BSLZ4"``; ``"None"``: uncompressed), one frame
    per chunk."""
    check_compression(compression)
    factory = ADWriterFactory.hdf(path_provider, writer_suffix=writer_suffix)

    def data_logic(writer, description, driver, plugins) -> CompressedHDFDataLogic:
        return CompressedHDFDataLogic(array_description=description, path_provider=path_provider, writer=writer,
                                      driver=driver, plugins=list(plugins), compression=compression)

    return dataclasses.replace(factory, data_logic_factory=data_logic)
