"""Benchmark of the SXDM 5D strain analysis (nanostrain.analysis.sxdm).

(b) full analysis: a ny x nx raster x n_theta angles x rows x cols uint16 dataset (default
    100 x 100 x 41 x 256 x 256: 410,000 frames, 54 GB) rendered on the fly, one raster line
    at a time (never stored), streamed into `SxdmAccumulator`; reduction rate, time of the
    final registration + maps, the process's peak resident memory before and after (it is
    run first, so the difference is what the analysis and the on-the-fly rendering of one
    raster line at a time add, numba's included), the first frame's time apart (numba loads
    the compiled kernel: once per process), accuracy against the known strain / tilt field.
(a) streaming reduction rate of 256 x 256 uint16 frames: batches of one raster line, single
    frames, 1 and 2 threads, full frame and a 128 x 128 ROI around the Bragg peak; each
    against the previous reduction (float32 copy of 16 frames at a time + one BLAS product
    with the (pixels, 4) weights, `PreviousAccumulator`, kept here only) on the same frames,
    interleaved, with the largest difference of the sums between the two; the previous
    reduction both as it ran (OpenBLAS's own threads inside each worker's product) and
    with BLAS on one thread per worker (its best).
(c) the XSOCS-style pipeline on a subset of raster points of the same dataset:
    xrayutilities angle -> Q (`QConversion.area`, flat area detector) once, then per raster
    point 3D gridding of all its frames (`FuzzyGridder3D`) and a centre of mass on the grid;
    scaled to the whole raster and compared with (b) measured in the same run.

(a) streams batches of one raster line of a --stream-raster (100) wide raster whatever --raster.

Usage: python benchmarks/bench_sxdm.py [--quick] [--streaming-only] [--raster 100] [--angles 41]
       [--frame 256] [--threads 2] [--stream-frames 2000] [--stream-raster 100]
       [--xsocs-points 16] [--xsocs-grid 64]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage
from threadpoolctl import threadpool_limits

from nanostrain.analysis.sxdm import FRAMES_PER_THREAD, SxdmAccumulator
from nanostrain.analysis.sxdm_geometry import SxdmGeometry, bragg_angle_003, d_tilts_from_q, q_from_d_tilts
from nanostrain.sim.sxdm_render import render_frames

ENERGY_EV = 12000.0
C_A = 14.2
PEAK_SIGMA_INVA = 0.003
PEAK_COUNTS = 200.0
ROCKING_HALF_RANGE_DEG = 1.0
REPEATS = 5


def setup(frame: int, raster: int, n_angles: int) -> tuple[SxdmGeometry, np.ndarray, dict[str, np.ndarray]]:
    """Geometry (55 um pixels at 0.5 m), rocking angles around the (003) Bragg angle and a
    particle filling ~60% of the raster: core-shell strain up to 1e-3, two tilted regions."""
    theta_b = float(bragg_angle_003(C_A, ENERGY_EV))
    geometry = SxdmGeometry(ENERGY_EV, 0.5, 55e-6, ((frame - 1) / 2, (frame - 1) / 2), 2 * theta_b)
    thetas = theta_b + np.linspace(-ROCKING_HALF_RANGE_DEG, ROCKING_HALF_RANGE_DEG, n_angles)
    y, x = (np.mgrid[:raster, :raster] - (raster - 1) / 2) / (0.4 * raster)
    r = np.hypot(y, x)
    d = C_A / 3 * (1 + 1e-3 * r**2)
    theta_xy = np.where((x > 0.1) & (y < -0.1), 0.03, 0.0)
    theta_xz = np.where((x < -0.1) & (y > 0.1), -0.04, 0.0)
    truth = {
        "amplitude": PEAK_COUNTS * np.clip((1 - r) * 0.4 * raster, 0, 1),
        "d": d,
        "theta_xy": theta_xy,
        "theta_xz": theta_xz,
        "q": q_from_d_tilts(d, theta_xy, theta_xz),
    }
    return geometry, thetas, truth


def max_rss_mb() -> float:
    """High-water mark of this process's resident memory (MB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def render_line(geometry, theta, truth, iy: int, frame: int, rng=None) -> np.ndarray:
    """Frames (nx, frame, frame) uint16 of raster line iy at one rocking angle."""
    q = truth["q"][:, iy : iy + 1]
    return render_frames(
        geometry,
        theta,
        q,
        truth["amplitude"][iy : iy + 1],
        PEAK_SIGMA_INVA,
        (frame, frame),
        0.0,
        rng,
        dtype=np.uint16,
    )[0, 0]


