"""Benchmark: `nanostrain analyze` of a TXM-XANES tomography on 1 and 2 dask workers.

A XANES tomography of ``--energies`` energies (8340-8360 eV) x ``--angles`` angles
(0-180 deg) of ``--shape``^2 pixels is taken on the simulated microscope (the default
charged SC-NM91 particle, ~80 % of the field) into an embedded catalog, with no live
analysis (the in-memory reducer would need 4 x energies x angles x pixels bytes of
absorbance and as much again of volumes). Then `nanostrain.analyze_txm` reduces it on a
`LocalCluster` of 1 and of 2 single-threaded workers, each into a new zarr store.

Prints: acquisition time; per cluster size the wall time of each phase (normalise,
shifts, register, reconstruct, edge jump, histogram, mask, sample, white line), the
total and the ratio 1 worker / 2 workers, the peak resident memory of each worker
(VmHWM) and of this process, the store's size on disk; the white-line energy
against the specimen's truth (mean over the particle, RMS per voxel); and whether the
two runs' arrays are equal; and, after the last cluster size, the time and this
process's memory to publish the result (`analyze --write`: the derived run into the
catalog, the volumes copied into HDF5).

The default is 1/8 of an FXI scan (21 x 721 x 1024^2): 21 x 181 x 512^2.

Usage: python benchmarks/bench_analyze_txm.py [--shape 512] [--angles 181] [--energies 21]
       [--task-mib 256] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from bench_analyze import peak_rss_mib

from nanostrain.analyze import dask_client
from nanostrain.analyze_txm import plan, publish, reduce
from nanostrain.beamline import connect_devices, detector_path_provider
from nanostrain.devices.txm import SimTxm
from nanostrain.session import make_session

API_KEY = "benchkey"
PARTICLE_UM = 4.0  # the simulated single crystal's diameter, about


class Prerendered:
    """``specimen`` with its projections at every scan energy rendered before the scan: at
    512^2 pixels one energy's render (the camera's first frame there) outlasts the
    camera's trigger timeout. Other energies are rendered when asked."""

    def __init__(self, specimen, energies_eV: np.ndarray, grid_deg: np.ndarray):
        self.specimen, self.shape, self.whiteline_eV = specimen, specimen.shape, specimen.whiteline_eV
        self.energies_eV, self.grid_deg = np.asarray(energies_eV), grid_deg
        self.stacks = [specimen.projections(float(e), grid_deg) for e in self.energies_eV]

    def projections(self, energy_eV: float, angles_deg: np.ndarray) -> np.ndarray:
        nearest = int(np.argmin(np.abs(self.energies_eV - energy_eV)))
        if abs(self.energies_eV[nearest] - energy_eV) < 1e-3 and np.array_equal(angles_deg, self.grid_deg):
            return self.stacks[nearest]
        return self.specimen.projections(energy_eV, angles_deg)


