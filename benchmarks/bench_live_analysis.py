"""Benchmark: what live analysis costs acquisition, inline and in a worker process.

(a) Acquisition rate: `operando_xrd` on a REST step of fixed wall duration (``--seconds``),
    frames taken back to back (``cadence_s`` far below a frame's cost), XRD frames of
    ``--shape`` pixels, with the live analyses off, inline (in the RunEngine's callbacks)
    and in one ``nanostrain worker`` fed by ``nanostrain bus``. Prints frames per second
    and each mode's time per frame against "off".
(b) Latency in the worker: frames at a fixed rate (``--rates`` frames/s, set by the
    simulated clock); per frame, the time from the raw event to the worker's derived
    event (both times as the documents record them), p50 and p95.
(c) SXDM burst: a fly raster of ``--burst-raster``^2 points x 2 rocking angles of 256x256
    frames at 1 kHz (1 ms exposure), published to the worker: acquisition rate, how long
    after the raw run's stop the worker's derived run ends (the catch-up time) and the
    maps compared with the same analysis run inline on the raw run (a replay).

Every mode writes to the same served catalog (``nanostrain serve``), so the catalog's cost
is in every figure. Real processes: catalog, bus, worker, and this one (the RunEngine).

Usage: python benchmarks/bench_live_analysis.py [--shape 2048] [--seconds 30] [--repeats 2]
       [--worker-nice 10] [--rates 2 5 10] [--burst-raster 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bluesky.run_engine import call_in_bluesky_event_loop

import nanostrain.beamline
from nanostrain.catalog import CatalogSettings, catalog_nodes, connect, wait_until_up
from nanostrain.schema.catalog import derived_runs
from nanostrain.session import make_session

API_KEY = "benchkey"


def start(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def rest(seconds_wall: float, time_scale: float) -> list[dict]:
    return [{"mode": "REST", "duration_s": seconds_wall * time_scale}]


def run_operando(session, seconds: float, cadence_s: float, time_scale: float) -> tuple[str, float, int]:
    import bluesky.plan_stubs as bps

    d = session.devices
    session.RE(bps.mv(d["cycler"].time_scale, time_scale))
    began = time.perf_counter()
    (uid,) = session.RE(session.plans["operando_xrd"](
        d["cycler"], d["xrd"], rest(seconds, time_scale), active_mass_g=6.16e-3, cadence_s=cadence_s,
        exposure_s=0.01))
    wall = time.perf_counter() - began
    frames = len(session.catalog[uid]["primary"]["cycler-potential"].read())
    return uid, wall, frames


def latencies(raw_run, derived, timeout: float = 300.0) -> np.ndarray:
    """Seconds from each raw event to the worker's derived event of the same frame."""
    uid = raw_run.metadata["start"]["uid"]
    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in derived_runs(derived, uid) if r.metadata["start"]["analysis"] == "xrd_reduction"
                and r.metadata.get("stop")]
        if runs or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    (run,) = runs
    raw_times = np.asarray(raw_run["primary"].read()["time"])
    derived_times = np.asarray(run["xrd"].read()["time"])
    return derived_times - raw_times[: len(derived_times)]


