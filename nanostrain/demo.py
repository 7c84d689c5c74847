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

    from .beamline import mount_cell
    from .callbacks.xrd_plots import figure_from_derived_run
    from .plans.protocols import galvanostatic
    from .sim.cathode import CathodeParticle
    from .sim.materials import material

    devices = session.devices
    xrd = next(a for a in session.analyses if a.analysis == "xrd_reduction")
    rates = XRD_RATES_MA_G[-1:] if quick else XRD_RATES_MA_G
    results, lines = [], []
    for name in XRD_MATERIALS:
        for rate in rates:
            mount_cell(devices, CathodeParticle(material(name), "SC"))
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


STEPS: list[Callable[[Session, Path, bool], list[str]]] = [alignment_step, xrd_step]


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
    print(f"  python:   from tiled.client import from_uri; c = from_uri('http://127.0.0.1:8000')")
    print(f"  replay:   nanostrain replay <uid> --data-dir {data_dir}")
    return lines
