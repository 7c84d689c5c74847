"""The simulated experiment campaign behind ``nanostrain demo``.

Each step runs plans on the simulated beamline into the embedded catalog, lets the live
analyses write their derived runs, saves a figure and returns lines for the summary.
Technique steps are added here as the techniques land.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .session import Session, make_session  # noqa: E402


def alignment_step(session: Session, figures: Path, quick: bool) -> list[str]:
    """Find the beam: scan the sample stage across the camera, follow the spot centroid."""
    devices = session.devices
    num = 11 if quick else 41
    (uid,) = session.RE(
        session.plans["alignment_scan"](
            devices["cam"], devices["sx"], -1.0, 1.0, num, monitor=devices["i0"], exposure_s=0.05,
            md={"sample": {"name": "beam-spot", "purpose": "alignment"}},
        )
    )
    (derived,) = session.derived_runs(uid)
    table = derived["frame_stats"].read()
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    ax.plot(table["sx"], table["centroid_col"], "o-")
    ax.set(xlabel="stage sx (mm)", ylabel="spot centroid (camera column)", title="Alignment scan")
    path = figures / "alignment.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [f"alignment scan      raw {uid}  derived {derived.metadata['start']['uid']}  figure {path}"]


#: SC cathodes compared in the operando XRD step, and their specific currents (mA/g).
XRD_MATERIALS = ("NC91", "NM91")
XRD_RATES_MA_G = (20.0, 200.0)
#: coin cell: 4 mg/cm2 of active material on a 1.54 cm2 disc (SCIENCE.md)
ACTIVE_MASS_G = 4e-3 * 1.54


def _derived(session: Session, uid: str, analysis: str):
    return next(run for run in session.derived_runs(uid) if run.metadata["start"]["analysis"] == analysis)


def xrd_step(session: Session, figures: Path, quick: bool) -> list[str]:
    """Operando XRD: SC-NC91 vs SC-NM91, first cycle at 20 and 200 mA/g."""
    import bluesky.plan_stubs as bps
    import numpy as np

    from .callbacks.xrd_plots import figure_from_derived_run
    from .plans.protocols import galvanostatic

    devices = session.devices
    xrd = next(a for a in session.analyses if a.analysis == "xrd_reduction")
    rates = XRD_RATES_MA_G[-1:] if quick else XRD_RATES_MA_G
    results, lines = [], []
    for name in XRD_MATERIALS:
        for rate in rates:
            session.RE(session.plans["mount_sample"](devices["cycler"], {"material": name, "morphology": "SC"}))
            # ~30 s of wall time per half cycle (x3 faster for --quick)
            session.RE(bps.mv(devices["cycler"].time_scale, (3900.0 if quick else 1300.0) * 20.0 / rate))
            label = f"SC-{name} {rate:g} mA/g"
            print(f"   {label}")
            (uid,) = session.RE(
                session.plans["operando_xrd"](
                    devices["cycler"], devices["xrd"], galvanostatic(rate, 1), active_mass_g=ACTIVE_MASS_G,
                    cadence_mAh_g=10.0 if quick else 6.0, exposure_s=1.0, monitor=devices["i0"], min_flux=1e8,
                    feedback=xrd.signals["lattice_change_A"], feedback_threshold=0.03, dense_factor=4.0,
                    sample={"name": f"SC-{name}", "composition": name, "morphology": "SC", "specific_current_mA_g": rate},
                )
            )
            reduction = _derived(session, uid, "xrd_reduction")
            table = reduction["xrd"].read()
            capacity = _derived(session, uid, "electrochemistry")["cycles"].read()
            c = np.asarray(table["c_A"])
            volume = np.asarray(table["volume_A3"])
            result = {
                "sample": label,
                "raw_uid": uid,
                "frames": c.size,
                "charge_mAh_g": float(np.asarray(capacity["charge_mAh_g"])[0]),
                "max_dc_A": float(np.nanmax(table["phase_separation_A"])),
                "two_phase_frames": int(np.sum(np.asarray(table["n_phases"]) == 2)),
                "c_contraction_pct": float(100 * (np.nanmax(c) - np.nanmin(c)) / np.nanmax(c)),
                "volume_change_pct": float(100 * (volume[0] - np.nanmin(volume)) / volume[0]),
            }
            results.append((result, table))
            fig = figure_from_derived_run(reduction, title=label)
            path = figures / f"xrd_{name}_{rate:g}mAg.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            lines.append(
                f"operando XRD {label:<20} raw {uid}  {result['frames']} frames  "
                f"{result['charge_mAh_g']:.0f} mAh/g  max dc(H2/H3) {result['max_dc_A']:.2f} A  "
                f"c contraction {result['c_contraction_pct']:.1f} %  figure {path}"
            )
    lines.append(f"operando XRD comparison: {_xrd_comparison(results, figures)}")
    return lines


def _xrd_comparison(results, figures: Path) -> Path:
    """c against potential for every run, and the largest H2/H3 separation per run;
    the table as CSV beside the figure."""
    import csv

    import numpy as np

    fig, (ax_c, ax_dc) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for result, table in results:
        ax_c.plot(np.asarray(table["potential_V"]), np.asarray(table["c_A"]), ".-", label=result["sample"])
    ax_c.set(xlabel="E (V vs Li/Li+)", ylabel="c (A)", title="c lattice parameter")
    ax_c.legend(fontsize=8)
    names = [r["sample"] for r, _ in results]
    ax_dc.bar(names, [r["max_dc_A"] for r, _ in results], color="tab:red")
    ax_dc.set(ylabel="largest (003) H2/H3 separation dc (A)", title="phase coexistence")
    ax_dc.tick_params(axis="x", rotation=20)
    path = figures / "xrd_comparison.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    with open(figures / "xrd_comparison.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0][0]))
        writer.writeheader()
        writer.writerows(r for r, _ in results)
    return path


#: TXM-XANES samples: single crystals charged at 200 mA/g to 4.3 V (the H2-H3 region)
TXM_MATERIALS = ("NC91", "NM91")


def txm_step(session: Session, figures: Path, quick: bool) -> list[str]:
    """TXM-XANES 3D: white-line heterogeneity of charged SC-NC91 vs SC-NM91."""
    import numpy as np

    from .callbacks.txm_plots import comparison_figure, derived_result

    txm = session.devices["txm"]
    energies = np.arange(8340.0, 8360.5, 2.0 if quick else 1.0)
    angles = np.linspace(0.0, 180.0, 19 if quick else 61)
    results, lines = {}, []
    for name in TXM_MATERIALS:
        session.RE(session.plans["mount_sample"](txm, {"material": name, "morphology": "SC"},
                                                 charge_V=4.3, current_mA_g=200.0))
        label = f"charged SC-{name}"
        print(f"   {label}")
        (uid,) = session.RE(
            session.plans["txm_xanes_tomo"](
                txm, energies, angles, n_flats=3, n_darks=3,
                sample={"name": label, "material": name, "morphology": "SC", "state": "charged to 4.3 V at 200 mA/g"},
            )
        )
        derived = _derived(session, uid, "txm_xanes")
        results[label] = derived_result(derived)
        n_voxels = int(derived["statistics"]["n_voxels"].read()[0])
        lines.append(
            f"TXM-XANES {label:15s} WL sigma {results[label]['sigma_eV']:.3f} eV over {n_voxels} voxels"
            f"  raw {uid}  derived {derived.metadata['start']['uid']}"
        )
    fig = comparison_figure(results, title="TXM-XANES: Ni K-edge white line per voxel, charged single crystals")
    path = figures / "txm_xanes.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    nc, nm = (results[f"charged SC-{name}"]["sigma_eV"] for name in TXM_MATERIALS)
    verdict = "wider, as in the study" if nm > nc else "NOT wider: check the simulation"
    lines.append(f"TXM-XANES sigma(SC-NM91) / sigma(SC-NC91) = {nm / nc:.1f}: NM91 {verdict}  figure {path}")
    return lines


#: SXDM samples: single crystals charged at 100 mA/g to 4.3 V, fresh and after 100 cycles
SXDM_SAMPLES = (("NC91", 0), ("NM91", 0), ("NC91", 100), ("NM91", 100))


def sxdm_step(session: Session, figures: Path, quick: bool) -> list[str]:
    """SXDM: strain and rotation maps of charged SC-NC91 vs SC-NM91, fresh and after 100 cycles."""
    import numpy as np
    from bluesky.run_engine import call_in_bluesky_event_loop as now

    from .callbacks.sxdm_plots import maps_figure, maps_from_derived_run, sigma_figure

    devices = session.devices
    detector, stage, theta = devices["merlin"], devices["np_stage"], devices["np_theta"]
    n, step, n_theta = (12, 0.4, 9) if quick else (24, 0.2, 21)
    maps, lines = {}, []
    for name, cycles in SXDM_SAMPLES:
        label = f"SC-{name} {'fresh' if cycles == 0 else f'{cycles} cycles'}"
        print(f"   {label}")
        # the twin mounts the particle (centred at (0.7, -0.4) um) and points its arm at its (003)
        session.RE(session.plans["mount_sample"](detector, {"material": name, "morphology": "SC"},
                                                 cycles=cycles, charge_V=4.3, current_mA_g=100.0))
        sample = {"name": label, "material": name, "morphology": "SC", "cycles": cycles, "state": "4.3 V, 100 mA/g"}
        session.RE(session.plans["xrf_map"](devices["np_xrf"], stage, (-3.0, 3.0), (-3.0, 3.0), 0.5 if quick else 0.25,
                                            move_to_particle=True, sample=sample))
        y0, x0 = (round(now(axis.user_readback.get_value()) / step) * step for axis in (stage.y, stage.x))
        theta_b = detector.sxdm_geometry().two_theta_deg / 2
        session.RE(session.plans["find_bragg_peak"](detector, theta, theta_b + np.linspace(-0.6, 0.6, 13),
                                                    exposure_s=0.01, sample=sample))
        peak = now(theta.user_readback.get_value())
        half = step * (n - 1) / 2
        (uid,) = session.RE(session.plans["sxdm_rocking_raster"](
            detector, stage, theta, (x0 - half, x0 + half), (y0 - half, y0 + half), step,
            peak + np.linspace(-0.5, 0.5, n_theta), "fly", monitor=devices["np_i0"], background=0.1,
            progress=False, sample=sample,
        ))
        derived = _derived(session, uid, "sxdm_strain")
        maps[label] = maps_from_derived_run(derived)
        lines.append(
            f"SXDM {label:<19} sigma(dd/d) {maps[label]['sigma_dd_over_d']:.2e}  sigma(theta_xy, theta_xz) "
            f"{maps[label]['sigma_theta_xy_deg']:.3f}, {maps[label]['sigma_theta_xz_deg']:.3f} deg  "
            f"raw {uid}  derived {derived.metadata['start']['uid']}"
        )
    for fig, path in ((maps_figure(maps, step), figures / "sxdm_maps.png"), (sigma_figure(maps), figures / "sxdm_sigma.png")):
        fig.savefig(path, dpi=110)
        plt.close(fig)
    sigma = {label: result["sigma_dd_over_d"] for label, result in maps.items()}
    for when in ("fresh", "100 cycles"):
        ratio = sigma[f"SC-NM91 {when}"] / sigma[f"SC-NC91 {when}"]
        lines.append(f"SXDM sigma(dd/d) SC-NM91 / SC-NC91, {when}: {ratio:.1f} ({'NM91 larger, as in the study' if ratio > 1 else 'NOT larger: check the simulation'})")
    growth = sigma["SC-NM91 100 cycles"] / sigma["SC-NM91 fresh"]
    lines.append(f"SXDM sigma(dd/d) SC-NM91 after / before 100 cycles: {growth:.1f} ({'grows' if growth > 1 else 'does NOT grow'})  figures {figures / 'sxdm_maps.png'}, {figures / 'sxdm_sigma.png'}")
    return lines


def xas_step(session: Session, figures: Path, quick: bool) -> list[str]:
    """Ex situ Ni K-edge XAS: SC-NC91 vs SC-NM91, pristine / charged / discharged / cycled."""
    from .callbacks.xas_plots import comparison_figure, xas_result

    # electrodes pristine, charged (4.5 V at 20 mA/g), discharged after the first cycle, after 100 cycles
    states = (("pristine", {}), ("charged", {"charge_V": 4.5, "current_mA_g": 20.0}), ("discharged", {"cycles": 1}),
              ("cycled", {"cycles": 100}))
    dcm, chambers = session.devices["dcm"], session.devices["xas_ic"]
    regions = [{"space": "E", "start": -150.0, "stop": -20.0, "step": 10.0, "dwell_s": 0.1},
               {"space": "E", "start": -19.5, "stop": 30.0, "step": 0.5, "dwell_s": 0.1},
               {"space": "k", "start": 2.85, "stop": 14.0, "step": 0.1 if quick else 0.05, "dwell_s": 0.1,
                "k_weight": 2.0}]
    results, lines = {}, []
    for name in ("NC91", "NM91"):
        for state, history in states:
            label = f"SC-{name} {state}"
            print(f"   {label}")
            session.RE(session.plans["mount_sample"](chambers, {"material": name, "morphology": "SC"}, **history))
            (uid,) = session.RE(session.plans["xas_scan"](dcm, chambers, regions, sample={"name": label, **history}))
            results[label] = xas_result(_derived(session, uid, "xas"))
            r = results[label]
            lines.append(f"XAS {label:<20} edge {r['edge_shift_eV']:+.2f} eV vs Ni foil  R(Ni-O) {r['r_A']:.3f}"
                         f"+-{r['r_err_A']:.3f} A  sigma2 {1e3 * r['sigma2_A2']:.2f}+-{1e3 * r['sigma2_err_A2']:.2f}"
                         f" 10^-3 A^2  raw {uid}")
    fig = comparison_figure(results, title="Ex situ Ni K-edge XAS, single crystals")
    path = figures / "xas.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    rise = {name: results[f"SC-{name} cycled"]["sigma2_A2"] - results[f"SC-{name} pristine"]["sigma2_A2"]
            for name in ("NC91", "NM91")}
    verdict = "larger, as in the study" if rise["NM91"] > rise["NC91"] else "NOT larger: check the simulation"
    lines.append(f"XAS sigma2 rise after 100 cycles: SC-NM91 {1e3 * rise['NM91']:+.2f}, SC-NC91 "
                 f"{1e3 * rise['NC91']:+.2f} 10^-3 A^2: NM91 {verdict}  figure {path}")
    return lines


STEPS: list[Callable[[Session, Path, bool], list[str]]] = [alignment_step, xrd_step, txm_step, sxdm_step]
STEPS.append(xas_step)


def run_demo(data_dir: Path, quick: bool = False) -> list[str]:
    """Run every campaign step; print and return the summary."""
    started = time.monotonic()
    data_dir = Path(data_dir)
    figures = data_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    print(f"nanostrain demo: simulated beamline, catalog in {data_dir.resolve()}")
    session = make_session(data_dir=data_dir)
    lines: list[str] = []
    try:
        for step in STEPS:
            print(f"-- {step.__doc__.splitlines()[0]}")
            lines += step(session, figures, quick)
    finally:
        session.close()
    print("\nResults")
    for line in lines:
        print("  " + line)
    print(f"\nDone in {time.monotonic() - started:.0f} s. Where to look:")
    print(f"  figures:  {figures.resolve()}")
    print(f"  catalog:  nanostrain serve --data-dir {data_dir}  then open http://127.0.0.1:8000/ui/")
    print("  python:   from tiled.client import from_uri; c = from_uri('http://127.0.0.1:8000')")
    print(f"  replay:   nanostrain replay <uid> --data-dir {data_dir}")
    return lines
