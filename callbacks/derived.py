"""Base machinery of nanostrain's live-analysis callbacks.

`AnalysisCallback` is an ``event_model.DocumentRouter`` that

* joins each event of the raw run with its detector frame (the frame arrives through
  StreamResource/StreamDatum, before the event when live, after all events in a replay
  from the catalog: a join on ``seq_num`` makes both orders give the same results);
* hands the joined row to ``process_row`` (the subclass's science, calling pure
  functions of `nanostrain.analysis`);
* publishes results as documents of a *derived run* (`DerivedRun`, composed with
  ``event_model.compose_run``) whose start document names the raw run it came from,
  so the catalog stores it like any run and a replay can be compared with it;
* exposes live values as ophyd-async soft signals (``self.signals``) that plans may read
  (``bps.rd``), the only channel from analysis back to the experiment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import event_model
import numpy as np
from ophyd_async.core import SignalR, soft_signal_r_and_setter

from .frames import FrameSource, HDF5FrameSource

Document = dict[str, Any]
Emitter = Callable[[str, Document], None]

ANALYSIS_VERSION = "1"


def data_key_for(value: Any, source: str) -> dict[str, Any]:
    """An event-model data key describing ``value`` (number, integer, string or array)."""
    array = np.asarray(value)
    if array.ndim > 0:
        dtype = "array"
    elif np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_):
        dtype = "integer"
    elif np.issubdtype(array.dtype, np.number):
        dtype = "number"
    else:
        dtype = "string"
    key = {"dtype": dtype, "shape": list(array.shape), "source": source}
    if array.dtype.kind in "biuf":
        key["dtype_numpy"] = array.dtype.str
    return key


def to_builtin(value: Any) -> Any:
    """Plain Python (JSON-able) form of a number or array, as documents must carry."""
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


class DerivedRun:
    """One derived run: start (linked to the raw run), descriptors on demand, events, stop."""

    def __init__(self, emit: Emitter, raw_start: Document, analysis: str, parameters: dict[str, Any]):
        self._emit = emit
        self._source = f"nanostrain:{analysis}"
        metadata = {
            "derived_from": raw_start["uid"],
            "analysis": analysis,
            "analysis_version": ANALYSIS_VERSION,
            "parameters": parameters,
            "plan_name": f"analysis:{analysis}",
            "purpose": "derived",
        }
        for key in ("sample", "scan_id", "technique"):
            if key in raw_start:
                metadata[f"raw_{key}" if key == "scan_id" else key] = raw_start[key]
        self._bundle = event_model.compose_run(metadata=metadata)
        self.uid: str = self._bundle.start_doc["uid"]
        self._descriptors: dict[str, Any] = {}
        self._emit("start", self._bundle.start_doc)

    def event(self, stream: str, data: dict[str, Any]) -> None:
        """Emit one event of ``stream``; its descriptor is made from the first event."""
        if stream not in self._descriptors:
            keys = {name: data_key_for(value, self._source) for name, value in data.items()}
            bundle = self._bundle.compose_descriptor(name=stream, data_keys=keys)
            self._descriptors[stream] = bundle
            self._emit("descriptor", bundle.descriptor_doc)
        now = time.time()
        doc = self._descriptors[stream].compose_event(
            data={k: to_builtin(v) for k, v in data.items()},
            timestamps={k: now for k in data},
        )
        self._emit("event", doc)

    def stop(self, exit_status: str = "success", reason: str = "") -> None:
        self._emit("stop", self._bundle.compose_stop(exit_status=exit_status, reason=reason))


class AnalysisCallback(event_model.DocumentRouter):
    """Base of the live analyses; subclasses implement ``process_row`` and ``finish``.

    Parameters
    ----------
    image_key: data key of the detector frames to join with events; None takes the raw
        run's ``image_key`` start metadata (which nanostrain plans record).
    stream: the raw stream analysed (default ``primary``).
    frame_source: where frames are read from; live default is the detector's HDF5 file,
        replay passes a `TiledFrameSource`.
    """

    analysis: str = "analysis"
    #: techniques (start-document ``technique``) this analysis runs on; None: any run
    techniques: tuple[str, ...] | None = None
    #: whether rows need a detector frame (``image_key``)
    needs_frames: bool = True

    def __init__(self, image_key: str | None = None, stream: str = "primary", frame_source: FrameSource | None = None):
        super().__init__()
        self._configured_image_key = image_key
        self.image_key = image_key
        self.active = False
        self.stream = stream
        self.frame_source: FrameSource = frame_source or HDF5FrameSource()
        self._subscribers: list[Emitter] = []
        self.signals: dict[str, SignalR] = {}
        self._setters: dict[str, Callable[[Any], None]] = {}
        self.derived: DerivedRun | None = None
        self._reset()

    # -- wiring -----------------------------------------------------------------------
    def subscribe(self, callback: Emitter) -> None:
        """Send the derived run's documents to ``callback`` (TiledWriter, plots, a list)."""
        self._subscribers.append(callback)

    def _emit(self, name: str, doc: Document) -> None:
        for callback in self._subscribers:
            callback(name, doc)

    def live_signal(self, name: str, datatype: type = float, initial: Any = None) -> SignalR:
        """Declare a live value plans can read (an ophyd-async soft signal)."""
        signal, setter = soft_signal_r_and_setter(datatype, initial_value=initial, name=f"{self.analysis}-{name}")
        self.signals[name] = signal
        self._setters[name] = setter
        return signal

    def set_live(self, name: str, value: Any) -> None:
        self._setters[name](value)

    def parameters(self) -> dict[str, Any]:
        """What the analysis was run with, recorded in the derived run's start document."""
        return {"image_key": self.image_key, "stream": self.stream}

    # -- subclass interface -------------------------------------------------------------
    def open_run(self, start: Document) -> None:
        """Called on the raw start document (metadata: geometry, sample, ...)."""

    def process_row(self, seq_num: int, data: dict[str, Any], frame: np.ndarray | None) -> None:
        """Called once per raw event, in seq_num order, with its frame if any."""
        raise NotImplementedError

    def finish(self) -> None:
        """Called on the raw stop document, before the derived run is closed."""

    # -- document handling -------------------------------------------------------------------
    def _reset(self) -> None:
        self._streams: dict[str, str] = {}
        self._resources: dict[str, Document] = {}
        self._events: dict[int, dict[str, Any]] = {}
        self._frames: dict[int, np.ndarray] = {}
        self._next_seq = 1

    def accepts(self, start: Document) -> bool:
        """Whether this analysis applies to the raw run that ``start`` opens."""
        if self.techniques is not None and start.get("technique") not in self.techniques:
            return False
        return not self.needs_frames or bool(self._configured_image_key or start.get("image_key"))

    def start(self, doc: Document) -> None:
        self._reset()
        self.active = self.accepts(doc)
        if not self.active:
            return
        self.image_key = self._configured_image_key or doc.get("image_key")
        self.raw_start = doc
        self.open_run(doc)
        self.derived = DerivedRun(self._emit, doc, self.analysis, self.parameters())

    def __call__(self, name: str, doc: Document, validate: bool = False):
        if name != "start" and not self.active:
            return None
        return super().__call__(name, doc, validate=validate)

    def descriptor(self, doc: Document) -> None:
        self._streams[doc["uid"]] = doc["name"]

    def stream_resource(self, doc: Document) -> None:
        self._resources[doc["uid"]] = doc

    def stream_datum(self, doc: Document) -> None:
        resource = self._resources[doc["stream_resource"]]
        stream = self._streams.get(doc["descriptor"])
        if stream != self.stream or resource["data_key"] != self.image_key or not self.needs_frames:
            return
        for seq_num, frame in self.frame_source.iter_frames(stream, resource, doc):
            self._frames[seq_num] = frame
        self._drain()

    def event(self, doc: Document) -> None:
        if self._streams.get(doc["descriptor"]) != self.stream:
            return
        self._events[doc["seq_num"]] = doc["data"]
        self._drain()

    def event_page(self, doc: Document) -> None:
        for event in event_model.unpack_event_page(doc):
            self.event(event)

    def _drain(self) -> None:
        """Process rows in seq_num order as soon as both event and frame are in."""
        while self._next_seq in self._events and (
            not self.needs_frames or self._next_seq in self._frames
        ):
            seq = self._next_seq
            self.process_row(seq, self._events.pop(seq), self._frames.pop(seq, None))
            self._next_seq += 1

    def stop(self, doc: Document) -> None:
        if self.derived is None:
            return
        status = doc.get("exit_status", "success")
        try:
            self.finish()
        except Exception as error:
            self.derived.stop(exit_status="fail", reason=f"{type(error).__name__}: {error}")
            raise
        self.derived.stop(exit_status=status, reason=doc.get("reason", ""))
        self.derived = None
        self.active = False
