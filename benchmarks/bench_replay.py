"""Benchmark: how fast a stored run replays (`nanostrain.replaying.replay`).

(a) SXDM with frames: the demo's rocking raster (``--raster``^2 points x ``--angles``
    rocking angles of the simulated Merlin's frames, fly mode) is acquired once into an embedded catalog
    on a data folder, then replayed through its recorded ``sxdm_strain`` analysis with the
    frames read three ways:

    * "before": as replay read frames until 2026-12-07 (`PerDatumRequests`): through the
      catalog, the array looked up and 8 frames requested at a time for each datum;
    * "catalog, 64 MiB blocks": through the catalog, one request per 64 MiB block (a
      replay on a machine that does not see the detector files);
    * "detector file, 64 MiB blocks": straight from the detector file (the default where
      this machine sees it).

    Each replay's maps are compared with the live ones (they must be equal).
(b) Documents without frames: a ``count`` of ``--events`` points of scalar detectors
    (one event each) replayed through every recorded analysis; documents per second of
    the whole replay (the catalog's export of the run included), and of the dispatch alone.
    ``--plugin-exporter`` serves the runs with bluesky-tiled-plugins' own JSON-seq exporter
    (one write per document) instead of `nanostrain.json_seq` (writes of >= 256 KiB).

Usage: python benchmarks/bench_replay.py [--raster 24] [--angles 21] [--events 20000] [--quick]
       [--plugin-exporter]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from bluesky.run_engine import call_in_bluesky_event_loop as now

import nanostrain.catalog
from nanostrain.callbacks.frames import TiledFrameSource, verify_local_file
from nanostrain.replaying import recorded_analyses, replay, run_documents
from nanostrain.schema.catalog import derived_runs
from nanostrain.session import make_session

class PerDatumRequests:
    """Frames as replay read them until 2026-12-07: per datum, the file verified, the
    catalog's array looked up, then 8 frames per request (the reference of the ratios)."""

    def __init__(self, run):
        self.run = run

    def iter_frames(self, stream, resource, datum):
        seq_nums = range(datum["seq_nums"]["start"], datum["seq_nums"]["stop"])
        verify_local_file(resource, range(datum["indices"]["start"], datum["indices"]["stop"]))
        array = self.run[stream][resource["data_key"]]
        for lo in range(0, len(seq_nums), 8):
            hi = min(lo + 8, len(seq_nums))
            block = np.asarray(array[seq_nums[lo] - 1 : seq_nums[hi - 1]])
            yield from zip(seq_nums[lo:hi], block.reshape(hi - lo, *block.shape[-2:]))


MAPS = ("intensity", "dd_over_d", "theta_xy", "theta_xz")


def sxdm_run(session, n: int, n_theta: int, size: float = 0.2) -> str:
    """The demo's SXDM raster of SC-NC91 (`nanostrain.demo.sxdm_step`), its uid."""
    d = session.devices
    detector, stage, theta = d["merlin"], d["np_stage"], d["np_theta"]
    session.RE(session.plans["mount_sample"](detector, {"material": "NC91", "morphology": "SC"},
                                             cycles=0, charge_V=4.3, current_mA_g=100.0))
    theta_b = detector.sxdm_geometry().two_theta_deg / 2
    session.RE(session.plans["find_bragg_peak"](detector, theta, theta_b + np.linspace(-0.6, 0.6, 13), exposure_s=0.01))
    peak = now(theta.user_readback.get_value())
    x0, y0, half = 0.7, -0.4, size * (n - 1) / 2
    (uid,) = session.RE(session.plans["sxdm_rocking_raster"](
        detector, stage, theta, (x0 - half, x0 + half), (y0 - half, y0 + half), size,
        peak + np.linspace(-0.5, 0.5, n_theta), "fly", monitor=d["np_i0"], background=0.1, progress=False))
    return uid


def maps_of(documents) -> dict[str, np.ndarray]:
    events = [doc for name, doc in documents if name == "event" and any(key in doc["data"] for key in MAPS)]
    return {key: np.asarray(events[-1]["data"][key]) for key in MAPS}