def publish_to_catalog(session, job, result) -> None:
    """`analyze --write`'s last step, timed: the derived run into the catalog, its volumes
    copied from the store into HDF5; prints the time, this process's peak memory during
    the copy (VmHWM reset first) and the file's size."""
    from bluesky_tiled_plugins import TiledWriter

    from nanostrain.callbacks.external_arrays import ExternalArrays
    from nanostrain.derived_files import HDF5ArraySink
    from nanostrain.schema.catalog import SupersedingWriter

    writer = SupersedingWriter(TiledWriter(session.derived), session.derived)
    before = peak_rss_mib()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    began = time.perf_counter()
    documents = publish(job, result, ExternalArrays(HDF5ArraySink(session.settings.derived_dir), writer))
    writer.flush()
    wall = time.perf_counter() - began
    uid = documents[0][1]["uid"]
    size = sum(f.stat().st_size for f in (session.settings.derived_dir / uid).glob("*.h5"))
    print(f"  published (analyze --write): {wall:.1f} s; this process peaked at {peak_rss_mib():.0f} MiB during the "
          f"copy ({before:.0f} MiB before); derived files {size / 2**20:.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, default=512, help="camera side (pixels)")
    parser.add_argument("--angles", type=int, default=181, help="rotation angles over 0-180 deg")
    parser.add_argument("--energies", type=int, default=21, help="energies over 8340-8360 eV")
    parser.add_argument("--task-mib", type=float, default=256.0, help="volume slab per task (MiB)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="cluster sizes to run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nanostrain-bench-txm-"))
    session = make_session(data_dir=work / "data", api_key=API_KEY, persist_metadata=False, live_analysis=False)
    txm = SimTxm(detector_path_provider(session.settings.detector_dir), shape=(args.shape, args.shape),
                 pixel_size_um=PARTICLE_UM / (0.8 * args.shape), name="txm")
    session.devices["txm"] = txm
    connect_devices({"txm": txm})
    energies, angles = np.linspace(8340.0, 8360.0, args.energies), np.linspace(0.0, 180.0, args.angles)
    imaging = txm.scene.imaging
    imaging.angle_step_deg = 180.0 / (args.angles - 1)  # the cached render's grid: the scan's angles
    imaging.grid_deg = angles
    began = time.perf_counter()
    txm.mount(Prerendered(txm.specimen, energies, angles))
    print(f"  rendered the specimen's projections in {time.perf_counter() - began:.0f} s", flush=True)
    frames = args.energies * args.angles
    print(f"XANES tomography {args.energies} energies x {args.angles} angles x {args.shape}^2 "
          f"({frames} projections, {frames * args.shape**2 * 2 / 2**30:.2f} GiB as uint16)", flush=True)
    began = time.perf_counter()
    (uid,) = session.RE(session.plans["txm_xanes_tomo"](txm, energies, angles, n_flats=5, n_darks=5, exposure_s=0.01,
                                                         sample={"name": "charged SC-NM91"}))
    print(f"  acquired in {time.perf_counter() - began:.0f} s; this process peaked at {peak_rss_mib():.0f} MiB",
          flush=True)
    truth = txm.specimen.whiteline_eV
    task_bytes = int(args.task_mib * 2**20)
    results = {}
    for workers in args.workers:
        store = work / f"store-{workers}.zarr"
        job = plan(session.catalog[uid], session.server.uri, API_KEY, store, session.derived, task_bytes=task_bytes)
        with dask_client(workers=workers) as client:
            began = time.perf_counter()
            result = reduce(job, client, progress=False)
            wall = time.perf_counter() - began
            peaks = client.run(peak_rss_mib)
        size = subprocess.run(["du", "-sb", str(store)], capture_output=True, text=True).stdout.split()[0]
        print(f"  {workers} worker(s): {wall:.0f} s; peak per worker "
              f"{', '.join(f'{p:.0f}' for p in peaks.values())} MiB; store {int(size) / 2**30:.2f} GiB", flush=True)
        print("    " + ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in result.phase_seconds.items()),
              flush=True)
        wl = zarr.open_group(store, mode="r")["wl_eV"][:]
        if workers == args.workers[-1]:
            publish_to_catalog(session, job, result)
        shutil.rmtree(store)  # the next store needs the disk
        results[workers] = (wall, result, wl)
        both = np.isfinite(wl) & np.isfinite(truth)
        stats = result.statistics
        print(f"    white line: mean {stats.mean_eV:.3f} eV (truth over the particle {np.nanmean(truth):.3f} eV), "
              f"RMS per voxel {np.sqrt(np.mean((wl - truth)[both] ** 2)):.3f} eV over {both.sum()} voxels, "
              f"{result.n_components} PCA components", flush=True)
    if len(results) >= 2:
        (w1, (t1, _, a)), (w2, (t2, _, b)) = list(results.items())[:2]
        print(f"  {w1} vs {w2} workers: {t1 / t2:.2f}x; white-line arrays equal: {np.array_equal(a, b, equal_nan=True)}")
    print(f"  this process peaked at {peak_rss_mib():.0f} MiB")
    session.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
