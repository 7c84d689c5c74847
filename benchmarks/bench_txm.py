"""Benchmark of TXM-XANES analysis (nanostrain.analysis.txm / .xanes) and of the simulator's
forward projection (nanostrain.sim.tomography) against named peers.

(a) White-line energy of Ni K-edge voxel spectra (21 energies, 8340-8360 eV, 1 eV steps;
    `ni_k_edge_xanes` model, WL energies 8350 +- 0.5 eV, Gaussian noise of 1 % of the edge
    step): throughput (voxel spectra/s) and error (bias, RMS vs the known WL) of
      - `whiteline_energy` (default "subspace": PCA basis of the population, quintic
        spline, one precomputed matrix per window, Newton step; basis learned in the call),
      - `whiteline_energy(method="quadratic")` (vectorised 5-point least-squares quadratic),
      - `pca_denoise` + `whiteline_energy(method="quadratic", half_width=1)`,
      - peer (i): per-voxel `np.polyfit` (degree 2, the same 5 points) evaluated on a
        0.01 eV grid and arg-maxed, as common TXM-XANES tools do (on a subset, scaled),
      - peer (ii): per-voxel `scipy.optimize.curve_fit` of a Gaussian on a linear
        background over 8344-8358 eV, maximum of the fitted curve on a 0.01 eV grid
        (on a subset, scaled).
(b) Parallel-beam reconstruction of one slice, 1024 columns x 721 angles (0-180 deg
    inclusive), at an even (--cols) and an odd (--cols - 1) detector width, of the exact
    (analytic) sinogram of a modified Shepp-Logan phantom: time and relative RMS error
    within n//2 - 2 pixels of the centre (inside every method's reconstructed circle) vs
    the phantom rasterised with 4x4 supersampling, for
      - `reconstruct`: first slice (includes building the cached gridding operator), one
        slice with the operator cached, and per slice amortised over a batch of rows
        (a sinogram stack) sharing the geometry,
      - algotom `fbp_reconstruction` (CPU, numba, all cores and 1 core), fed a sinogram
        and phantom on its own pixel grid (image centre (n-1)/2, its `center` argument
        the axis), so that it is not penalised by a half-pixel shift at even n,
      - scikit-image `iradon` ('ramp'), on the same sinogram and phantom as ours (one
        convention: image centre and rotation axis at n//2).
    Each method with a pure ramp and with a smoothing window.
(c) Forward projection of the same phantom: `forward_project` vs
    `skimage.transform.radon` (on a subset of angles, scaled).

Times are the best of --repeats runs on this machine (shared, 2 cores; the white-line
methods' repeats interleaved): nanostrain is single-threaded; algotom's backprojection
uses numba threads.

Usage: python benchmarks/bench_txm.py [--quick] [--voxels 1000000] [--cols 1024]
       [--angles 721] [--rows 16] [--repeats 3] [--part all|whiteline|reconstruction]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import warnings
from collections.abc import Callable

import numpy as np
from scipy.optimize import curve_fit
from skimage.transform import iradon, radon

from nanostrain.analysis import txm
from nanostrain.analysis.txm import reconstruct
from nanostrain.analysis.xanes import pca_denoise, whiteline_energy
from nanostrain.sim.phantoms import SHEPP_LOGAN, ellipse_image, ellipse_sinogram
from nanostrain.sim.tomography import forward_project
from nanostrain.sim.xanes_model import ni_k_edge_xanes

ENERGIES = np.arange(8340.0, 8361.0)
NOISE = 0.01
FINE_STEP_EV = 0.01


def best_time(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Smallest wall time over ``repeats`` calls, and the last result."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


# ------------------------------------------------------------------ (a) white line


def polyfit_upsample(spectra: np.ndarray) -> np.ndarray:
    """Peer (i): per voxel np.polyfit over the 5 points around the maximum, argmax on a grid."""
    result = np.empty(len(spectra))
    for i, spectrum in enumerate(spectra):
        peak = int(np.clip(np.argmax(spectrum), 2, ENERGIES.size - 3))
        energies = ENERGIES[peak - 2 : peak + 3]
        coefficients = np.polyfit(energies - energies[2], spectrum[peak - 2 : peak + 3], 2)
        fine = np.arange(energies[0], energies[-1] + FINE_STEP_EV / 2, FINE_STEP_EV)
        result[i] = fine[np.argmax(np.polyval(coefficients, fine - energies[2]))]
    return result


def gaussian_on_line(energy, amplitude, centre, sigma, offset, slope):
    peak = amplitude * np.exp(-0.5 * ((energy - centre) / sigma) ** 2)
    return peak + offset + slope * (energy - 8350.0)


def curve_fit_upsample(spectra: np.ndarray) -> np.ndarray:
    """Peer (ii): per voxel curve_fit of a Gaussian on a line, argmax of the fit on a grid."""
    window = (ENERGIES >= 8344.0) & (ENERGIES <= 8358.0)
    energies = ENERGIES[window]
    fine = np.arange(energies[0], energies[-1] + FINE_STEP_EV / 2, FINE_STEP_EV)
    result = np.empty(len(spectra))
    for i, spectrum in enumerate(spectra):
        guess = (0.6, energies[np.argmax(spectrum[window])], 3.0, 0.9, 0.01)
        parameters, _ = curve_fit(
            gaussian_on_line, energies, spectrum[window], p0=guess, maxfev=2000
        )
        result[i] = fine[np.argmax(gaussian_on_line(fine, *parameters))]
    return result


def bench_whiteline(n_voxels: int, n_polyfit: int, n_curve_fit: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(8350.0, 0.5, n_voxels)
    spectra = ni_k_edge_xanes(ENERGIES, truth).astype(np.float32)
    spectra += np.float32(NOISE) * rng.standard_normal(spectra.shape, dtype=np.float32)
    print(f"\n(a) white-line energy: {n_voxels:,} voxel spectra x {ENERGIES.size} energies "
          f"(float32), WL 8350 +- 0.5 eV, noise {NOISE:.0%} of the edge step")

    def pca_pipeline():
        denoised, _ = pca_denoise(spectra)
        return whiteline_energy(denoised, ENERGIES, method="quadratic", half_width=1)

    rows = [
        ("whiteline_energy (subspace, default)", n_voxels,
         lambda: whiteline_energy(spectra, ENERGIES)[0]),
        ("whiteline_energy quadratic (5-pt)", n_voxels,
         lambda: whiteline_energy(spectra, ENERGIES, method="quadratic")[0]),
        ("pca_denoise + quadratic (3-pt)", n_voxels, lambda: pca_pipeline()[0]),
        ("peer (i) np.polyfit + 0.01 eV argmax", n_polyfit,
         lambda: polyfit_upsample(spectra[:n_polyfit])),
        ("peer (ii) curve_fit Gaussian+line", n_curve_fit,
         lambda: curve_fit_upsample(spectra[:n_curve_fit])),
    ]
    print(f"  {'method':40s} {'voxels':>9s} {'time [s]':>9s} {'spectra/s':>11s} "
          f"{'bias [eV]':>10s} {'RMS [eV]':>9s}")
    # Repeats interleaved (method after method) so that load from other work on the shared
    # machine hits every method alike; the best time of each is kept.
    best, results = {}, {}
    for repeat in range(repeats):
        for name, count, run in rows:
            if count == n_voxels or repeat == 0:
                seconds, results[name] = best_time(run, 1)
                best[name] = min(best.get(name, np.inf), seconds)
    rates = {}
    for name, count, _ in rows:
        seconds, wl = best[name], results[name]
        error = np.asarray(wl) - truth[:count]
        rates[name] = count / seconds
        print(f"  {name:40s} {count:9,d} {seconds:9.3f} {count / seconds:11.3g} "
              f"{np.nanmean(error):+10.4f} {np.sqrt(np.nanmean(error**2)):9.4f}")
    ours = rates[rows[0][0]]
    print(f"  speed-up of whiteline_energy (subspace): x{ours / rates[rows[1][0]]:.2f} vs quadratic, "
          f"x{ours / rates[rows[2][0]]:.1f} vs PCA + quadratic, x{ours / rates[rows[3][0]]:.0f} vs "
          f"polyfit, x{ours / rates[rows[4][0]]:.0f} vs curve_fit")


# ------------------------------------------------------------------ (b, c) tomography


def relative_rms(image: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sqrt(np.mean((image - truth)[mask] ** 2) / np.mean(truth[mask] ** 2)))


def bench_reconstruction(n: int, n_angles: int, n_rows: int, repeats: int) -> None:
    angles = np.linspace(0.0, 180.0, n_angles)
    ellipses = tuple(e.scaled(0.45 * n) for e in SHEPP_LOGAN)
    sinogram = ellipse_sinogram(ellipses, angles, n).astype(np.float32)
    phantom = ellipse_image(ellipses, n)
    r = np.arange(n) - n // 2
    mask = r[:, None] ** 2 + r[None, :] ** 2 <= (n // 2 - 2) ** 2  # inside every method's circle
    print(f"\n(b) one slice, {n} columns ({'even' if n % 2 == 0 else 'odd'}) x {n_angles} angles "
          f"(0-180 deg), Shepp-Logan, exact sinogram; error = relative RMS vs the phantom within "
          f"n//2 - 2 pixels of the centre")
    print(f"  {'method':52s} {'s/slice':>9s} {'error':>7s}")

    def report(name: str, seconds: float, image: np.ndarray, truth: np.ndarray = phantom) -> float:
        error = relative_rms(image, truth, mask)
        print(f"  {name:52s} {seconds:9.3f} {error:7.4f}")
        return error

    txm._polar_grid.cache_clear()
    start = time.perf_counter()
    image = reconstruct(sinogram, angles)
    first = time.perf_counter() - start
    report("nanostrain reconstruct, first slice (builds operator)", first, image)
    seconds, image = best_time(lambda: reconstruct(sinogram, angles), repeats)
    report("nanostrain reconstruct, one slice (operator cached)", seconds, image)
    stack = np.repeat(sinogram[:, None, :], n_rows, axis=1)
    ours, ours_error = {}, {}
    for window in ("ramp", "linear", "hann"):
        seconds, volume = best_time(lambda: reconstruct(stack, angles, filter_name=window), repeats)
        ours[window] = seconds / n_rows
        ours_error[window] = report(f"nanostrain reconstruct '{window}', per slice of {n_rows}",
                                    ours[window], volume[0])

    try:
        import numba
        from algotom.rec.reconstruction import fbp_reconstruction
    except ImportError:
        print("  algotom: not installed (pip install algotom) - skipped")
    else:
        # algotom's image grid is centred on (n-1)/2: its phantom and sinogram there
        half = n // 2 - (n - 1) / 2
        own = tuple(dataclasses.replace(e, x=e.x - half, y=e.y + half) for e in ellipses)
        sinogram_algotom = ellipse_sinogram(ellipses, angles, n, center=(n - 1) / 2).astype(np.float32)
        phantom_algotom = ellipse_image(own, n)
        theirs, theirs_error = {}, {}
        threads = numba.get_num_threads()
        for window, label in ((None, "ramp"), ("hann", "hann")):
            for n_threads in sorted({threads, 1}, reverse=True):
                numba.set_num_threads(n_threads)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "no GPU, running on CPU"
                    seconds, image = best_time(
                        lambda: fbp_reconstruction(sinogram_algotom, (n - 1) / 2, np.deg2rad(angles),
                                                   filter_name=window, apply_log=False, gpu=False),
                        repeats,
                    )
                theirs[(label, n_threads)] = seconds
                name = f"algotom fbp_reconstruction {label!r}, {n_threads} thread(s)"
                theirs_error[label] = report(name, seconds, image, phantom_algotom)
        numba.set_num_threads(threads)
        for label, window in (("ramp", "linear"), ("ramp", "ramp"), ("hann", "hann")):
            verdict = "lower" if ours_error[window] <= theirs_error[label] else "HIGHER"
            print(f"  speed-up nanostrain '{window}' (amortised) vs algotom {label!r}: "
                  f"x{theirs[(label, threads)] / ours[window]:.1f} ({threads} threads), "
                  f"x{theirs[(label, 1)] / ours[window]:.1f} (1 thread); error "
                  f"{ours_error[window]:.4f} vs {theirs_error[label]:.4f} ({verdict})")

    seconds, image = best_time(lambda: iradon(sinogram.T, angles, filter_name="ramp", circle=True), 1)
    report("scikit-image iradon 'ramp'", seconds, image)


def bench_forward_projection(n: int, n_angles: int, repeats: int) -> None:
    angles = np.linspace(0.0, 180.0, n_angles)
    ellipses = tuple(e.scaled(0.45 * n) for e in SHEPP_LOGAN)
    phantom = ellipse_image(ellipses, n)
    print(f"\n(c) forward projection of the {n} x {n} phantom, {n_angles} angles")
    seconds, projected = best_time(lambda: forward_project(phantom, angles), repeats)
    exact = ellipse_sinogram(ellipses, angles, n)
    error = np.sqrt(np.mean((projected - exact) ** 2) / np.mean(exact**2))
    print(f"  nanostrain forward_project          {seconds:8.3f} s   error vs exact {error:.4f}")
    subset = angles[:: max(1, n_angles // 48)]
    start = time.perf_counter()
    radon(phantom, subset, circle=True)
    scaled = (time.perf_counter() - start) * n_angles / subset.size
    print(f"  skimage radon ({subset.size} angles, scaled)  {scaled:8.3f} s   "
          f"x{scaled / seconds:.0f} slower")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--voxels", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=1024)
    parser.add_argument("--angles", type=int, default=721)
    parser.add_argument("--rows", type=int, default=16, help="slices sharing one geometry")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--part", choices=("all", "whiteline", "reconstruction"), default="all")
    args = parser.parse_args()
    if args.quick:
        args.voxels, args.cols, args.angles, args.rows, args.repeats = 100_000, 256, 181, 8, 2
    print(f"nanostrain TXM benchmark; {os.cpu_count()} CPUs; numpy {np.__version__}")
    peers = (500, 50) if args.quick else (5000, 500)  # per-voxel peers run on subsets
    if args.part in ("all", "whiteline"):
        bench_whiteline(args.voxels, *(min(args.voxels, p) for p in peers), repeats=args.repeats)
    if args.part in ("all", "reconstruction"):
        for n in sorted({args.cols, args.cols - 1 if args.cols % 2 == 0 else args.cols + 1}, reverse=True):
            bench_reconstruction(n, args.angles, args.rows, args.repeats)
        bench_forward_projection(args.cols, args.angles, args.repeats)


if __name__ == "__main__":
    main()
