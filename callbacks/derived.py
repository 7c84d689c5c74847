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

Lifecycle: a derived run always ends with exactly one stop document. Whatever an analysis
raises while handling a document of a raw run (its start metadata, a frame it cannot read,
a row, the final fit) closes the derived run with ``exit_status="fail"`` and a reason
naming the exception, releases the frame source, and the analysis ignores the rest of
that raw run; the exception is then re-raised for `GuardedCallback` to log and keep.

Parameters: `AnalysisCallback.parameters` returns the JSON-able constructor keyword
arguments the analysis runs with (recorded in the derived run's start document) and
`AnalysisCallback.from_parameters` rebuilds an equal analysis from them (replay).
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

import event_model
import numpy as np
from bluesky.callbacks.core import make_callback_safe
from ophyd_async.core import SignalR, soft_signal_r_and_setter

from ..schema.start import TECHNIQUES, require_start
from .external_arrays import is_lazy_array
from .frames import FrameSource, HDF5FrameSource

logger = logging.getLogger(__name__)

Document = dict[str, Any]
Emitter = Callable[[str, Document], None]

ANALYSIS_VERSION = "1"


def data_key_for(value: Any, source: str) -> dict[str, Any]:
    """An event-model data key describing ``value`` (number, integer, string or array,
    in memory or lazy: the latter's shape and dtype are read, its data not)."""
    array = value if is_lazy_array(value) else np.asarray(value)
    if array.ndim > 0:
        dtype = "array"
    elif np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_):
        dtype = "integer"
    elif np.issubdtype(array.dtype, np.number):
        dtype = "number"
    else:
        dtype = "string"
    key = {"dtype": dtype, "shape": [int(n) for n in array.shape], "source": source}
    if np.dtype(array.dtype).kind in "biuf":
        key["dtype_numpy"] = np.dtype(array.dtype).str
    return key


def to_builtin(value: Any) -> Any:
    """Plain Python (JSON-able) form of a number or array, as documents must carry (a lazy
    array, `is_lazy_array`, is left for `ExternalArrays` to write)."""
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


def _json_form(value: Any) -> Any:
    """``value`` as it reads back from a document (tuples become lists, ...)."""
    return json.loads(json.dumps(value))


