"""The document bus: bluesky's 0MQ publisher and proxy, with sequence numbers.

A session publishes every document (``make_session(live_analysis="worker")``) to a
forwarding proxy (``nanostrain bus``: bluesky's ``Proxy``, bound to 127.0.0.1 by
default); any number of subscribers (``nanostrain worker`` processes, viewers) connect to
its other side. 0MQ's PUB socket never blocks the publisher: when no subscriber keeps
up, messages are dropped. So each message carries the publisher's identity and a
sequence number, and a subscriber knows exactly when it has missed something
(`Subscriber`, `Gap`); what it missed is in the catalog, the durable record.

Wire format: bluesky's (``prefix name payload`` joined by spaces, as its
``Publisher``/``RemoteDispatcher`` use; the prefix empty), the payload a msgpack map
``{"source", "seq", "doc"}``; `unwrap` is the deserializer that lets bluesky's own
``RemoteDispatcher`` read the documents (``RemoteDispatcher(addr, deserializer=unwrap)``).
msgpack, not bluesky's default pickle: unpickling runs code that whoever reaches the
port chooses, while msgpack decodes data only; it also keeps NaN and inf (JSON cannot).
numpy arrays travel as lists and numpy scalars as Python numbers, as in the catalog.
A message that does not decode is counted (`Subscriber.malformed`) and skipped; the
sequence number it carried is then missing, so the next message reports the `Gap`.

At a facility with Kafka, bluesky-kafka's ``Publisher``/``RemoteDispatcher`` take the
place of these classes behind the same calls (documents in, documents out); Kafka keeps
its own offsets, so the sequence numbers are 0MQ's remedy only.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import zmq
from bluesky.callbacks.zmq import Proxy

DEFAULT_IN = "tcp://127.0.0.1:5577"  # publishers connect here
DEFAULT_OUT = "tcp://127.0.0.1:5578"  # subscribers connect here

Document = dict[str, Any]

logger = logging.getLogger(__name__)


def _builtin(value: Any) -> Any:
    """What msgpack cannot pack itself: numpy arrays as (nested) lists, numpy scalars as
    Python numbers."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"cannot put a {type(value).__name__} on the document bus")


def pack(envelope: dict[str, Any]) -> bytes:
    """An envelope ``{"source", "seq", "doc"}`` as a msgpack payload."""
    return msgpack.packb(envelope, default=_builtin, use_bin_type=True)


def _unpack(payload: bytes) -> dict[str, Any]:
    envelope = msgpack.unpackb(payload, raw=False)
    if not (isinstance(envelope, dict) and isinstance(envelope.get("source"), str)
            and isinstance(envelope.get("seq"), int) and isinstance(envelope.get("doc"), dict)):
        raise ValueError("not a nanostrain bus envelope")
    return envelope


def serve_proxy(in_address: str = DEFAULT_IN, out_address: str = DEFAULT_OUT) -> None:
    """Run bluesky's 0MQ forwarding proxy until interrupted (``nanostrain bus``)."""
    proxy = Proxy(in_address, out_address)
    proxy.start()


class BusPublisher:
    """A RunEngine callback that publishes every document to the proxy at ``address``.

    ``source`` (a fresh uuid per publisher) and ``seq`` (1, 2, ... per message) go with
    each document, in bluesky's wire format. Publishing never waits: 0MQ queues up to
    ``sndhwm`` messages while the proxy is away and drops beyond that (the subscribers see
    the gap), and closing discards what is still queued (``linger`` 0) rather than hang.
    (bluesky's ``Publisher`` keeps its socket's defaults, which can hang on close.)"""

    def __init__(self, address: str = DEFAULT_IN, sndhwm: int = 100_000):
        self.source = uuid.uuid4().hex
        self._counter = itertools.count(1)
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, sndhwm)
        self._socket.connect(address)

    def __call__(self, name: str, doc: Document) -> None:
        payload = pack({"source": self.source, "seq": next(self._counter), "doc": doc})
        self._socket.send(b" ".join([b"", name.encode(), payload]))

    def close(self) -> None:
        self._socket.close()
        self._context.term()


def unwrap(payload: bytes) -> Document:
    """The document of a bus message (a deserializer for bluesky's ``RemoteDispatcher``)."""
    return _unpack(payload)["doc"]


@dataclass(frozen=True)
class Message:
    """One document off the bus, with its publisher and sequence number."""

    name: str
    doc: Document
    source: str
    seq: int


@dataclass(frozen=True)
class Gap:
    """Messages of ``source`` were lost before sequence number ``next_seq`` (``missed`` of
    them: None when a new publisher appeared, whose earlier messages are unknown)."""

    source: str
    next_seq: int
    missed: int | None


class Subscriber:
    """Receives bus messages on a thread of its own, into an unbounded queue, so that a
    slow consumer does not make 0MQ drop messages (the receive buffer, ``rcvhwm``
    messages, only fills if this thread itself cannot keep up).

    Iterate `messages` to get `Message` and `Gap` items in order; a `Gap` comes before
    the first message after messages were lost."""

    def __init__(self, address: str = DEFAULT_OUT, rcvhwm: int = 100_000):
        self.address = address
        self._queue: queue.Queue[Message | Gap | None] = queue.Queue()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.setsockopt(zmq.RCVTIMEO, 200)
        self._socket.connect(address)
        self._running = True
        self._last: dict[str, int] = {}
        self.malformed = 0  # messages that did not decode, skipped
        self._thread = threading.Thread(target=self._receive, name="nanostrain-bus", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        try:
            while self._running:
                try:
                    message = self._socket.recv()
                except zmq.Again:
                    continue
                try:
                    _prefix, raw_name, payload = message.split(b" ", 2)
                    name, envelope = raw_name.decode(), _unpack(payload)
                except Exception as error:  # noqa: BLE001 - anyone may send anything to a port
                    self.malformed += 1
                    logger.warning("skipped a bus message that does not decode (%s)", error)
                    continue
                source, seq = envelope["source"], envelope["seq"]
                last = self._last.get(source)
                if last is None and seq != 1:
                    self._queue.put(Gap(source, seq, None))
                elif last is not None and seq != last + 1:
                    self._queue.put(Gap(source, seq, seq - last - 1))
                self._last[source] = seq
                self._queue.put(Message(name, envelope["doc"], source, seq))
        finally:
            self._socket.close(linger=0)
            self._context.term()

    def messages(self, timeout: float | None = None) -> Iterator[Message | Gap]:
        """Messages and gaps in arrival order; ends after `close`, or after ``timeout`` s
        with nothing new."""
        while True:
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                return
            if item is None:
                return
            yield item

    @property
    def backlog(self) -> int:
        """Messages received and not yet taken."""
        return self._queue.qsize()

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self._queue.put(None)

