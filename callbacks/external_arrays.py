"""Large arrays of derived runs leave as chunked external files, registered like detector data.

An analysis publishes its derived run with every result inside its events
(`nanostrain.callbacks.derived.DerivedRun`): live plots and replay use them as they are.
`ExternalArrays` stands between an analysis and the writers that *record* the derived
run (journal, catalog, bus): it rewrites the documents so that the large arrays go to
files written through an injected `ArraySink`, and the documents only point at them, as
an area detector's do:

* a descriptor's data key is taken out of the events if it is a numeric array (dtype
  ``array``, ``dtype_numpy`` of kind integer, unsigned or float, a fixed shape of at
  least one dimension) of at least ``sink.min_bytes`` bytes per event (`DEFAULT_MIN_BYTES`,
  1 KiB: 128 float64, e.g. an I(Q) pattern of the simulated panel, 447 points, or a
  12 x 12 map; below that, the StreamDatum, ~300 bytes per key and event, and a chunk
  would cost about what the array costs inline, as JSON ~8x its binary size); the
  decision is made once per stream, on its descriptor. Such a key is declared
  ``external: "STREAM:"``.
* one place per name: a data-key name is external in every stream of a run or in none.
  The first stream that declares a name decides, by the size rule above; a later stream's
  key of that name follows it whatever its size: inline if the name is inline (a large
  array then stays in the events: a name already published inline cannot move), written
  to the stream's file if the name is external (a scalar too, as a dataset of shape
  ``(n_events,)``). A key that must follow an external name but no file can hold (not
  numeric, or no fixed shape), or that comes external from upstream under a name already
  inline, is refused with ValueError at its descriptor. Why: TiledWriter
  (bluesky-tiled-plugins 2.0.12, ``RunNormalizer.descriptor``) keeps a run's external and
  internal data-key *names* across its streams and marks a later descriptor's inline key
  of an external name ``external: ""``, which then fails validation (XAS: ``r_A`` is the
  R grid, an array, in ``exafs`` and the fitted distance, a scalar, in ``fit``).
* at the stream's first event, the sink opens one file for the stream (all its external
  keys, each a dataset of shape ``(n_events, *shape)``) and one ``stream_resource`` per
  key is published (mimetype ``application/x-hdf5``, parameters ``dataset`` and
  ``chunk_shape``, what TiledWriter registers and Tiled's HDF5 adapter serves);
* for every event, its arrays are appended to the file and flushed *before* one
  ``stream_datum`` per key (``indices`` = the row, ``seq_nums`` = the event's) and the
  event without those keys are published: a reader that sees a datum finds its data.

Without a sink nothing changes (a session or worker that writes no files passes the
documents on as they are). Scalars, strings and small vectors stay in the events unless
their name is external in an earlier stream of the run.

An array whose shape differs from the one its descriptor declared cannot be appended:
`ExternalArrays` raises ValueError (the analysis then fails its derived run saying so).
Callbacks write no files themselves: the sink is the caller's (`nanostrain.derived_files`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import event_model
import numpy as np

Document = dict[str, Any]
Emitter = Callable[[str, Document], None]
Layout = tuple[tuple[int, ...], np.dtype]  # (shape of one event's value, dtype) of a data key in a file

#: smallest array (bytes per event) `ExternalArrays` writes to a file by default
DEFAULT_MIN_BYTES = 1024

#: mimetype of the files a sink writes (Tiled's HDF5 adapter reads them)
HDF5_MIMETYPE = "application/x-hdf5"


def is_lazy_array(value: Any) -> bool:
    """True for an array that is not in memory (a dask or zarr array: ``shape``, ``dtype``
    and slicing that reads a block), as an offline analysis publishes volumes too large to
    hold (`nanostrain.analyze_txm`). Such a value stays as it is in the event; the
    derived run must pass through `ExternalArrays`, which copies it to a file block by
    block (`ArrayFile.append`), before anything records it."""
    return not isinstance(value, np.ndarray | np.generic) and hasattr(value, "shape") and hasattr(value, "dtype")


class ArrayFile(Protocol):
    """One stream's file of a derived run: a growing dataset per external data key."""

    #: ``file://host/path`` of the file, as the catalog server sees it
    uri: str

    def parameters(self, key: str) -> dict[str, Any]:
        """StreamResource parameters of ``key``'s dataset (``dataset``, ``chunk_shape``)."""
        ...

    def append(self, rows: Mapping[str, Any]) -> int:
        """Write one row per data key (each of its declared shape; a numpy array, or a
        lazy one, `is_lazy_array`, read block by block), flushed to the file before
        returning; the index of the rows written."""
        ...

    def close(self) -> None: ...