def sxdm_burst(session, raw, derived, raster: int) -> None:
    """Part (c): a fly raster published at 1 kHz; catch-up and equality with inline."""
    from nanostrain.replaying import replay

    d = session.devices
    half = (raster - 1) * 0.05 / 2
    centre = call_in_bluesky_event_loop(d["np_theta"].user_readback.get_value())
    began = time.perf_counter()
    (uid,) = session.RE(session.plans["sxdm_rocking_raster"](
        d["merlin"], d["np_stage"], d["np_theta"], [-half, half], [-half, half], 0.05, [centre - 0.1, centre + 0.1],
        mode="fly", exposure_s=1e-3, progress=False))
    acquired = time.perf_counter()
    frames = 2 * raster * raster
    print(f"  {frames} frames in {acquired - began:.1f} s ({frames / (acquired - began):.0f} frames/s, 1 ms exposure)")
    deadline = time.monotonic() + 1800
    while not any(r.metadata.get("stop") for r in derived_runs(derived, uid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    print(f"  the worker's sxdm_strain run ended {time.perf_counter() - acquired:.1f} s after the raw run's stop")
    (run,) = [r for r in derived_runs(derived, uid) if r.metadata["start"]["analysis"] == "sxdm_strain"]
    inline = {}
    analysis_of = {}
    for name, doc in replay(raw[uid]):
        if name == "start":
            analysis_of[doc["uid"]] = doc["analysis"]
        elif name == "descriptor" and analysis_of[doc["run_start"]] == "sxdm_strain":
            inline[doc["uid"]] = doc["name"]
        elif name == "event" and doc["descriptor"] in inline and inline[doc["descriptor"]] == "maps":
            for key, value in doc["data"].items():
                stored = np.asarray(run["maps"][key].read())[0]
                same = np.allclose(stored, np.asarray(value, dtype=float), equal_nan=True, rtol=1e-12, atol=0)
                print(f"  map {key}: worker {'equals' if same else 'DIFFERS FROM'} inline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, default=2048, help="XRD frame side (pixels)")
    parser.add_argument("--seconds", type=float, default=30.0, help="wall duration of each acquisition run (s)")
    parser.add_argument("--rates", type=float, nargs="*", default=[2.0, 5.0, 10.0], help="frames/s for latency")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of off/inline/worker runs (part a)")
    parser.add_argument("--worker-nice", type=int, default=10, help="the worker's --nice (default: the worker's own)")
    parser.add_argument("--burst-raster", type=int, default=100, help="SXDM fly raster side (points; 0: skip)")
    args = parser.parse_args()
    nanostrain.beamline.SIM_XRD_SHAPE = (args.shape, args.shape)

    work = Path(tempfile.mkdtemp(prefix="nanostrain-bench-"))
    data = work / "data"
    settings = CatalogSettings(data_dir=data, api_key=API_KEY)
    port, bus_in, bus_out = 18765, "tcp://127.0.0.1:18766", "tcp://127.0.0.1:18767"
    url = f"http://127.0.0.1:{port}"
    nanostrain_cmd = [sys.executable, "-m", "nanostrain"]
    server = start([*nanostrain_cmd, "serve", "--init", "--data-dir", str(data), "--port", str(port), "--api-key", API_KEY],
                   work / "serve.log")
    bus = start([*nanostrain_cmd, "bus", "--publishers", bus_in, "--subscribers", bus_out], work / "bus.log")
    worker = None
    try:
        wait_until_up(url, timeout=60)
        # the worker idles while the other modes run: nothing reaches the bus then
        worker = start([*nanostrain_cmd, "worker", "--catalog", url, "--api-key", API_KEY, "--bus", bus_out,
                        "--data-dir", str(data), "--analyses", "xrd_reduction,sxdm_strain", "--lookback", "0",
                        "--nice", str(args.worker_nice)], work / "worker.log")
        while "listening" not in (work / "worker.log").read_text():
            time.sleep(0.2)
        time.sleep(1.0)
        print(f"XRD frames {args.shape}x{args.shape}, {args.seconds:.0f} s REST step per run, "
              f"{args.repeats} rounds of off/inline/worker; worker niceness {args.worker_nice}; catalog {url}")
        per_frame: dict[str, list[float]] = {"off": [], "inline": [], "worker": []}
        for _ in range(args.repeats):  # interleaved: a drift in the machine's load reaches every mode alike
            for mode in per_frame:
                session = make_session(catalog_uri=url, api_key=API_KEY, data_dir=data, persist_metadata=False,
                                       live_analysis={"off": False}.get(mode, mode), bus=bus_in)
                try:
                    uid, wall, frames = run_operando(session, args.seconds, cadence_s=1e-3, time_scale=600.0)
                finally:
                    session.close()
                per_frame[mode].append(wall / frames)
                print(f"  {mode:7s} {frames:4d} frames in {wall:6.1f} s: {frames / wall:6.2f} frames/s, "
                      f"{1e3 * wall / frames:7.1f} ms per frame")
        off = float(np.median(per_frame["off"]))
        for mode in ("inline", "worker"):
            print(f"  time per frame (median of {args.repeats}), {mode} / off: "
                  f"{np.median(per_frame[mode]) / off:.3f}x")

        raw, derived = catalog_nodes(connect(url, api_key=API_KEY))
        print("Latency from raw event to the worker's derived event (xrd_reduction):")
        for rate in args.rates:
            session = make_session(catalog_uri=url, api_key=API_KEY, data_dir=data, persist_metadata=False,
                                   live_analysis="worker", bus=bus_in)
            try:
                # frames every cadence_s simulated s = 1/rate wall s at 600 simulated s per wall s
                uid, wall, frames = run_operando(session, args.seconds / 2, cadence_s=600.0 / rate, time_scale=600.0)
            finally:
                session.close()
            lag = latencies(raw[uid], derived)
            print(f"  {rate:4.1f} frames/s asked, {frames / wall:5.2f} taken ({frames} frames): "
                  f"p50 {np.percentile(lag, 50):.3f} s, p95 {np.percentile(lag, 95):.3f} s, max {lag.max():.3f} s")
        if args.burst_raster:
            print("SXDM burst, analysed by the worker:")
            session = make_session(catalog_uri=url, api_key=API_KEY, data_dir=data, persist_metadata=False,
                                   live_analysis="worker", bus=bus_in)
            try:
                sxdm_burst(session, raw, derived, args.burst_raster)
            finally:
                session.close()
    finally:
        for process in (worker, bus, server):
            if process is not None:
                process.terminate()
                process.wait(timeout=60)
        print(f"(logs and data in {work})")


if __name__ == "__main__":
    os.environ.setdefault("NANOSTRAIN_BEC", "0")
    # the worker's live-value PVs on loopback, found by unicast search (docs/live-pvs.md)
    os.environ.update(EPICS_CA_ADDR_LIST="127.0.0.1", EPICS_CA_AUTO_ADDR_LIST="NO", EPICS_CAS_INTF_ADDR_LIST="127.0.0.1")
    main()