class AnalysisCallback(event_model.DocumentRouter):
    """Base of the live analyses; subclasses implement ``process_row`` and ``finish``.

    Parameters
    ----------
    image_key: data key of the detector frames to join with events; None takes the raw
        run's ``image_key`` start metadata (which nanostrain plans record).
    stream: the raw stream analysed (default ``primary``).
    frame_source: where frames are read from; live default is the detector's HDF5 file,
        replay passes a `TiledFrameSource`. It is closed at the raw run's stop (or when
        the analysis fails).
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
        signal, setter = soft_signal_r_and_setter(datatype, initial_value=initial, name=f"{self.analysis}_{name}")
        self.signals[name] = signal
        self._setters[name] = setter
        return signal

    def set_live(self, name: str, value: Any) -> None:
        self._setters[name](value)

    def parameters(self) -> dict[str, Any]:
        """The constructor keyword arguments the analysis runs with (JSON-able), recorded
        in the derived run's start document; `from_parameters` rebuilds the analysis."""
        return {"image_key": self.image_key, "stream": self.stream}

    def parameters_for(self, start: Document) -> dict[str, Any]:
        """The `parameters` a derived run of the raw run that ``start`` opens records (an
        ``image_key`` not configured is the run's own)."""
        configured = self.image_key
        self.image_key = self._configured_image_key or start.get("image_key")
        try:
            return self.parameters()
        finally:
            self.image_key = configured

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> Self:
        """The analysis a derived run recorded ``parameters`` for (see `parameters`).

        Keys the constructor does not take are accepted only if the rebuilt analysis
        reports the same value for them (a constant recorded for the record, such as a
        fixed fit window); any other mismatch raises ValueError, since a replay with
        other settings than the live run's would not be faithful. Keys missing from
        ``parameters`` take the constructor's defaults.
        """
        accepted = set()
        for klass in cls.__mro__:
            if issubclass(klass, AnalysisCallback):
                accepted |= {
                    name for name, p in inspect.signature(klass.__init__).parameters.items()
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self"
                }
        accepted.discard("frame_source")
        analysis = cls(**{key: value for key, value in parameters.items() if key in accepted})
        rebuilt = _json_form(analysis.parameters())
        recorded = _json_form(dict(parameters))
        differ = sorted(key for key, value in recorded.items() if key not in rebuilt or rebuilt[key] != value)
        if differ:
            raise ValueError(
                f"{cls.__name__}.from_parameters cannot reproduce the recorded {differ}: "
                f"recorded {dict(parameters)}, rebuilt {rebuilt}"
            )
        return analysis

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
        #: (rows, cols) of the frames, as the raw descriptor declares them (None: not declared)
        self.frame_shape: tuple[int, int] | None = None

    def accepts(self, start: Document) -> bool:
        """Whether this analysis applies to the raw run that ``start`` opens.

        A run of a technique the start-document contract knows is accepted on its
        technique alone: if it lacks metadata, `start` fails its derived run saying so.
        """
        technique = start.get("technique")
        if self.techniques is not None and technique not in self.techniques:
            return False
        if technique in TECHNIQUES:
            return True
        return not self.needs_frames or bool(self._configured_image_key or start.get("image_key"))

    def __call__(self, name: str, doc: Document, validate: bool = False):
        if name == "start" and self.derived is not None:
            self._fail(RuntimeError("the raw run ended without a stop document"))
        if name != "start" and not self.active:
            return None
        try:
            return super().__call__(name, doc, validate=validate)
        except Exception as error:
            self._fail(error)
            raise

    def abandon(self, reason: str) -> None:
        """Give up the raw run in progress (its documents can no longer all reach this
        analysis): close its derived run as failed with ``reason``, ignore the rest."""
        if self.derived is not None:
            self._fail(RuntimeError(reason))

    def _fail(self, error: Exception) -> None:
        """Close the derived run as failed and ignore the rest of this raw run."""
        derived, self.derived, self.active = self.derived, None, False
        try:
            if derived is not None:
                derived.stop(exit_status="fail", reason=f"{self.analysis} failed: {type(error).__name__}: {error}")
        finally:
            self._close_frames()

    def _close_frames(self) -> None:
        self._reset()
        close = getattr(self.frame_source, "close", None)  # sources holding no handle need none
        if close is not None:
            close()

    def start(self, doc: Document) -> None:
        self._reset()
        self.active = self.accepts(doc)
        if not self.active:
            return
        self.image_key = self._configured_image_key or doc.get("image_key")
        self.raw_start = doc
        self.derived = DerivedRun(self._emit, doc, self.analysis, self.parameters())
        if doc.get("technique") in TECHNIQUES:
            require_start(doc)
        self.open_run(doc)

    def descriptor(self, doc: Document) -> None:
        self._streams[doc["uid"]] = doc["name"]
        image = doc.get("data_keys", {}).get(self.image_key) if doc["name"] == self.stream else None
        if image is not None and len(image.get("shape") or ()) >= 2:
            self.frame_shape = tuple(image["shape"][-2:])

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
        self.finish()
        derived, self.derived, self.active = self.derived, None, False
        self._close_frames()
        derived.stop(exit_status=doc.get("exit_status", "success"), reason=doc.get("reason", ""))


class GuardedCallback:
    """Runs a live callback so that its failure never stops the experiment.

    An exception is kept in ``errors`` and logged by bluesky's `make_callback_safe`
    (which re-raises when ``BLUESKY_DEBUG_CALLBACKS=1``, bluesky's debugging switch); the
    callback then gets no more documents of that run. An `AnalysisCallback` has already
    closed its derived run as failed when the exception reaches here. (bluesky's
    `make_class_safe` would make the analysis classes themselves swallow errors, in
    tests and replay too, and keep no record of them: hence this wrapper instead.)
    """

    def __init__(self, callback: Callable[[str, Document], Any]):
        self.callback = callback
        self.errors: list[BaseException] = []
        self._failed_run = False
        self._safe_call = make_callback_safe(self._call, logger=logger)

    def _call(self, name: str, doc: Document) -> None:
        try:
            self.callback(name, doc)
        except Exception as error:
            self._failed_run = True
            self.errors.append(error)
            raise

    def __call__(self, name: str, doc: Document) -> None:
        if name == "start":
            self._failed_run = False
        if not self._failed_run:
            self._safe_call(name, doc)
