"""Latency of a live value across processes: from ``set_live`` in an analysis process to
the CA monitor update of `remote_live_signals` here (`nanostrain.live_pvs`), against the
peer: the in-process soft signal's subscription callback.

Latency = arrival time - the reading's timestamp (the time ``set_live`` set the value; the
PV carries it), both from this machine's clock. Channel Access on loopback, on a free
port of its own.

    .venv/bin/python benchmarks/bench_live_pvs.py [--values 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

STRING_BYTES = 10_000
#: spacing (s) of the "occasional update" round: longer than caproto's batching window
#: (CAPROTO_SERVER_HIGH_LOAD_TIMEOUT_SEC, 10 ms), within which updates are sent together
SPACED_S = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(prefix: str) -> None:
    """The analysis process: serve default_analyses()' live values; each stdin line
    ``[analysis, name, value]`` is set with ``set_live``."""
    from nanostrain.callbacks.registry import default_analyses, live_signals
    from nanostrain.live_pvs import LiveValueServer

    analyses = {analysis.analysis: analysis for analysis in default_analyses()}
    with LiveValueServer(live_signals(analyses.values()), prefix=prefix):
        print("READY", flush=True)
        for line in sys.stdin:
            analysis, name, value = json.loads(line)
            analyses[analysis].set_live(name, value)


def summary(label: str, latencies_s: list[float]) -> str:
    ms = sorted(1e3 * value for value in latencies_s)
    return (f"{label:<42} n={len(ms):4d}  median {statistics.median(ms):8.3f} ms  "
            f"p90 {ms[int(0.9 * len(ms))]:8.3f} ms  max {ms[-1]:8.3f} ms")


async def monitor_latencies(signal, send, values, spacing_s: float = 0.0) -> list[float]:
    """Set each of ``values`` (through ``send``), ``spacing_s`` (s) after the monitor of
    ``signal`` saw the previous one."""
    latencies, arrived = [], asyncio.Event()

    def on_update(readings):
        (reading,) = readings.values()
        if reading["value"] == expected[0]:
            latencies.append(time.time() - reading["timestamp"])
            arrived.set()

    expected = [None]
    signal.subscribe_reading(on_update)
    for value in values:
        expected[0] = value
        arrived.clear()
        send(value)
        await asyncio.wait_for(arrived.wait(), 10)
        await asyncio.sleep(spacing_s)
    signal.clear_sub(on_update)
    return latencies


async def across_processes(n_values: int) -> list[str]:
    from nanostrain.live_pvs import remote_live_signals

    prefix = "BENCH:LIVE:"
    server = subprocess.Popen([sys.executable, __file__, "--serve", prefix], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "READY"
        remote = remote_live_signals({"xrd_reduction_lattice_change_A": float, "xrd_calibration_geometry": str},
                                     prefix=prefix)
        for signal in remote.values():
            await signal.connect(timeout=10)

        def sender(analysis: str, name: str):
            def send(value):
                server.stdin.write(json.dumps([analysis, name, value]) + "\n")
                server.stdin.flush()
            return send

        floats = [1e-3 * i for i in range(1, n_values + 1)]
        strings = [json.dumps({"raw_uid": str(i), "pyfai_config": "x" * STRING_BYTES}) for i in range(n_values // 4)]
        send_float = sender("xrd_reduction", "lattice_change_A")
        lines = []
        for spacing_s in (SPACED_S, 0.0):
            float_latency = await monitor_latencies(
                remote["xrd_reduction_lattice_change_A"], send_float, floats, spacing_s)
            string_latency = await monitor_latencies(
                remote["xrd_calibration_geometry"], sender("xrd_calibration", "geometry"), strings, spacing_s)
            floats = [-value for value in floats]  # new values for the next round
            strings = [text + " " for text in strings]
            lines += [summary(f"PV across processes, float, {spacing_s * 1e3:.0f} ms apart", float_latency),
                      summary(f"PV, {STRING_BYTES // 1000} kB str, {spacing_s * 1e3:.0f} ms apart", string_latency)]
        return lines
    finally:
        server.stdin.close()
        server.wait(timeout=30)


async def in_process(n_values: int) -> str:
    """The peer: the soft signal itself, set from another thread as a worker's callback does."""
    from ophyd_async.core import soft_signal_r_and_setter

    signal, set_value = soft_signal_r_and_setter(float, initial_value=0.0, name="x")

    def send(value):
        threading.Thread(target=set_value, args=(value,)).start()

    latency = await monitor_latencies(signal, send, [1e-3 * i for i in range(1, n_values + 1)])
    return summary("soft signal in process (peer), float", latency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=200, help="values set per measurement")
    parser.add_argument("--serve", metavar="PREFIX", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    os.environ.update(EPICS_CA_ADDR_LIST="127.0.0.1", EPICS_CA_AUTO_ADDR_LIST="NO",
                      EPICS_CAS_INTF_ADDR_LIST="127.0.0.1", EPICS_CA_SERVER_PORT=str(free_port()))
    lines = asyncio.run(across_processes(args.values)) + [asyncio.run(in_process(args.values))]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
