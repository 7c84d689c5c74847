"""Per-frame XRD reduction: nanostrain's Integrator + (003) fit against pyFAI integrate1d.

    python benchmarks/bench_xrd_reduction.py [--frames 10] [--phases auto] [--threads 1] ...

Frames: PerkinElmer 2048 x 2048, 200 um pixels, beam at the panel centre. Each frame is
the powder pattern of an R-3m cathode (a = 2.87 A, c shrinking from 14.20 to 13.80 A over
the run, as on charge; every other frame H2 and H3 coexisting, c +- 0.2 A, H3 fraction
0.3-0.7) plus the Al current collector and a smooth background, averaged over 2 x 2
points inside every pixel (the detector integrates over its pixel) and drawn as Poisson
counts. Per frame, in the same run and on the same frame, it times
  ours:  Integrator(frame), without ("no") and with pyFAI's bounding-box pixel splitting
         ("bbox"), each + fit_reflection around (003) with n_phases=--phases
  pyFAI: ai.integrate1d(frame, npt, unit="q_A^-1"), default settings (bbox pixel
         splitting, CSR engine, OpenMP on every core), after a warm-up call that builds
         its engine
(the three in a rotating order, 50 ms apart so that no call pays for the threads of the
one before) and compares the fitted (003) centres with
the true ones. Times are medians over the frames: wall clock, and the process CPU time
(every thread's; less sensitive to load from other work than the wall clock).

Agreement of I(Q) with pyFAI's default is measured on an independent frame: one drawn by
the beamline simulator (`nanostrain.sim.powder.PowderRenderer`: structure factors,
polarization, dark counts), counts and noise-free, in the same geometry; median over the
bins of |dI / I| (ours on pyFAI's bins: "bbox" has them; "no" also interpolated at
pyFAI's bin centres from its own bins).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from nanostrain.analysis import xrd
from nanostrain.sim.cathode import LatticeState
from nanostrain.sim.powder import PowderRenderer

A_A = 2.87
C_START_A, C_END_A = 14.20, 13.80
FWHM_Q = 0.015  # 1/A
SPLIT_A = 0.4  # c(H2) - c(H3) of the two-phase frames, A


def pattern(q: np.ndarray, phases: list[tuple[float, float]]) -> np.ndarray:
    """Expected counts per pixel at Q (1/A) for phases [(c_A, weight), ...] of a = A_A."""
    counts = 40.0 + 60.0 * np.exp(-q / 2.5)
    q_range = (0.3, float(q.max()) + 0.1)
    for c_A, weight in phases:
        for line in xrd.r3m_reflections(A_A, c_A, q_range):
            counts += xrd.pseudo_voigt(q, line.q, FWHM_Q, 0.3, area=3.0 * weight * line.multiplicity / line.q)
    for line in xrd.al_reflections(q_range):
        counts += xrd.pseudo_voigt(q, line.q, 0.8 * FWHM_Q, 0.2, area=2.0 * line.multiplicity / line.q)
    return counts


def subpixel_q(distance_m: float, wavelength_A: float) -> list[np.ndarray]:
    """|Q| at the 2 x 2 points (+-1/4 pixel) inside every pixel: shifting the beam centre
    by -delta moves every pixel by +delta on an untilted panel."""
    centre = xrd.PERKINELMER_SHAPE[0] / 2
    shifts = [(dy, dx) for dy in (-0.25, 0.25) for dx in (-0.25, 0.25)]
    return [
        xrd.pixel_q(xrd.perkinelmer_geometry(distance_m, wavelength_A, center_px=(centre - dy, centre - dx)))
        .astype(np.float32)
        for dy, dx in shifts
    ]


def render(points: list[np.ndarray], phases: list[tuple[float, float]], rng: np.random.Generator) -> np.ndarray:
    grid = np.linspace(0.0, float(max(p.max() for p in points)) + 0.01, 60_000)
    profile = pattern(grid, phases)
    expected = np.mean([np.interp(p, grid, profile) for p in points], axis=0)
    return rng.poisson(expected).astype(np.float32)


CPU = {}  # (name, kind) -> process CPU seconds of the last timed call (all threads)


def timed(function, *args, **kwargs):
    start, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    CPU["last"] = time.process_time() - cpu
    return result, time.perf_counter() - start


def frame_phases(i: int, n: int) -> list[tuple[float, float]]:
    """The cell(s) of frame i of n: one phase on even frames, H2 + H3 on odd ones."""
    c_A = C_START_A + (C_END_A - C_START_A) * i / max(n - 1, 1)
    if i % 2 == 0:
        return [(c_A, 1.0)]
    fraction = 0.3 + 0.4 * i / max(n - 1, 1)
    return [(c_A + SPLIT_A / 2, 1.0 - fraction), (c_A - SPLIT_A / 2, fraction)]


def agreement(ai, integrators: dict, npt: int, bench_frame: np.ndarray) -> dict[str, float]:
    """Median |dI/I| against pyFAI's default on an independent (simulator) frame, with
    counting noise and noise-free, and on a frame of this benchmark (~90 counts a pixel)."""
    renderer = PowderRenderer(ai)
    cell = LatticeState(a_A=np.array([2.86]), c_A=np.array([14.1]), weight=np.array([1.0]))
    frames = {
        "simulator, counts": renderer.render(cell, 1e-3, 2e4, 1.0, np.random.default_rng(11)).astype(np.float32),
        "simulator, noise-free": renderer.expected_frame(cell, 1e-3, 2e4, 1.0),
        "benchmark frame": bench_frame,
    }
    out = {}
    for kind, frame in frames.items():
        reference = ai.integrate1d(frame, npt, unit="q_A^-1")
        good = reference.intensity > 0
        for name, integrator in integrators.items():
            q, intensity = integrator(frame)
            if name == "bbox":  # pyFAI's bins
                rel = intensity[good] / reference.intensity[good] - 1
                out[f"{name}, same bins, {kind}"] = float(np.nanmedian(np.abs(rel)))
            else:
                inside = good & (reference.radial >= q[0]) & (reference.radial <= q[-1])
                rel = np.interp(reference.radial[inside], q, intensity) / reference.intensity[inside] - 1
                out[f"{name}, interpolated, {kind}"] = float(np.median(np.abs(rel)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--wavelength", type=float, default=0.1665, help="angstrom (11-ID-C; 17-BM: 0.4520)")
    parser.add_argument("--distance", type=float, default=1.0, help="sample-detector distance, m")
    parser.add_argument("--npt", type=int, default=2000)
    parser.add_argument("--phases", default="auto", choices=["1", "2", "auto"], help="n_phases of the (003) fit")
    parser.add_argument("--threads", type=int, default=1, help="threads of our integration (pyFAI: OpenMP, all cores)")
    args = parser.parse_args()
    n_phases = args.phases if args.phases == "auto" else int(args.phases)

    load_start = os.getloadavg()[0]
    ai = xrd.perkinelmer_geometry(args.distance, args.wavelength)
    points = subpixel_q(args.distance, args.wavelength)
    rng = np.random.default_rng(2025)
    ours, setup = {}, {}
    for split in ("no", "bbox"):
        ours[split], setup[split] = timed(xrd.Integrator, ai, npt=args.npt, pixel_splitting=split, threads=args.threads)
    warm = render(points, [(C_START_A, 1.0)], rng)
    _, setup_pyfai = timed(ai.integrate1d, warm, args.npt, unit="q_A^-1")

    rows = []
    for i in range(args.frames):
        phases = frame_phases(i, args.frames)
        frame = render(points, phases, rng)
        truth = sorted(2 * np.pi * 3 / c for c, _ in phases)
        window = (truth[0] - 0.06, truth[-1] + 0.06)
        row = {"two": len(phases) == 2}
        order = ["no", "bbox", "pyfai"]
        for name in order[i % 3:] + order[: i % 3]:  # rotate who runs first
            time.sleep(0.05)  # let the previous call's threads (pyFAI's OpenMP spin-wait) go idle
            if name == "pyfai":
                _, row["t_pyfai"] = timed(ai.integrate1d, frame, args.npt, unit="q_A^-1")
                row["cpu_pyfai"] = CPU["last"]
                continue
            (q, intensity), row[f"t_{name}"] = timed(ours[name], frame)
            row[f"cpu_{name}"] = CPU["last"]
            fit, row[f"t_fit_{name}"] = timed(xrd.fit_reflection, q, intensity, window, n_phases=n_phases)
            row[f"cpu_{name}"] += CPU["last"]
            row[f"called_{name}"] = fit.n_phases == len(phases)
            row[f"err_{name}"] = (max(abs(c - t) for c, t in zip(fit.centers, truth))
                                  if fit.n_phases == len(phases) else np.nan)
        rows.append(row)

    def median(key: str, subset=None) -> float:
        return statistics.median(row[key] for row in rows if subset is None or row["two"] == subset)

    t_pyfai = median("t_pyfai")
    n_two = sum(row["two"] for row in rows)
    print(f"{args.frames} frames 2048x2048 ({n_two} two-phase), lambda {args.wavelength} A, {args.distance} m, "
          f"npt {args.npt}, (003) fit n_phases={args.phases}, our threads {args.threads}")
    print(f"load average (1 min) at start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f} (2 cores)")
    print(f"setup (once per geometry): nanostrain no {setup['no']:.2f} s, bbox {setup['bbox']:.2f} s, "
          f"pyFAI first call {setup_pyfai:.2f} s")
    print(f"{'per frame (median, ms)':<52}{'no split':>10}{'bbox':>10}")
    print(f"{'pyFAI integrate1d (default)':<52}{1e3 * t_pyfai:>10.1f}{1e3 * t_pyfai:>10.1f}")
    print(f"{'nanostrain Integrator':<52}{1e3 * median('t_no'):>10.1f}{1e3 * median('t_bbox'):>10.1f}")
    for label, subset in (("all frames", None), ("one-phase frames", False), ("two-phase frames", True)):
        if subset is not None and not any(row["two"] == subset for row in rows):
            continue
        print(f"{'nanostrain (003) fit, ' + label:<52}"
              f"{1e3 * median('t_fit_no', subset):>10.1f}{1e3 * median('t_fit_bbox', subset):>10.1f}")
    totals = {s: median(f"t_{s}") + median(f"t_fit_{s}") for s in ("no", "bbox")}
    worst = {s: median(f"t_{s}") + max([median(f"t_fit_{s}", k) for k in (False, True)
                                        if any(row["two"] == k for row in rows)]) for s in ("no", "bbox")}
    print(f"{'nanostrain Integrator + (003) fit':<52}{1e3 * totals['no']:>10.1f}{1e3 * totals['bbox']:>10.1f}")
    print(f"{'ratio pyFAI / (ours integrate + fit), all frames':<52}"
          f"{t_pyfai / totals['no']:>9.1f}x{t_pyfai / totals['bbox']:>9.1f}x")
    print(f"{'ratio pyFAI / (ours + fit), slower frame kind':<52}"
          f"{t_pyfai / worst['no']:>9.1f}x{t_pyfai / worst['bbox']:>9.1f}x")
    print(f"{'CPU time ratio pyFAI / (ours integrate + fit)':<52}"
          f"{median('cpu_pyfai') / median('cpu_no'):>9.1f}x{median('cpu_pyfai') / median('cpu_bbox'):>9.1f}x")
    print(f"{'ratio pyFAI / ours integrate':<52}"
          f"{t_pyfai / median('t_no'):>9.1f}x{t_pyfai / median('t_bbox'):>9.1f}x")
    print(f"{'(003) phases called right (frames)':<52}"
          f"{sum(r['called_no'] for r in rows):>10d}{sum(r['called_bbox'] for r in rows):>10d}")
    print(f"{'(003) centre - truth, worst (1/A)':<52}"
          f"{np.nanmax([r['err_no'] for r in rows]):>10.1e}{np.nanmax([r['err_bbox'] for r in rows]):>10.1e}")
    print("I(Q) vs pyFAI default, median |dI/I|")
    for label, value in agreement(ai, ours, args.npt, frame).items():
        print(f"  {label:<50}{value:>10.2e}")


if __name__ == "__main__":
    main()
