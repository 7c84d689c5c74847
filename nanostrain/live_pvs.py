"""Live values across processes: the live analyses' soft signals served as EPICS PVs.

Inside one process a plan reads a live analysis's value from its ophyd-async soft signal
(`nanostrain.callbacks.registry.live_signals`). When the analyses run in another process
(``nanostrain worker``), that process serves every live signal as a Channel Access PV
(`LiveValueServer`, a caproto asyncio server in a background thread) and the session reads
them as ophyd-async CA signals (`remote_live_signals`) named exactly like the in-process
ones, so a plan, a queue item or a blueapi task names its feedback signal the same way
wherever the analysis runs.

PV names are ``f"{prefix}{key}"`` with ``key`` as in ``session.live_signals``
(``f"{analysis}_{signal}"``, e.g. ``NS:LIVE:xrd_reduction_lattice_change_A``) and
``prefix`` `DEFAULT_PREFIX` unless given. Types follow the signal's datatype: float ->
DOUBLE (NaN allowed), int -> LONG, str -> a long string (a CHAR waveform of
`LONG_STRING_LENGTH` bytes, UTF-8, which ophyd-async reads as ``str``). Clients may
read, never write. The table of every PV, its units and meaning is docs/live-pvs.md.

The server listens on the interfaces of ``EPICS_CAS_INTF_ADDR_LIST`` (127.0.0.1 when it
is unset: never every interface by default) and the port of ``EPICS_CA_SERVER_PORT``
(5064 unless set); it refuses to start if another server holds that port, since two
servers on one port and host hide each other from unicast searches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any, Self

from caproto import AccessRights, CaprotoValueError, ChannelChar, ChannelData, ChannelDouble, ChannelInteger
from caproto.asyncio.server import Context
from bluesky.protocols import Reading
from ophyd_async.core import SignalR
from ophyd_async.epics.core import epics_signal_r

from .callbacks.derived import AnalysisCallback
from .callbacks.registry import live_signals

logger = logging.getLogger(__name__)

#: prefix of every live-value PV unless another is given (one per worker on a network)
DEFAULT_PREFIX = "NS:LIVE:"
#: bytes (UTF-8) of a str live value's CHAR waveform (the calibration geometry is 5-20 kB
#: of JSON)
LONG_STRING_LENGTH = 65536
#: interfaces served when ``EPICS_CAS_INTF_ADDR_LIST`` is unset
DEFAULT_INTERFACES = ("127.0.0.1",)


class _ReadOnly:
    """Channel Access clients may read a live value, never write it: the analysis alone
    sets it."""

    def check_access(self, hostname: str, username: str) -> AccessRights:
        return AccessRights.READ


class ReadOnlyDouble(_ReadOnly, ChannelDouble):
    """A DOUBLE PV clients cannot write."""


class ReadOnlyInteger(_ReadOnly, ChannelInteger):
    """A LONG PV clients cannot write."""


class ReadOnlyChar(_ReadOnly, ChannelChar):
    """A CHAR waveform PV (a long string) clients cannot write; a string longer than
    the waveform is refused (caproto would send it whole, past the PV's length)."""

    def preprocess_value(self, value: Any) -> Any:
        if isinstance(value, str) and len(value.encode(self.string_encoding)) > self.max_length:
            raise CaprotoValueError(f"a string of {len(value.encode(self.string_encoding))} bytes "
                                    f"does not fit the PV's {self.max_length}")
        return super().preprocess_value(value)


#: the PV of a live signal, by the signal's datatype
CHANNELS: dict[type, Any] = {
    float: ReadOnlyDouble,
    int: ReadOnlyInteger,
    str: partial(ReadOnlyChar, max_length=LONG_STRING_LENGTH, string_encoding="utf-8"),
}


class LiveValueServerError(RuntimeError):
    """The live-value server could not start (port taken, unsupported datatype, ...)."""


def live_signal_types(analyses: Iterable[AnalysisCallback]) -> dict[str, type]:
    """The datatype (float, int or str) of every live signal of ``analyses``, keyed as
    ``session.live_signals`` keys them; enough to build `remote_live_signals` without
    running the analyses."""
    return {key: signal.datatype for key, signal in live_signals(analyses).items()}


def remote_live_signals(datatypes: Mapping[str, type], prefix: str = DEFAULT_PREFIX) -> dict[str, SignalR]:
    """Channel Access signals reading the PVs a `LiveValueServer` serves with ``prefix``,
    one per key of ``datatypes`` (e.g. `live_signal_types` of `default_analyses()`), each
    named exactly its key. They still need connecting (``ensure_connected`` in a plan, or
    ``await signal.connect()`` on the RunEngine's event loop)."""
    return {key: epics_signal_r(datatype, f"{prefix}{key}", name=key) for key, datatype in datatypes.items()}


def server_interfaces() -> list[str]:
    """Addresses to serve on: ``EPICS_CAS_INTF_ADDR_LIST`` (space-separated), else
    `DEFAULT_INTERFACES`."""
    return os.environ.get("EPICS_CAS_INTF_ADDR_LIST", "").split() or list(DEFAULT_INTERFACES)


def _check_datatype(key: str, datatype: type | None) -> None:
    if datatype not in CHANNELS:
        raise LiveValueServerError(f"live signal {key!r} has datatype {datatype}; a PV needs one of float, int, str")


def _channel(datatype: type) -> ChannelData:
    """A fresh PV for a live value of ``datatype``, holding a placeholder until the
    signal's value is posted."""
    return CHANNELS[datatype](value=datatype())


class LiveValueServer:
    """Serve ``signals`` (key -> soft signal, as ``session.live_signals``) as PVs
    ``f"{prefix}{key}"`` over Channel Access while started; every value the signal takes
    (its current one first) is posted to the PV, with the time it was set as the PV's
    timestamp.

    ``with LiveValueServer(live_signals(analyses)) as server: ...`` or `start`/`stop`.
    """

    def __init__(self, signals: Mapping[str, SignalR], prefix: str = DEFAULT_PREFIX):
        for key, signal in signals.items():
            _check_datatype(key, signal.datatype)
        self.prefix = prefix
        self._signals = {f"{prefix}{key}": signal for key, signal in signals.items()}
        self._channels: dict[str, ChannelData] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._context: Context | None = None
        self._updates: asyncio.Queue[tuple[str, Any, float]] | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._subscriptions: list[tuple[SignalR, Any]] = []

    @property
    def pv_names(self) -> list[str]:
        """The served PV names, in the order of ``signals``."""
        return list(self._signals)

    def start(self, timeout_s: float = 10.0) -> Self:
        """Serve in a background thread; return once every PV holds its signal's current
        value. Raises `LiveValueServerError` if the server cannot start within
        ``timeout_s`` (s), e.g. because another server holds the CA server port."""
        if self._thread is not None:
            raise LiveValueServerError("the live-value server is already running")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), name="live-pvs", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise LiveValueServerError(f"the live-value server did not start within {timeout_s} s")
        if self._error is not None:
            error = self._error
            self.stop()
            raise LiveValueServerError(f"the live-value server could not start: {error}") from error
        return self

    def stop(self) -> None:
        """Stop following the signals and serving; the thread is joined."""
        for signal, callback in self._subscriptions:
            signal.clear_sub(callback)
        self._subscriptions.clear()
        if self._loop is not None and self._task is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: the server has ended already
                self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = self._loop = self._task = self._context = self._updates = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- in the server's thread --------------------------------------------------------
    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._updates = asyncio.Queue()
        self._task = asyncio.current_task()
        self._channels = {pv_name: _channel(signal.datatype) for pv_name, signal in self._signals.items()}
        self._context = Context(self._channels, server_interfaces())
        try:
            await self._context.run(startup_hook=self._started)
        except asyncio.CancelledError:
            pass
        except BaseException as error:  # reported by `start`
            self._error = error
        finally:
            self._disconnect_clients()
            self._ready.set()

    def _disconnect_clients(self) -> None:
        """Close every client's circuit, so clients see the PVs disconnect at once (and
        find them again when a server comes back) rather than after their echo timeout."""
        for circuit in list(self._context.circuits):
            circuit.client.close()

    async def _started(self, async_lib: object) -> None:
        """caproto's startup hook: refuse a fallback port, follow the signals, publish."""
        context = self._context
        if context.port != context.ca_server_port:
            raise LiveValueServerError(
                f"the CA server port {context.ca_server_port} is taken on {context.interfaces} (another IOC?); "
                "set EPICS_CA_SERVER_PORT to a free port here and for the clients"
            )
        for pv_name, signal in self._signals.items():
            callback = partial(self._post, pv_name)
            signal.subscribe_reading(callback)
            self._subscriptions.append((signal, callback))
        publishing = asyncio.create_task(self._publish())
        await self._updates.join()
        self._ready.set()
        await publishing

    def _post(self, pv_name: str, readings: dict[str, Reading]) -> None:
        """Signal callback, in whichever thread set the value (the server's own for the
        current value on subscribing): queue the value for the server's loop."""
        (reading,) = readings.values()
        update = (pv_name, reading["value"], reading["timestamp"])
        if threading.current_thread() is self._thread:
            self._updates.put_nowait(update)
        else:
            self._loop.call_soon_threadsafe(self._updates.put_nowait, update)

    async def _publish(self) -> None:
        """Write the queued values to their PVs in the order they were set."""
        while True:
            pv_name, value, timestamp = await self._updates.get()
            try:
                await self._channels[pv_name].write(value, timestamp=timestamp)
            except Exception:  # e.g. a string longer than LONG_STRING_LENGTH: the PV keeps its value
                logger.exception("the live value for %s could not be posted", pv_name)
            finally:
                self._updates.task_done()
