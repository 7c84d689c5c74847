"""Per-frame XRD reduction: nanostrain's Integrator + (003) fit against pyFAI integrate1d.

    python benchmarks/bench_xrd_reduction.py [--frames 10] [--wavelength 0.1665] ...

Frames: PerkinElmer 2048 x 2048, 200 um pixels, beam at the panel centre. Each frame is
the powder pattern of an R-3m cathode (a = 2.87 A, c shrinking from 14.20 to 13.80 A over
the run, as on charge) plus the Al current collector and a smooth background, averaged
over 2 x 2 points inside every pixel (the detector integrates over its pixel) and drawn
as Poisson counts. Per frame, in the same run and on the same frame, it times
  ours:  Integrator(frame) + fit_reflection around (003)
  pyFAI: ai.integrate1d(frame, npt, unit="q_A^-1"), default settings (bbox pixel
         splitting, CSR engine, OpenMP), after a warm-up call that builds its engine
and compares I(Q) and the fitted (003) centre (the same fit applied to pyFAI's I(Q))
with the true centre. Times are medians over the frames.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from nanostrain.analysis import xrd

A_A = 2.87
C_START_A, C_END_A = 14.20, 13.80
FWHM_Q = 0.015  # 1/A


def pattern(q: np.ndarray, c_A: float) -> np.ndarray:
    """Expected counts per pixel at Q (1/A) for a cell (A_A, c_A)."""
    counts = 40.0 + 60.0 * np.exp(-q / 2.5)
    q_range = (0.3, float(q.max()) + 0.1)
    for line in xrd.r3m_reflections(A_A, c_A, q_range):
        counts += xrd.pseudo_voigt(q, line.q, FWHM_Q, 0.3, area=3.0 * line.multiplicity / line.q)
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


def render(points: list[np.ndarray], c_A: float, rng: np.random.Generator) -> np.ndarray:
    grid = np.linspace(0.0, float(max(p.max() for p in points)) + 0.01, 60_000)
    profile = pattern(grid, c_A)
    expected = np.mean([np.interp(p, grid, profile) for p in points], axis=0)
    return rng.poisson(expected).astype(np.float32)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--wavelength", type=float, default=0.1665, help="angstrom (11-ID-C; 17-BM: 0.4520)")
    parser.add_argument("--distance", type=float, default=1.0, help="sample-detector distance, m")
    parser.add_argument("--npt", type=int, default=2000)
    parser.add_argument("--phases", default="1", choices=["1", "2", "auto"], help="n_phases of the (003) fit")
    args = parser.parse_args()
    n_phases = args.phases if args.phases == "auto" else int(args.phases)

    ai = xrd.perkinelmer_geometry(args.distance, args.wavelength)
    points = subpixel_q(args.distance, args.wavelength)
    rng = np.random.default_rng(2025)
    integrator, setup_ours = timed(xrd.Integrator, ai, npt=args.npt)
    warm = render(points, C_START_A, rng)
    _, setup_pyfai = timed(ai.integrate1d, warm, args.npt, unit="q_A^-1")

    rows = []
    for i, c_A in enumerate(np.linspace(C_START_A, C_END_A, args.frames)):
        frame = render(points, c_A, rng)
        truth = 3 * 2 * np.pi / c_A
        window = (truth - 0.06, truth + 0.06)
        calls = [lambda: integrator(frame), lambda: ai.integrate1d(frame, args.npt, unit="q_A^-1")]
        if i % 2:  # alternate who runs first
            calls.reverse()
        results = [timed(call) for call in calls]
        if i % 2:
            results.reverse()
        ((q, intensity), t_ours), (reference, t_pyfai) = results
        fit, t_fit = timed(xrd.fit_reflection, q, intensity, window, n_phases=n_phases)
        fit_pyfai = xrd.fit_reflection(reference.radial, reference.intensity, window, n_phases=n_phases)
        # I(Q) agreement on pyFAI's grid (ours interpolated onto it), inside our range
        inside = (reference.radial >= q[0]) & (reference.radial <= q[-1])
        ours_on_theirs = np.interp(reference.radial[inside], q, intensity)
        theirs = reference.intensity[inside]
        no_split = ("no", "histogram", "cython")
        same_bins = ai.integrate1d(
            frame, args.npt, unit="q_A^-1", method=no_split, radial_range=integrator.q_range
        ).intensity
        rows.append(
            dict(
                t_ours=t_ours,
                t_fit=t_fit,
                t_pyfai=t_pyfai,
                max_dev=np.max(np.abs(ours_on_theirs - theirs)) / np.max(theirs),
                median_rel=np.median(np.abs(ours_on_theirs / theirs - 1)),
                nosplit_rel=np.nanmax(np.abs(intensity / same_bins - 1)),
                err_ours=fit.centers[0] - truth,
                err_pyfai=fit_pyfai.centers[0] - truth,
                fwhm_ours=fit.fwhm[0],
                fwhm_pyfai=fit_pyfai.fwhm[0],
            )
        )

    def median(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    def worst(key: str) -> float:
        return max(abs(row[key]) for row in rows)

    ours_total = median("t_ours") + median("t_fit")
    table = [
        ("pyFAI integrate1d (default)", median("t_pyfai")),
        ("nanostrain Integrator", median("t_ours")),
        ("nanostrain (003) fit", median("t_fit")),
        ("nanostrain Integrator + (003) fit", ours_total),
    ]
    agreement = [
        ("I(Q) vs pyFAI default, max |dI| / max I, on its grid", f"{worst('max_dev'):.2%}"),
        ("I(Q) vs pyFAI default, median |dI / I|", f"{worst('median_rel'):.2%}"),
        ("I(Q) vs pyFAI without splitting, same bins, max |dI/I|", f"{worst('nosplit_rel'):.2%}"),
        ("(003) centre - truth, ours (1/A)", f"{worst('err_ours'):.1e}"),
        ("(003) centre - truth, pyFAI + same fit (1/A)", f"{worst('err_pyfai'):.1e}"),
        (
            f"(003) FWHM, true {FWHM_Q}: ours / pyFAI (1/A)",
            f"{median('fwhm_ours'):.4f} / {median('fwhm_pyfai'):.4f}",
        ),
    ]
    print(
        f"{args.frames} frames 2048x2048, lambda {args.wavelength} A, {args.distance} m, "
        f"npt {args.npt}, (003) fit n_phases={args.phases}"
    )
    print(f"setup (once per geometry): nanostrain {setup_ours:.2f} s, pyFAI first call {setup_pyfai:.2f} s")
    print(f"{'per frame (median)':<56}{'ms':>10}")
    for label, seconds in table:
        print(f"{label:<56}{1e3 * seconds:>10.1f}")
    print(f"{'throughput ratio pyFAI / (ours integrate + fit)':<56}{median('t_pyfai') / ours_total:>9.1f}x")
    print(f"{'throughput ratio pyFAI / ours integrate':<56}{median('t_pyfai') / median('t_ours'):>9.1f}x")
    print("agreement (worst frame; pixel splitting widens pyFAI's peaks)")
    for label, value in agreement:
        print(f"  {label:<54}{value:>10}")


if __name__ == "__main__":
    main()