def bench_full(geometry, thetas, truth, frame: int, threads: int) -> dict[str, float]:
    ny, nx = truth["amplitude"].shape
    acc = SxdmAccumulator(geometry, thetas, (ny, nx), (frame, frame), n_threads=threads)
    rss_before = max_rss_mb()
    t0 = time.perf_counter()  # the kernel's first call loads numba (once per process): timed apart
    SxdmAccumulator(geometry, thetas, (1, 1), (frame, frame)).add(0, 0, 0, np.zeros((frame, frame), np.uint16))
    t_first = time.perf_counter() - t0
    t_render = t_add = 0.0
    start = time.perf_counter()
    for t, theta in enumerate(thetas):
        for iy in range(ny):
            t0 = time.perf_counter()
            frames = render_line(geometry, theta, truth, iy, frame)
            t1 = time.perf_counter()
            acc.add_many(t, iy, np.arange(nx), frames)
            t_add += time.perf_counter() - t1
            t_render += t1 - t0
        print(f"\r  angle {t + 1}/{thetas.size}", end="", flush=True)
    t0 = time.perf_counter()
    maps = acc.result()
    t_result = time.perf_counter() - t0
    wall = time.perf_counter() - start
    print()
    inside = maps.mask
    d_ref = np.median(truth["d"][inside])
    strain_err = np.abs(maps.dd_over_d - (truth["d"] - d_ref) / d_ref)[inside].max()
    tilt_err = np.max(
        [
            np.abs(getattr(maps, k) - (truth[k] - np.median(truth[k][inside])))
            for k in ("theta_xy", "theta_xz")
        ],
        axis=0,
    )
    interior = ndimage.binary_erosion(
        inside
    )  # edge pixels mix with weak neighbours at ~0.02 px registration bias
    n_frames = thetas.size * ny * nx
    lean = SxdmAccumulator(geometry, thetas, (ny, nx), (frame, frame), shifts_px=np.zeros((thetas.size, 2)))
    return {
        "frames": n_frames,
        "dataset_GB": n_frames * frame * frame * 2 / 1e9,
        "reduce_s": t_add,
        "reduce_frames_per_s": n_frames / t_add,
        "result_s": t_result,
        "first_frame_s (numba load, once per process)": t_first,
        "analysis_s": t_add + t_result,
        "render_s": t_render,
        "wall_s": wall,
        "state_MB_per_angle_mode": acc.nbytes / 1e6,
        "state_MB_known_shifts_mode": lean.nbytes / 1e6,
        "max_rss_before_MB": rss_before,
        "max_rss_after_MB": max_rss_mb(),
        "max_strain_error": float(strain_err),
        "max_tilt_error_deg": float(tilt_err[inside].max()),
        "max_tilt_error_deg_interior": float(tilt_err[interior].max()),
        "particle_pixels": int(inside.sum()),
    }


class PreviousAccumulator(SxdmAccumulator):
    """`SxdmAccumulator` with the reduction it had before the numba kernel (the reference here):
    the ROI of 16 frames at a time copied to float32, then one BLAS product with the weights."""

    def _reduce(self, frames: np.ndarray) -> np.ndarray:
        cropped = frames[(slice(None),) + self._roi]
        n_workers = min(self._n_threads, cropped.shape[0] // FRAMES_PER_THREAD)
        if n_workers <= 1:
            return self._reduce_block(cropped)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._n_threads)
        return np.concatenate(list(self._pool.map(self._reduce_block, np.array_split(cropped, n_workers))))

    def _reduce_block(self, frames: np.ndarray) -> np.ndarray:
        weights = self._weights.reshape(4, -1).T  # (pixels, 4) float32
        n = frames.shape[0]
        buffer = np.empty((min(n, 16),) + frames.shape[1:], dtype=np.float32)
        flat = buffer.reshape(buffer.shape[0], -1)
        out = np.empty((n, 4), dtype=np.float32)
        for start in range(0, n, 16):
            k = min(16, n - start)
            np.copyto(buffer[:k], frames[start : start + k], casting="unsafe")
            np.matmul(flat[:k], weights, out=out[start : start + k])
        return out.astype(np.float64)