class ArraySink(Protocol):
    """Where `ExternalArrays` writes the large arrays of derived runs."""

    #: arrays of at least this many bytes per event go to files
    min_bytes: int

    def open(self, run_uid: str, stream: str, arrays: Mapping[str, Layout]) -> ArrayFile:
        """A new file for ``stream`` of derived run ``run_uid``, with one dataset per key
        of ``arrays`` (key -> (shape of one event's value, dtype))."""
        ...


def _file_layout(spec: Mapping[str, Any]) -> Layout | None:
    """The layout of data key ``spec`` if a file can hold it (numeric: integer, unsigned
    or float, of a fixed shape, scalars included, not external already); else None."""
    shape, dtype_numpy = spec.get("shape") or [], spec.get("dtype_numpy")
    if "external" in spec or not dtype_numpy or None in shape:
        return None
    dtype = np.dtype(dtype_numpy)
    return (tuple(shape), dtype) if dtype.kind in "iuf" else None


def external_keys(descriptor: Document, min_bytes: int, earlier: Mapping[str, bool] | None = None) -> dict[str, Layout]:
    """The data keys of ``descriptor`` that go to a file (key -> (shape, dtype)).

    ``earlier``: the names the run's earlier streams declared (name -> external?). A new
    name goes to a file if it is a numeric array of a fixed shape of at least ``min_bytes``
    bytes per event, not external yet; a name ``earlier`` holds keeps its place whatever
    the size (one place per name, see the module). Raises ValueError for a key that
    cannot keep its name's place."""
    earlier = earlier or {}
    chosen = {}
    for key, spec in descriptor["data_keys"].items():
        layout = _file_layout(spec)
        if key not in earlier:
            if spec.get("dtype") == "array" and layout and math.prod(layout[0]) * layout[1].itemsize >= min_bytes:
                chosen[key] = layout
        elif earlier[key] and "external" not in spec:
            if layout is None:
                raise ValueError(f"stream {descriptor['name']!r}: data key {key!r} is external in an earlier stream "
                                 f"of the run, and a file cannot hold it (dtype {spec.get('dtype')!r}, "
                                 f"shape {spec.get('shape')}); a name has one place per run")
            chosen[key] = layout
        elif not earlier[key] and "external" in spec:
            raise ValueError(f"stream {descriptor['name']!r}: data key {key!r} comes external, and it is inline in "
                             f"an earlier stream of the run; a name has one place per run")
    return chosen


@dataclass
class _Run:
    """A derived run on its way: its StreamResource composer and where its names are."""

    compose: event_model.ComposeStreamResource
    external: dict[str, bool] = field(default_factory=dict)  # data-key name -> external? (first stream decided)

    def place(self, descriptor: Document, arrays: Mapping[str, Layout]) -> None:
        """Remember where ``descriptor`` put the names no earlier stream declared."""
        for key, spec in descriptor["data_keys"].items():
            self.external.setdefault(key, key in arrays or "external" in spec)


