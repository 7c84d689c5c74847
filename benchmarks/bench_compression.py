"""Benchmark of lossless compression of detector frames (nanostrain.devices.hdf5_compression):
size on disk, compression ratio, and write/read throughput of each NDFileHDF5
``Compression`` choice, against uncompressed frames.

Frames: simulated operando XRD frames of the demo's panel (PerkinElmer binned to
1024 x 1024, a layered cathode at 1.5 m, 0.1665 A, 1 s exposure, counting noise;
`nanostrain.sim.powder.PowderRenderer`), stored as uint32 (what the simulated panel
writes) and as uint16 (what ADPerkinElmer writes); or, with ``--files DIR``, the frames
of every detector HDF5 file under DIR (e.g. a demo's ``<data dir>/detectors``), rewritten
as each choice. Each frame is written as the detectors write it (one frame per chunk, a
flush per frame) and read back whole; read-back frames are checked bit-identical.

Throughputs are of uncompressed bytes (MB/s = 1e6 bytes of frames per second), best of
--repeats, single process, on this machine (2 cores, shared).

Usage: python benchmarks/bench_compression.py [--frames 20] [--shape 1024] [--repeats 3]
       [--files DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from nanostrain.analysis.xrd import perkinelmer_geometry
from nanostrain.devices.hdf5_compression import COMPRESSIONS, dataset_options
from nanostrain.sim.cathode import LatticeState
from nanostrain.sim.powder import PowderRenderer

DATA_PATH = "/entry/data/data"


def xrd_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` operando-like XRD frames (uint32), the c lattice parameter drifting as on charge."""
    renderer = PowderRenderer(perkinelmer_geometry(1.5, 0.1665, 2048 // size))
    rng = np.random.default_rng(seed)
    frames = []
    for c_A in np.linspace(14.20, 14.40, n):
        lattice = LatticeState(np.array([2.87]), np.array([c_A]), np.array([1.0]))
        frames.append(renderer.render(lattice, 1e-3, 4e4, 1.0, rng))
    return np.asarray(frames, dtype=np.uint32)


def recorded_frames(folder: Path) -> dict[str, np.ndarray]:
    """The frames of every ``*.h5`` file under ``folder``, grouped by frame shape and dtype."""
    groups: dict[str, list[np.ndarray]] = {}
    for path in sorted(folder.rglob("*.h5")):
        with h5py.File(path, "r") as f:
            if DATA_PATH in f:
                data = f[DATA_PATH][()]
                groups.setdefault(f"{data.shape[1]}x{data.shape[2]} {data.dtype}", []).append(data)
    return {key: np.concatenate(stacks) for key, stacks in groups.items()}


def write(path: Path, frames: np.ndarray, compression: str) -> float:
    """Write ``frames`` one at a time as a detector does; return the seconds it took."""
    started = time.perf_counter()
    with h5py.File(path, "w", libver="latest") as f:
        data = f.create_dataset(DATA_PATH, shape=(0, *frames.shape[1:]), maxshape=(None, *frames.shape[1:]),
                                dtype=frames.dtype, **dataset_options(compression, frames.shape[1:]))
        for index, frame in enumerate(frames):
            data.resize(index + 1, axis=0)
            data[index] = frame
            data.flush()
    return time.perf_counter() - started


def read(path: Path, frames: np.ndarray) -> float:
    """Read every frame back one at a time; check it is bit-identical; return the seconds."""
    started = time.perf_counter()
    with h5py.File(path, "r") as f:
        data = f[DATA_PATH]
        for index in range(len(data)):
            if not np.array_equal(data[index], frames[index]):
                raise AssertionError(f"frame {index} of {path} differs after the round trip")
    return time.perf_counter() - started


def measure(label: str, frames: np.ndarray, repeats: int, folder: Path) -> None:
    raw_mb = frames.nbytes / 1e6
    print(f"\n{label}: {len(frames)} frames, {raw_mb:.1f} MB uncompressed, max {frames.max()} counts")
    print(f"{'compression':>12} {'MB on disk':>11} {'ratio':>7} {'write MB/s':>11} {'read MB/s':>10}")
    for compression in COMPRESSIONS:
        path = folder / f"{compression}.h5"
        write_s = min(write(path, frames, compression) for _ in range(repeats))
        read_s = min(read(path, frames) for _ in range(repeats))
        size_mb = os.path.getsize(path) / 1e6
        print(f"{compression:>12} {size_mb:11.1f} {raw_mb / size_mb:7.2f} {raw_mb / write_s:11.0f} {raw_mb / read_s:10.0f}")
        path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="simulated XRD frames")
    parser.add_argument("--shape", type=int, default=1024, help="frame side (2048 / binning)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--files", type=Path, help="measure the frames of the detector files under this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.files:
            for key, frames in recorded_frames(args.files).items():
                measure(f"recorded {key}", frames, args.repeats, Path(tmp))
            return
        frames = xrd_frames(args.frames, args.shape)
        measure(f"simulated XRD {args.shape}x{args.shape} uint32", frames, args.repeats, Path(tmp))
        if frames.max() <= np.iinfo(np.uint16).max:
            measure("the same as uint16", frames.astype(np.uint16), args.repeats, Path(tmp))


if __name__ == "__main__":
    main()
