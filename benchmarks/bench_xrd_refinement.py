"""Whole-pattern (Pawley) refinement against the single-reflection route, on one charge.

    python benchmarks/bench_xrd_refinement.py [--exposure 1.0] [--frames-per-region 6]

Frames: the beamline simulator's powder frames (`nanostrain.sim.powder.PowderRenderer`:
PerkinElmer binned 2x, 1024 x 1024 pixels of 400 um, 1.5 m, 0.1665 A; structure factors,
Al current collector, background, polarization, counting noise) of cells with known a,
c, H3 fraction and microstrain along a charge:

* H1 -> H2, single phase: a 2.870 -> 2.825 A, c 14.20 -> 14.45 A, eps 0.0015 -> 0.0025;
* H2 + H3 coexisting: c 14.40 / 13.80 A, a 2.818 / 2.814 A, H3 fraction 0.15 -> 0.85
  (both lines everywhere, as in SC-NM91 at 4.2-4.3 V);
* H3, single phase: c 13.80 -> 13.60 A, a 2.814 -> 2.810 A.

Crystallite size 2 um (instrument-limited lines). Each frame is integrated once
(`analysis.xrd_reduction.reduction_integrator`) and reduced by both routes on the same
I(Q): the single-reflection route (`XrdReducer`: (003) with one or two phases, isolated
lines, Williamson-Hall) and `SequentialRefinement` (instrument terms from a CeO2 frame of
the same simulator: `ring_widths` -> `gsas_profile`; esd = sqrt(I / pixel weight); the
integrator's bin edges, `bin_edges`).
Errors against the truth per region: c of each phase, a of the major phase, microstrain,
H3 fraction; and the fit time per frame (integration excluded, the same for both).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from nanostrain.analysis.xrd import gsas_profile, perkinelmer_geometry
from nanostrain.analysis.xrd_calibration import ring_widths
from nanostrain.analysis.xrd_reduction import XrdReducer, reduction_integrator
from nanostrain.analysis.xrd_refinement import SequentialRefinement
from nanostrain.sim.cathode import LatticeState
from nanostrain.sim.powder import PowderRenderer

SIZE_A = 2e4


def charge(n: int) -> list[tuple[str, list[tuple[float, float, float]], float]]:
    """(region, shells [(a, c, weight)], microstrain) along the charge, n frames per region."""
    frames = []
    for t in np.linspace(0, 1, n):
        frames.append(("H1-H2", [(2.870 - 0.045 * t, 14.20 + 0.25 * t, 1.0)], 0.0015 + 0.001 * t))
    for f in np.linspace(0.15, 0.85, n):
        frames.append(("H2+H3", [(2.818, 14.40, 1 - f), (2.814, 13.80, f)], 0.0025))
    for t in np.linspace(0, 1, n):
        frames.append(("H3", [(2.814 - 0.004 * t, 13.80 - 0.2 * t, 1.0)], 0.0025))
    return frames


def truth(shells: list[tuple[float, float, float]]) -> dict[str, float]:
    """a and c of the major phase, c of the larger-c and smaller-c phase, H3 fraction."""
    major = max(shells, key=lambda s: s[2])
    by_c = sorted(shells, key=lambda s: -s[1])
    return {"a": major[0], "c_major": major[1], "c1": by_c[0][1], "c2": by_c[-1][1],
            "f": by_c[-1][2] if len(shells) == 2 else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exposure", type=float, default=1.0)
    parser.add_argument("--frames-per-region", type=int, default=6)
    args = parser.parse_args()

    geometry = perkinelmer_geometry(1.5, 0.1665, binning=2)
    renderer = PowderRenderer(geometry)
    integrator = reduction_integrator(geometry)
    rng = np.random.default_rng(7)
    widths = ring_widths(renderer.render_calibrant(1.0, rng), geometry, "CeO2", tuple(range(12)))
    profile = gsas_profile(*zip(*((w.two_theta_deg, w.gaussian_fwhm_deg, w.lorentzian_fwhm_deg) for w in widths)))
    single = XrdReducer(integrator)
    pawley = SequentialRefinement(integrator.q, integrator.wavelength_A, profile,
                                  bin_edges=np.linspace(*integrator.q_range, integrator.npt + 1))
    rows = []
    for region, shells, eps in charge(args.frames_per_region):
        a, c, w = (np.array(x, dtype=float) for x in zip(*shells))
        frame = renderer.render(LatticeState(a, c, w), eps, SIZE_A, args.exposure, rng)
        _, intensity = integrator(frame)
        started = time.perf_counter()
        s = single._lattice(integrator.q, intensity)  # the route's fits on this I(Q)
        single_s = time.perf_counter() - started
        single.add(frame)  # keeps the route's state (previous a) as live
        esd = np.sqrt(np.clip(intensity, 0, None) / np.maximum(integrator.pixel_weight, 1e-12))
        p = pawley.add(intensity, esd)
        t = truth(shells)
        two_p = p.n_phases == 2
        major_p2 = two_p and p.fraction_phase2 > 0.5
        rows.append({
            "region": region,
            "single": {
                "a": s["a_A"] - t["a"], "c1": s["c_phase1"] - t["c1"],
                "c2": (s["c_phase2"] if s["n_phases"] == 2 else s["c_phase1"]) - t["c2"],
                "eps": s["microstrain"] - eps, "f": s["fraction_phase2"] - t["f"],
                "phases": s["n_phases"] == len(shells), "s": single_s},
            "pawley": {
                "a": (p.a2_A if major_p2 else p.a_A) - t["a"], "c1": p.c_A - t["c1"],
                "c2": (p.c2_A if two_p else p.c_A) - t["c2"],
                "eps": p.microstrain - eps, "f": p.fraction_phase2 - t["f"],
                "phases": p.n_phases == len(shells), "s": p.seconds,
                "z_a": ((p.a2_A if major_p2 else p.a_A) - t["a"]) / (p.sigma_a2_A if major_p2 else p.sigma_a_A),
                "z_c": (p.c_A - t["c1"]) / p.sigma_c_A},
        })

    def rms(values: list[float]) -> float:
        return math.sqrt(sum(v * v for v in values) / len(values))

    print(f"exposure {args.exposure} s, {args.frames_per_region} frames per region; RMS errors, "
          "median fit time per frame (integration excluded)")
    print("| region | route | a (A) | c H2 (A) | c H3 (A) | microstrain | H3 fraction | phases right | ms/frame |")
    print("|---|---|---|---|---|---|---|---|---|")
    for region in ("H1-H2", "H2+H3", "H3"):
        for route in ("single", "pawley"):
            r = [row[route] for row in rows if row["region"] == region]
            print(f"| {region} | {route} | {rms([x['a'] for x in r]):.1e} | {rms([x['c1'] for x in r]):.1e} | "
                  f"{rms([x['c2'] for x in r]):.1e} | {rms([x['eps'] for x in r]):.1e} | {rms([x['f'] for x in r]):.3f} | "
                  f"{sum(x['phases'] for x in r)}/{len(r)} | {1e3 * float(np.median([x['s'] for x in r])):.0f} |")
    z = [row["pawley"] for row in rows]
    print(f"Pawley |error| / sigma: a median {np.median([abs(x['z_a']) for x in z]):.1f}, "
          f"c median {np.median([abs(x['z_c']) for x in z]):.1f}")


if __name__ == "__main__":
    main()