def stored(session, uid: str, analysis: str, timeout_s: float = 600.0):
    """Raw run ``uid`` and its derived run of ``analysis`` once the catalog holds both
    stop documents (the session's catalog writer runs in the background)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [run for run in derived_runs(session.derived, uid) if run.metadata["start"]["analysis"] == analysis]
        if runs and runs[0].metadata.get("stop") and session.catalog[uid].metadata.get("stop"):
            return session.catalog[uid], runs[0]
        time.sleep(0.25)
    raise TimeoutError(f"no complete {analysis} run of {uid} in the catalog after {timeout_s:.0f} s")


def bench_frames(session, uid: str) -> None:
    run, live = stored(session, uid, "sxdm_strain")
    derived = session.derived
    n_frames = sum(doc["indices"]["stop"] - doc["indices"]["start"] for name, doc in run_documents(run)
                   if name == "stream_datum")
    reference = {key: np.asarray(live["maps"][key].read())[-1] for key in MAPS}
    shape = run["primary"]["merlin"].shape
    ways = {
        "before (8 frames per request)": PerDatumRequests(run),
        "catalog, 64 MiB blocks": TiledFrameSource(run, local_files=False),
        "detector file, 64 MiB blocks": TiledFrameSource(run),
    }
    print(f"\n(a) SXDM replay, {n_frames} frames of {shape[-2]}x{shape[-1]} uint16")
    print(f"{'frames read':<32}{'time s':>9}{'frames/s':>11}{'vs before':>11}  maps equal live")
    first = None
    for label, source in ways.items():
        analyses = [a for a in recorded_analyses(run, derived) if a.analysis == "sxdm_strain"]
        began = time.perf_counter()
        published = replay(run, analyses, derived=derived, progress=False, frame_source=source)
        seconds = time.perf_counter() - began
        first = first or seconds
        maps = maps_of(published)
        equal = all(np.allclose(maps[key], reference[key], rtol=1e-12, equal_nan=True) for key in MAPS)
        print(f"{label:<32}{seconds:>9.2f}{n_frames / seconds:>11,.0f}{first / seconds:>10.1f}x  {equal}")


def bench_documents(session, n_events: int) -> None:
    import bluesky.plans as bp

    d = session.devices
    (uid,) = session.RE(bp.count([d["i0"], d["ring_current"]], num=n_events))
    derived = session.derived
    deadline = time.monotonic() + 600
    while not session.catalog[uid].metadata.get("stop") and time.monotonic() < deadline:
        time.sleep(0.25)
    run = session.catalog[uid]
    began = time.perf_counter()
    documents = run_documents(run)
    exported = time.perf_counter() - began
    analyses = recorded_analyses(run, derived)
    began = time.perf_counter()
    replay(run, analyses, derived=derived, progress=False)
    whole = time.perf_counter() - began
    from nanostrain.callbacks.derived import GuardedCallback

    guards = [GuardedCallback(a) for a in recorded_analyses(run, derived)]
    began = time.perf_counter()
    for name, doc in documents:
        for guard in guards:
            guard(name, doc)
    dispatch = time.perf_counter() - began
    n = len(documents)
    print(f"\n(b) replay without frames: a count of {n_events} events, {n} documents, {len(analyses)} analyses")
    print(f"  export by the catalog (run.documents()): {exported:.2f} s, {n / exported:,.0f} documents/s")
    print(f"  dispatch to the analyses alone:          {dispatch:.2f} s, {n / dispatch:,.0f} documents/s")
    print(f"  whole replay:                            {whole:.2f} s, {n / whole:,.0f} documents/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raster", type=int, default=24, help="raster points per side (the demo: 24)")
    parser.add_argument("--angles", type=int, default=21, help="rocking angles (the demo: 21)")
    parser.add_argument("--events", type=int, default=20000, help="events of the run without frames")
    parser.add_argument("--quick", action="store_true", help="a 12x12 raster at 9 angles, 5,000 events")
    parser.add_argument("--plugin-exporter", action="store_true", help="bluesky-tiled-plugins' exporter")
    args = parser.parse_args()
    if args.plugin_exporter:  # the catalog's configuration takes the exporter from this name
        nanostrain.catalog.JSON_SEQ_EXPORTER = "bluesky_tiled_plugins.exporters:json_seq_exporter"
    if args.quick:
        args.raster, args.angles, args.events = 12, 9, 5000
    with tempfile.TemporaryDirectory() as folder:
        session = make_session(data_dir=Path(folder) / "data", persist_metadata=False)
        try:
            began = time.perf_counter()
            uid = sxdm_run(session, args.raster, args.angles)
            print(f"acquired a {args.raster}x{args.raster} x {args.angles} SXDM raster in "
                  f"{time.perf_counter() - began:.1f} s (live analysis inline)")
            bench_frames(session, uid)
            bench_documents(session, args.events)
        finally:
            session.close()


if __name__ == "__main__":
    main()