@dataclass
class _Stream:
    """A stream of a derived run with external keys: its file, opened at its first event."""

    run_uid: str
    descriptor: Document
    arrays: dict[str, Layout]
    file: ArrayFile | None = None
    datums: dict[str, event_model.ComposeStreamDatum] = field(default_factory=dict)


class ExternalArrays:
    """Passes a derived run's documents to ``downstream`` with its large arrays written
    through ``sink`` and referenced by StreamResource/StreamDatum (see the module)."""

    def __init__(self, sink: ArraySink, downstream: Emitter):
        self.sink = sink
        self.downstream = downstream
        self._runs: dict[str, _Run] = {}  # run uid -> run
        self._streams: dict[str, _Stream] = {}  # descriptor uid -> stream with external keys

    def __call__(self, name: str, doc: Document) -> None:
        handler = {"start": self._start, "descriptor": self._descriptor, "event": self._event,
                   "event_page": self._event_page, "stop": self._stop}.get(name)
        if handler is None:
            self.downstream(name, doc)
        else:
            handler(doc)

    def _start(self, doc: Document) -> None:
        self._runs[doc["uid"]] = _Run(event_model.ComposeStreamResource(start=doc))
        self.downstream("start", doc)

    def _descriptor(self, doc: Document) -> None:
        run = self._runs.get(doc["run_start"])
        arrays = {} if run is None else external_keys(doc, self.sink.min_bytes, run.external)
        if run is not None:
            run.place(doc, arrays)
        if arrays:
            keys = {key: {**spec, "external": "STREAM:"} if key in arrays else spec
                    for key, spec in doc["data_keys"].items()}
            doc = {**doc, "data_keys": keys}
            self._streams[doc["uid"]] = _Stream(doc["run_start"], doc, arrays)
        self.downstream("descriptor", doc)

    def _event(self, doc: Document) -> None:
        stream = self._streams.get(doc["descriptor"])
        if stream is None:
            self.downstream("event", doc)
            return
        rows = {}
        for key, (shape, dtype) in stream.arrays.items():
            value = doc["data"][key]
            rows[key] = value if is_lazy_array(value) else np.asarray(value, dtype=dtype)
            if tuple(rows[key].shape) != shape:
                raise ValueError(f"derived run {stream.run_uid}, stream {stream.descriptor['name']!r}: "
                                 f"{key!r} has shape {rows[key].shape}; its descriptor declared {shape}")
        if stream.file is None:
            self._open(stream)
        index = stream.file.append(rows)
        for datum in stream.datums.values():
            self.downstream("stream_datum", datum(
                indices={"start": index, "stop": index + 1},
                seq_nums={"start": doc["seq_num"], "stop": doc["seq_num"] + 1},
                descriptor=stream.descriptor,
            ))
        self.downstream("event", {
            **doc,
            **{part: {k: v for k, v in doc[part].items() if k not in rows}
               for part in ("data", "timestamps", "filled") if part in doc},
        })

    def _open(self, stream: _Stream) -> None:
        stream.file = self.sink.open(stream.run_uid, stream.descriptor["name"], stream.arrays)
        compose = self._runs[stream.run_uid].compose
        for key in stream.arrays:
            bundle = compose(mimetype=HDF5_MIMETYPE, uri=stream.file.uri, data_key=key,
                             parameters=stream.file.parameters(key))
            stream.datums[key] = bundle.compose_stream_datum
            self.downstream("stream_resource", bundle.stream_resource_doc)

    def _event_page(self, doc: Document) -> None:
        if doc["descriptor"] not in self._streams:
            self.downstream("event_page", doc)
            return
        for event in event_model.unpack_event_page(doc):
            self._event(event)

    def _stop(self, doc: Document) -> None:
        uid = doc["run_start"]
        self._runs.pop(uid, None)
        try:
            for descriptor in [d for d, stream in self._streams.items() if stream.run_uid == uid]:
                stream = self._streams.pop(descriptor)
                if stream.file is not None:
                    stream.file.close()
        finally:
            self.downstream("stop", doc)
