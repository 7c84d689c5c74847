"""Fly (continuous-energy) against step XAS on the simulated beamline: wall time over the
same range (8200 eV to k = 14 1/A) and the difference of the results.

Both scans run on the same twin (SC-NM91 charged, DCM miscalibrated by 0.6 eV) with
``realtime`` chambers, so a step count takes its dwell time of wall time as a real one
does (the twin otherwise counts instantly at rest). Step: `plans.xas.DEFAULT_REGIONS`
(338 points, k^2-weighted dwell, 0.1 s at the edge). Fly: `plans.xas.DEFAULT_FLY_SEGMENTS`
at 0.1 s a sample, or ``--fast`` (the end-to-end test's: 0.05 s samples, 33 s of sweep).
Prints wall times, their ratio, the alignment, edge, R and sigma^2 of each, and the
normalised spectra's difference over the edge (-20 to +30 eV, the fly spectrum
interpolated onto the step energies).

    .venv/bin/python benchmarks/bench_xas_fly.py [--fast]
"""

from __future__ import annotations

import argparse
import time

import bluesky.plan_stubs as bps
import numpy as np
from bluesky import RunEngine

from nanostrain.analysis.xas import XasAccumulator
from nanostrain.beamline import connect_devices
from nanostrain.devices.dcm import DcmEnergy
from nanostrain.devices.xas import SimIonChambers, XasFlySampler
from nanostrain.plans.xas import DEFAULT_FLY_SEGMENTS, xas_fly_scan, xas_scan
from nanostrain.schema.sample import SampleRecord

FAST = [{"space": "E", "start": -150.0, "stop": -20.0, "velocity_eV_s": 50.0},
        {"space": "E", "start": -20.0, "stop": 30.0, "velocity_eV_s": 5.0},
        {"space": "k", "start": 2.81, "stop": 6.0, "velocity_eV_s": 20.0},
        {"space": "k", "start": 6.0, "stop": 14.0, "velocity_eV_s": 40.0}]


def run(RE: RunEngine, plan, energy_key: str):
    """(wall time in s, number of points, `XasResult`) of one scan."""
    rows = []
    began = time.monotonic()
    RE(plan, lambda name, doc: rows.append(doc["data"]) if name == "event" else None)
    wall = time.monotonic() - began
    reducer = XasAccumulator()
    for data in rows:
        reducer.add(data[energy_key], data["xas_ic-i0"], data["xas_ic-it"], data["xas_ic-iref"])
    return wall, len(rows), reducer.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the end-to-end test's fly scan (0.05 s samples)")
    args = parser.parse_args()
    RE = RunEngine({})
    dcm = DcmEnergy(name="dcm")
    chambers = SimIonChambers(dcm, dcm_offset_eV=0.6, realtime=True, name="xas_ic")
    sampler = XasFlySampler(dcm, chambers, name="xas_fly")
    connect_devices({"dcm": dcm, "xas_ic": chambers, "xas_fly": sampler})
    charged = SampleRecord(name="charged", material="NM91", morphology="SC", charge_V=4.5, current_mA_g=20.0)
    RE(bps.mv(chambers.mounted_sample, charged.to_json()))
    truth = chambers.specimen
    step = run(RE, xas_scan(dcm, chambers), "dcm")
    segments, interval = (FAST, 0.05) if args.fast else (DEFAULT_FLY_SEGMENTS, 0.1)
    fly = run(RE, xas_fly_scan(dcm, sampler, segments, interval_s=interval), "xas_fly-energy")
    print(f"truth: DCM offset 0.6 eV, R {truth.bond_length_A:.4f} A, sigma2 {truth.sigma2_A2:.5f} A^2")
    for name, (wall, points, result) in (("step", step), ("fly", fly)):
        print(f"{name:>4}: {wall:6.1f} s, {points} points; shift {result.energy_shift_eV:.3f} eV, edge "
              f"{result.edge_shift_eV:.3f} eV, R {result.fit.r_A:.4f}+-{result.fit.r_err_A:.4f} A, sigma2 "
              f"{result.fit.sigma2_A2:.5f}+-{result.fit.sigma2_err_A2:.5f} A^2")
    (step_wall, _, s), (fly_wall, _, f) = step, fly
    edge = (s.energies_eV > s.e0_eV - 20.0) & (s.energies_eV < s.e0_eV + 30.0)
    difference = np.interp(s.energies_eV[edge], f.energies_eV, f.norm) - s.norm[edge]
    print(f"fly/step wall time {fly_wall / step_wall:.2f}; "
          f"fly - step: edge {f.edge_shift_eV - s.edge_shift_eV:+.3f} eV, "
          f"R {f.fit.r_A - s.fit.r_A:+.4f} A, sigma2 {f.fit.sigma2_A2 - s.fit.sigma2_A2:+.5f} A^2; normalised "
          f"mu over the edge: RMS {np.sqrt(np.mean(difference**2)):.4f}, max {np.max(np.abs(difference)):.4f}")


if __name__ == "__main__":
    main()
