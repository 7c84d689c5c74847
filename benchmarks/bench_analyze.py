"""Benchmark: the SXDM strain analysis of a stored run on dask.distributed (`nanostrain.analyze`).

The demo's SXDM raster (``--raster``^2 points x ``--angles`` rocking angles of the
simulated Merlin's 64x64 uint16 frames, fly mode; `bench_replay.sxdm_run`) is acquired
once into an embedded catalog on a data folder, then analysed:

* single process, the reference: replay of the recorded ``sxdm_strain`` analysis (the live
  code, frames from the detector file in 64 MiB blocks), and `analyze.reduce` with no
  cluster (the same tasks one after the other in this process);
* on a `LocalCluster` of 1 and of 2 single-threaded worker processes: `analyze.reduce`
  (tasks of ``--task-mib`` of frames; cluster start-up timed apart; a first, cold pass,
  which loads nanostrain and the numba kernel in each worker, then the warm pass timed)
  and `analyze.publish`; the peak resident memory of each worker process
  (VmHWM, through ``Client.run``) beside its memory once nanostrain is imported.

Every result's maps are compared with the live derived run's (they must be equal).

Usage: python benchmarks/bench_analyze.py [--raster 24] [--angles 21] [--task-mib 1] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_replay import MAPS, maps_of, stored, sxdm_run

from nanostrain.analyze import dask_client, plan, publish, reduce
from nanostrain.replaying import recorded_analyses, replay
from nanostrain.session import make_session


def peak_rss_mib() -> float:
    """Peak resident memory of the calling process (MiB): VmHWM, the high-water mark of
    its own address space (``ru_maxrss`` is kept across exec, so a worker spawned from a
    large process would report its parent's peak)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def _rss_with_nanostrain_mib() -> float:
    """A worker's resident memory once it has imported what a task needs (before any task)."""
    import psutil

    import nanostrain.analyze  # noqa: F401

    return psutil.Process().memory_info().rss / 2**20


def _equal(published, reference) -> bool:
    maps = maps_of(published)
    return all(np.allclose(maps[key], reference[key], rtol=1e-10, atol=1e-15, equal_nan=True) for key in MAPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raster", type=int, default=24, help="raster points per side (the demo: 24)")
    parser.add_argument("--angles", type=int, default=21, help="rocking angles (the demo: 21)")
    parser.add_argument("--task-mib", type=float, default=1.0,
                        help="MiB of frames per task (nanostrain analyze: 256; small here so the small "
                             "simulated frames make enough tasks for two workers)")
    parser.add_argument("--quick", action="store_true", help="a 12x12 raster at 9 angles")
    args = parser.parse_args()
    if args.quick:
        args.raster, args.angles = 12, 9
    with tempfile.TemporaryDirectory() as folder:
        session = make_session(data_dir=Path(folder) / "data", persist_metadata=False)
        try:
            uid = sxdm_run(session, args.raster, args.angles)
            run, live = stored(session, uid, "sxdm_strain")
            reference = {key: np.asarray(live["maps"][key].read())[-1] for key in MAPS}
            job = plan(run, session.server.uri, session.settings.api_key, session.derived,
                       task_bytes=int(args.task_mib * 2**20))
            frames = job.n_frames
            print(f"{args.raster}x{args.raster} x {args.angles} SXDM raster: {frames} frames of 64x64 uint16, "
                  f"{len(job.tasks)} tasks of <= {len(job.tasks[0].seq_nums)} frames ({args.task_mib} MiB)")
            print(f"{'how':<44}{'time s':>8}{'frames/s':>10}{'vs replay':>10}  maps equal live")
            analyses = [a for a in recorded_analyses(run, session.derived) if a.analysis == "sxdm_strain"]
            began = time.perf_counter()
            published = replay(run, analyses, derived=session.derived, progress=False)
            base = time.perf_counter() - began
            print(f"{'replay, single process (reference)':<44}{base:>8.2f}{frames / base:>10,.0f}{1.0:>9.2f}x  "
                  f"{_equal(published, reference)}")
            began = time.perf_counter()
            published = publish(job, reduce(job, None, progress=False))
            seconds = time.perf_counter() - began
            print(f"{'analyze without a cluster (same tasks)':<44}{seconds:>8.2f}{frames / seconds:>10,.0f}"
                  f"{base / seconds:>9.2f}x  {_equal(published, reference)}")
            timings = {}
            for workers in (1, 2):
                began = time.perf_counter()
                with dask_client(workers=workers) as client:
                    start_up = time.perf_counter() - began
                    baseline = client.run(_rss_with_nanostrain_mib)
                    began = time.perf_counter()
                    reduce(job, client, progress=False)
                    cold = time.perf_counter() - began
                    began = time.perf_counter()
                    published = publish(job, reduce(job, client, progress=False))
                    seconds = timings[workers] = time.perf_counter() - began
                    peaks = client.run(peak_rss_mib)
                print(f"{f'LocalCluster, {workers} worker(s), warm':<44}{seconds:>8.2f}{frames / seconds:>10,.0f}"
                      f"{base / seconds:>9.2f}x  {_equal(published, reference)}")
                print(f"    cluster start {start_up:.1f} s, first (cold) pass {cold:.2f} s; per worker: RSS with "
                      "nanostrain imported, before any task -> peak RSS: "
                      + ", ".join(f"{baseline[w]:.0f} -> {peaks[w]:.0f} MiB" for w in peaks))
            print(f"2 workers vs 1: {timings[1] / timings[2]:.2f}x")
            state = job.tasks[0].raster.thetas_deg.size * args.raster**2 * 32
            print(f"memory model per worker: task frames {len(job.tasks[0].seq_nums) * 64 * 64 * 2 / 2**20:.1f} MiB "
                  f"+ accumulator state {state / 2**20:.2f} MiB (+ the Python process: nanostrain, numba, dask)")
        finally:
            session.close()


if __name__ == "__main__":
    main()