def bench_streaming(geometry, thetas, truth, frame: int, threads: int, n_frames: int) -> dict[str, float]:
    ny, nx = truth["amplitude"].shape
    centre = int(np.argmin(np.abs(thetas - geometry.two_theta_deg / 2)))
    n_lines = min(ny, -(-n_frames // nx))
    lines = [  # raster lines across the middle of the particle
        render_line(geometry, thetas[centre], truth, iy, frame, np.random.default_rng(iy))
        for iy in range((ny - n_lines) // 2, (ny + n_lines) // 2)
    ]
    pool = np.concatenate(lines)[:n_frames]
    n = pool.shape[0]
    iy, ix = np.divmod(np.arange(n), nx)
    half = frame // 4
    roi = (frame // 2 - half, frame // 2 + half, frame // 2 - half, frame // 2 + half)
    out = {}
    line_batches = [slice(s, s + nx) for s in range(0, n, nx)]
    for label, n_thr, region in (
        ("1 thread", 1, None),
        (f"{threads} threads", threads, None),
        (f"{threads} threads, ROI {2 * half}^2", threads, roi),
    ):
        accs = {
            key: kind(geometry, thetas, (ny, nx), (frame, frame), roi=region, n_threads=n_thr)
            for key, kind in (("ours", SxdmAccumulator), ("previous", PreviousAccumulator))
        }
        def add(key: str) -> Callable[[slice], None]:
            return lambda b: accs[key].add_many(centre, iy[b], ix[b], pool[b])

        # name: (add a batch, BLAS threads per product: None = OpenBLAS's default). The
        # previous reduction as it ran is timed on its own: OpenBLAS's threads keep spinning
        # after a product and would slow whatever runs next.
        rates = fastest_rates(
            {"ours": (add("ours"), None), "previous, BLAS 1 thread": (add("previous"), 1)}, line_batches
        )
        rates |= fastest_rates({"previous": (add("previous"), None)}, line_batches)
        out[f"batch of {nx} frames, {label}"] = rates["ours"]
        for key in ("previous, BLAS 1 thread", "previous"):
            out[f"  {key}, {label}"] = rates[key]
            out[f"  ratio to {key}, {label}"] = rates["ours"] / rates[key]
        ours, theirs = (acc._sums[centre].reshape(-1, 4) for acc in accs.values())
        difference = np.max(np.abs(ours / 5 - theirs / 10) / np.abs(ours / 5).max(axis=0))  # 5 and 10 passes
        out[f"  max |sums difference| / max |sums|, {label}"] = float(difference)
    accs = {
        key: kind(geometry, thetas, (ny, nx), (frame, frame), n_threads=1)
        for key, kind in (("ours", SxdmAccumulator), ("previous", PreviousAccumulator))
    }

    def add_one_by_one(acc: SxdmAccumulator, batch: slice) -> None:
        for i in range(batch.start, batch.stop):
            acc.add(centre, iy[i], ix[i], pool[i])

    rates = fastest_rates(
        {key: (lambda b, acc=acc: add_one_by_one(acc, b), 1) for key, acc in accs.items()},
        [slice(s, s + 10) for s in range(0, min(n, 300), 10)],
    )
    out["single add() per frame"] = rates["ours"]
    out["  previous, BLAS 1 thread, single add()"] = rates["previous"]
    return out


def fastest_rates(runs: dict, batches: list[slice], repeats: int = REPEATS) -> dict[str, float]:
    """Frames/s of each run {name: (add(batch), BLAS threads or None)}: per batch the fastest of
    `repeats` passes, summed over the batches. Runs alternate batch by batch, so that all see
    the same load from other work, and the fastest pass of each short batch approaches the
    rate of an idle machine."""
    fastest = {key: np.full(len(batches), np.inf) for key in runs}
    for _ in range(repeats):
        for i, batch in enumerate(batches):
            for key, (add, blas_threads) in runs.items():
                with threadpool_limits(blas_threads, user_api="blas"):
                    t0 = time.perf_counter()
                    add(batch)
                    fastest[key][i] = min(fastest[key][i], time.perf_counter() - t0)
    n_frames = sum(b.stop - b.start for b in batches)
    return {key: n_frames / times.sum() for key, times in fastest.items()}


def bench_xsocs(
    geometry, thetas, truth, frame: int, points: int, grid: int, ours_full_s: float
) -> dict[str, float]:
    import xrayutilities as xu

    ny, nx = truth["amplitude"].shape
    iy = ny // 2
    cols = np.linspace(nx * 0.3, nx * 0.7, points).astype(int)
    sub = {k: v[..., iy : iy + 1, cols] for k, v in truth.items()}
    frames = render_frames(
        geometry,
        thetas,
        sub["q"],
        sub["amplitude"],
        PEAK_SIGMA_INVA,
        (frame, frame),
        0.0,
        np.random.default_rng(0),
        dtype=np.uint16,
    )[
        :, 0
    ]  # (n_theta, points, rows, cols)

    # Same geometry in xrayutilities: beam along +z, sample rocking about +y at th - 90 deg,
    # detector arm 2theta about +y then gamma about -x, flat detector with rows along -y.
    t0 = time.perf_counter()
    qconv = xu.experiment.QConversion(["y+"], ["y+", "x-"], [0, 0, 1], en=geometry.energy_eV)
    qconv.init_area(
        "y-",
        "x+",
        cch1=geometry.center_px[0],
        cch2=geometry.center_px[1],
        Nch1=frame,
        Nch2=frame,
        distance=geometry.distance_m,
        pwidth1=geometry.pixel_m,
        pwidth2=geometry.pixel_m,
    )
    n = thetas.size
    qx, qy, qz = qconv.area(thetas - 90.0, np.full(n, geometry.two_theta_deg), np.full(n, geometry.gamma_deg))
    gridder = xu.FuzzyGridder3D(grid, grid, grid)
    gridder.dataRange(qx.min(), qx.max(), qy.min(), qy.max(), qz.min(), qz.max(), fixed=True)
    t_conv = time.perf_counter() - t0

    t0 = time.perf_counter()
    centres = []
    for p in range(points):
        gridder(qx, qy, qz, frames[:, p].astype(np.float64))
        data = gridder.data
        total = data.sum()
        centres.append(
            [
                np.dot(data.sum(axis=(1, 2)), gridder.xaxis) / total,
                np.dot(data.sum(axis=(0, 2)), gridder.yaxis) / total,
                np.dot(data.sum(axis=(0, 1)), gridder.zaxis) / total,
            ]
        )
    t_points = time.perf_counter() - t0

    t0 = time.perf_counter()
    acc = SxdmAccumulator(
        geometry, thetas, (1, points), (frame, frame), shifts_px=np.zeros((n, 2)), n_threads=1
    )
    for t in range(n):
        acc.add_many(t, 0, np.arange(points), frames[t])
    ours = acc.result(particle_mask=np.ones((1, points), dtype=bool))
    t_ours_subset = time.perf_counter() - t0

    d_true = sub["d"][0]
    scaled = t_conv + t_points / points * ny * nx
    return {
        "subset_points": points,
        "xu_conversion_s": t_conv,
        "xsocs_per_point_s": t_points / points,
        "ours_per_point_s_subset": t_ours_subset / points,
        "xsocs_scaled_full_s": scaled,
        "ours_full_measured_s": ours_full_s,
        "speedup_full": scaled / ours_full_s,
        "speedup_per_point_subset": (t_points / points) / (t_ours_subset / points),
        # grid discretisation dominates the XSOCS error (it shrinks with --xsocs-grid)
        "xsocs_max_rel_d_error": float(np.abs(d_tilts_from_q(np.array(centres).T)[0] / d_true - 1).max()),
        "ours_max_rel_d_error": float(np.abs(ours.d[0] / d_true - 1).max()),
    }


def report(title: str, values: dict[str, float]) -> None:
    print(f"== {title}")
    for key, value in values.items():
        print(f"   {key:62s} {value:,.6g}" if isinstance(value, float) else f"   {key:62s} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 x 20 raster, 11 angles, 4 XSOCS points")
    parser.add_argument("--raster", type=int, default=100)
    parser.add_argument("--angles", type=int, default=41)
    parser.add_argument("--frame", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stream-frames", type=int, default=2000)
    parser.add_argument("--stream-raster", type=int, default=100, help="(a): frames per batch (a raster line)")
    parser.add_argument("--streaming-only", action="store_true", help="run (a) only")
    parser.add_argument("--xsocs-points", type=int, default=16)
    parser.add_argument("--xsocs-grid", type=int, default=64)
    args = parser.parse_args()
    if args.quick:
        args.raster, args.angles, args.xsocs_points, args.stream_frames = 20, 11, 4, 400

    def streaming() -> None:
        data = setup(args.frame, args.stream_raster, args.angles)
        values = bench_streaming(*data, args.frame, args.threads, args.stream_frames)
        report(f"(a) streaming reduction, frames/s (fastest of {REPEATS} per batch) against the previous", values)

    if args.streaming_only:
        streaming()
        return
    geometry, thetas, truth = setup(args.frame, args.raster, args.angles)
    print(
        f"dataset: {args.raster} x {args.raster} raster, {args.angles} angles,"
        f" {args.frame} x {args.frame} uint16 frames"
    )
    full = bench_full(geometry, thetas, truth, args.frame, args.threads)  # first: its memory figures
    report("(b) full analysis, frames rendered on the fly (render time excluded from rates)", full)
    streaming()
    report(
        "(c) XSOCS-style (xrayutilities Ang2Q + FuzzyGridder3D + centre of mass) vs nanostrain",
        bench_xsocs(
            geometry, thetas, truth, args.frame, args.xsocs_points, args.xsocs_grid, full["analysis_s"]
        ),
    )

if __name__ == "__main__":
    main()
