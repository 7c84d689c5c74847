"""The simulated experiment campaign behind ``nanostrain demo``.

Each step runs plans on the simulated beamline into the embedded catalog, lets the live
analyses write their derived runs and returns lines for the summary; while a plan runs, a
`Heartbeat` prints what it is doing at least every few seconds. The campaign covers
single-crystal (SC) and polycrystalline (PC) cells of both compositions; it ends by
writing the campaign report (`nanostrain.report`) from the catalog alone, with the
study's headline numbers checked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .callbacks.figure_style import journal_style, save_figure  # noqa: E402
from .report import RETENTION_CYCLES, RETENTION_RATE_MA_G, STUDY_RETENTION_PCT  # noqa: E402
from .report import write_report  # noqa: E402

if TYPE_CHECKING:
    from .session import Session

#: longest silence (s) of the demo's progress output while a plan runs
HEARTBEAT_S = 5.0


class Heartbeat:
    """Progress of the plans a demo step runs: subscribed to the RunEngine, it follows the
    documents of the current run (its plan, its events, the detector frames its stream
    datums index), and inside ``with heartbeat(label):`` prints that every `HEARTBEAT_S`
    seconds until the block ends (`ticking`)."""

    def __init__(self, RE):
        self.plan, self.events = "", 0
        self.frames: dict[str, int] = {}  # per stream resource: frames indexed so far
        RE.subscribe(self._document)

    def _document(self, name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            self.plan, self.events, self.frames = doc.get("plan_name", "?"), 0, {}
        elif name == "event":
            self.events += 1
        elif name == "stream_datum":
            resource = doc["stream_resource"]
            self.frames[resource] = self.frames.get(resource, 0) + doc["indices"]["stop"] - doc["indices"]["start"]

    def status(self) -> str:
        frames = max(self.frames.values(), default=0)
        return f"{self.plan}: {self.events} events" + (f", {frames} detector frames" if frames else "")

    def __call__(self, label: str):
        """``with heartbeat(label):`` prints the label, then progress every `HEARTBEAT_S`."""
        return ticking(label, self.status)


@contextmanager
def ticking(label: str, status: Callable[[], str] = lambda: "") -> Iterator[None]:
    """Print ``label``, then ``label: <elapsed> s, <status()>`` every `HEARTBEAT_S` seconds
    (from a thread) until the block ends, and how long it took."""
    started, done = time.monotonic(), threading.Event()

    def line(state: str) -> str:
        detail = status()
        return f"      {label}: {state}{time.monotonic() - started:.0f} s" + (f", {detail}" if detail else "")

    def tick() -> None:
        while not done.wait(HEARTBEAT_S):
            print(line(""), flush=True)

    print(f"   {label}", flush=True)
    thread = threading.Thread(target=tick, daemon=True, name="nanostrain-demo-heartbeat")
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        print(line("done in "), flush=True)


@dataclass
class Step:
    """What a campaign step gets: the session, the progress printer, where figures go,
    and whether the campaign is the short one."""

    session: Session
    heartbeat: Heartbeat
    figures: Path
    quick: bool


def alignment_step(step: Step) -> list[str]:
    """Find the beam: scan the sample stage across the camera, follow the spot centroid."""
    session = step.session
    devices = session.devices
    num = 11 if step.quick else 41
    with step.heartbeat("alignment scan of the beam spot"):
        (uid,) = session.RE(
            session.plans["alignment_scan"](
                devices["cam"], devices["sx"], -1.0, 1.0, num, monitor=devices["i0"], exposure_s=0.05,
                md={"sample": {"name": "beam-spot", "purpose": "alignment"}},
            )
        )
    (derived,) = session.derived_runs(uid)
    table = derived["frame_stats"].read()
    with journal_style():
        fig, ax = plt.subplots(figsize=(3.5, 2.6), layout="constrained")
        ax.plot(table["sx"], table["centroid_col"], "o-")
        ax.set(xlabel="stage sx (mm)", ylabel="spot centroid (camera column)", title="alignment scan")
    paths = save_figure(fig, step.figures / "alignment")
    plt.close(fig)
    return [f"alignment scan      raw {uid}  derived {derived.metadata['start']['uid']}  figure {paths[0]}"]


#: operando XRD cells: (morphology, composition, specific current mA/g), full campaign;
#: the quick one keeps the highest rate of each cell
XRD_CELLS = (
    ("SC", "NC91", 20.0), ("SC", "NC91", 200.0), ("SC", "NM91", 20.0), ("SC", "NM91", 200.0),
    ("PC", "NC91", 200.0), ("PC", "NM91", 200.0),
)
#: charge between operando XRD frames (mAh/g), 4x denser where the lattice moves fast
#: (feedback), and their exposure (s): one cycle is ~45 frames of 1024^2, ~1.35 MB each
#: compressed (BSLZ4; a frame holds ~9-10 bits of Poisson noise per pixel, which no
#: lossless compression removes), so the full campaign's data stay under 500 MB
CADENCE_MAH_G = 12.0
EXPOSURE_S = 0.5
#: coin cell: 4 mg/cm2 of active material on a 1.54 cm2 disc (SCIENCE.md)
ACTIVE_MASS_G = 4e-3 * 1.54


def _derived(session: Session, uid: str, analysis: str, timeout_s: float = 120.0):
    """The derived run of ``analysis`` made of raw run ``uid``, once the catalog holds
    its stop document (so every stream of it): the catalog writer runs in the
    background, and a run's stop does not wait for a catalog that is slow to answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = [run for run in session.derived_runs(uid) if run.metadata["start"]["analysis"] == analysis]
        if runs and runs[0].metadata.get("stop"):
            return runs[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"the catalog has no complete {analysis} derived run of {uid} after {timeout_s:.0f} s")
        time.sleep(0.25)


def xrd_cells(quick: bool) -> list[tuple[str, str, float]]:
    """The operando XRD cells of the campaign (`XRD_CELLS`; with ``quick`` only each
    cell's highest rate)."""
    if not quick:
        return list(XRD_CELLS)
    highest: dict[tuple[str, str], float] = {}
    for morphology, name, rate in XRD_CELLS:
        highest[(morphology, name)] = max(rate, highest.get((morphology, name), 0.0))
    return [(morphology, name, rate) for (morphology, name), rate in highest.items()]


def xrd_step(step: Step) -> list[str]:
    """Operando XRD: SC and PC cells of NC91 and NM91, first cycle (SC at 20 and 200 mA/g)."""
    import bluesky.plan_stubs as bps
    import numpy as np

    from .plans.protocols import galvanostatic

    session, quick = step.session, step.quick
    devices = session.devices
    xrd = next(a for a in session.analyses if a.analysis == "xrd_reduction")
    lines = []
    for morphology, name, rate in xrd_cells(quick):
        session.RE(session.plans["mount_sample"](devices["cycler"], {"material": name, "morphology": morphology}))
        # ~30 s of wall time per half cycle (x3 faster for --quick)
        session.RE(bps.mv(devices["cycler"].time_scale, (3900.0 if quick else 1300.0) * 20.0 / rate))
        label = f"{morphology}-{name} {rate:g} mA/g"
        with step.heartbeat(f"operando XRD of {label}, one cycle"):
            (uid,) = session.RE(
                session.plans["operando_xrd"](
                    devices["cycler"], devices["xrd"], galvanostatic(rate, 1), active_mass_g=ACTIVE_MASS_G,
                    cadence_mAh_g=CADENCE_MAH_G, exposure_s=EXPOSURE_S, monitor=devices["i0"], min_flux=1e8,
                    feedback=xrd.signals["lattice_change_A"], feedback_threshold=0.03, dense_factor=4.0,
                    sample={"name": f"{morphology}-{name}", "composition": name, "morphology": morphology,
                            "specific_current_mA_g": rate},
                )
            )
        table = _derived(session, uid, "xrd_reduction")["xrd"].read()
        capacity = _derived(session, uid, "electrochemistry")["cycles"].read()
        lines.append(
            f"operando XRD {label:<20} raw {uid}  {len(table['c_A'])} frames  "
            f"{float(np.asarray(capacity['charge_mAh_g'])[0]):.0f} mAh/g  "
            f"max dc(H2/H3) {float(np.nanmax(table['phase_separation_A'])):.2f} A"
        )
    return lines


#: capacity retention: every cell, one cycle at `RETENTION_RATE_MA_G` fresh and after `RETENTION_CYCLES`
RETENTION_CELLS = (("SC", "NC91"), ("SC", "NM91"), ("PC", "NC91"), ("PC", "NM91"))
#: simulated s per wall s of the retention cycles: one cycle at 100 mA/g (~4.5 h) in ~1.5 s
#: (the charge is booked per step from the channel's clock, so no precision is lost)
RETENTION_TIME_SCALE = 12_000.0


def retention_step(step: Step) -> list[str]:
    """Capacity retention: one cycle at 100 mA/g of every cell, fresh and aged 100 cycles."""
    import bluesky.plan_stubs as bps

    from .plans.protocols import galvanostatic

    session = step.session
    cycler = session.devices["cycler"]
    lines = []
    for morphology, name in RETENTION_CELLS:
        discharge = {}
        for cycles in (0, RETENTION_CYCLES):
            session.RE(session.plans["mount_sample"](cycler, {"material": name, "morphology": morphology},
                                                     cycles=cycles))
            session.RE(bps.mv(cycler.time_scale, RETENTION_TIME_SCALE))
            label = f"{morphology}-{name} {'fresh' if cycles == 0 else f'aged {cycles} cycles'}"
            with step.heartbeat(f"one cycle at {RETENTION_RATE_MA_G:g} mA/g of {label}"):
                (uid,) = session.RE(session.plans["cycle_cell"](
                    cycler, galvanostatic(RETENTION_RATE_MA_G, 1), active_mass_g=ACTIVE_MASS_G,
                    sample={"name": f"{morphology}-{name}", "composition": name, "morphology": morphology,
                            "specific_current_mA_g": RETENTION_RATE_MA_G, "cycles": cycles},
                ))
            capacity = _derived(session, uid, "electrochemistry")["cycles"].read()
            discharge[cycles] = float(capacity["discharge_mAh_g"][0])
        lines.append(f"retention {morphology}-{name}  discharge {discharge[0]:.1f} mAh/g fresh, "
                     f"{discharge[RETENTION_CYCLES]:.1f} after {RETENTION_CYCLES} cycles: "
                     f"{100 * discharge[RETENTION_CYCLES] / discharge[0]:.1f} % "
                     f"(study {STUDY_RETENTION_PCT[(morphology, name)]:.1f} %)")
    return lines


#: TXM-XANES samples: single crystals charged at 200 mA/g to 4.3 V (the H2-H3 region)
TXM_MATERIALS = ("NC91", "NM91")


def txm_step(step: Step) -> list[str]:
    """TXM-XANES 3D: white-line heterogeneity of charged SC-NC91 vs SC-NM91."""
    import numpy as np

    session, quick = step.session, step.quick
    txm = session.devices["txm"]
    energies = np.arange(8340.0, 8360.5, 2.0 if quick else 1.0)
    angles = np.linspace(0.0, 180.0, 19 if quick else 61)
    lines = []
    for name in TXM_MATERIALS:
        session.RE(session.plans["mount_sample"](txm, {"material": name, "morphology": "SC"},
                                                 charge_V=4.3, current_mA_g=200.0))
        label = f"charged SC-{name}"
        with step.heartbeat(f"TXM-XANES of {label}: {energies.size} energies x {angles.size} angles"):
            (uid,) = session.RE(
                session.plans["txm_xanes_tomo"](
                    txm, energies, angles, n_flats=3, n_darks=3,
                    sample={"name": label, "material": name, "morphology": "SC", "state": "charged to 4.3 V at 200 mA/g"},
                )
            )
        derived = _derived(session, uid, "txm_xanes")
        statistics = derived["statistics"]
        lines.append(
            f"TXM-XANES {label:15s} WL sigma {float(statistics['wl_sigma_eV'].read()[0]):.3f} eV over "
            f"{int(statistics['n_voxels'].read()[0])} voxels  raw {uid}  derived {derived.metadata['start']['uid']}"
        )
    return lines


#: SXDM samples: single crystals charged at 100 mA/g to 4.3 V, fresh and after 100 cycles
SXDM_SAMPLES = (("NC91", 0), ("NM91", 0), ("NC91", 100), ("NM91", 100))


def sxdm_step(step: Step) -> list[str]:
    """SXDM: strain and rotation maps of charged SC-NC91 vs SC-NM91, fresh and after 100 cycles."""
    import numpy as np
    from bluesky.run_engine import call_in_bluesky_event_loop as now

    session, quick = step.session, step.quick
    devices = session.devices
    detector, stage, theta = devices["merlin"], devices["np_stage"], devices["np_theta"]
    n, size, n_theta = (12, 0.4, 9) if quick else (24, 0.2, 21)
    lines = []
    for name, cycles in SXDM_SAMPLES:
        label = f"SC-{name} {'fresh' if cycles == 0 else f'{cycles} cycles'}"
        # the twin mounts the particle (centred at (0.7, -0.4) um) and points its arm at its (003)
        session.RE(session.plans["mount_sample"](detector, {"material": name, "morphology": "SC"},
                                                 cycles=cycles, charge_V=4.3, current_mA_g=100.0))
        sample = {"name": label, "material": name, "morphology": "SC", "cycles": cycles, "state": "4.3 V, 100 mA/g"}
        with step.heartbeat(f"SXDM of {label}: XRF map, Bragg peak, {n}x{n} raster at {n_theta} angles"):
            session.RE(session.plans["xrf_map"](devices["np_xrf"], stage, (-3.0, 3.0), (-3.0, 3.0),
                                                0.5 if quick else 0.25, move_to_particle=True, sample=sample))
            y0, x0 = (round(now(axis.user_readback.get_value()) / size) * size for axis in (stage.y, stage.x))
            theta_b = detector.sxdm_geometry().two_theta_deg / 2
            session.RE(session.plans["find_bragg_peak"](detector, theta, theta_b + np.linspace(-0.6, 0.6, 13),
                                                        exposure_s=0.01, sample=sample))
            peak = now(theta.user_readback.get_value())
            half = size * (n - 1) / 2
            (uid,) = session.RE(session.plans["sxdm_rocking_raster"](
                detector, stage, theta, (x0 - half, x0 + half), (y0 - half, y0 + half), size,
                peak + np.linspace(-0.5, 0.5, n_theta), "fly", monitor=devices["np_i0"], background=0.1,
                progress=False, sample=sample,
            ))
        derived = _derived(session, uid, "sxdm_strain")
        maps = derived["maps"]
        sigma = {key: float(np.asarray(maps[key].read())[0])
                 for key in ("sigma_dd_over_d", "sigma_theta_xy_deg", "sigma_theta_xz_deg")}
        lines.append(
            f"SXDM {label:<19} sigma(dd/d) {sigma['sigma_dd_over_d']:.2e}  sigma(theta_xy, theta_xz) "
            f"{sigma['sigma_theta_xy_deg']:.3f}, {sigma['sigma_theta_xz_deg']:.3f} deg  "
            f"raw {uid}  derived {derived.metadata['start']['uid']}"
        )
    return lines


#: ex situ XAS electrodes: pristine, charged (4.5 V at 20 mA/g), discharged after the first
#: cycle, after 100 cycles
XAS_STATES = (("pristine", {}), ("charged", {"charge_V": 4.5, "current_mA_g": 20.0}), ("discharged", {"cycles": 1}),
              ("cycled", {"cycles": 100}))


def xas_step(step: Step) -> list[str]:
    """Ex situ Ni K-edge XAS: SC-NC91 vs SC-NM91, pristine / charged / discharged / cycled."""
    session, quick = step.session, step.quick
    dcm, chambers = session.devices["dcm"], session.devices["xas_ic"]
    regions = [{"space": "E", "start": -150.0, "stop": -20.0, "step": 10.0, "dwell_s": 0.1},
               {"space": "E", "start": -19.5, "stop": 30.0, "step": 0.5, "dwell_s": 0.1},
               {"space": "k", "start": 2.85, "stop": 14.0, "step": 0.1 if quick else 0.05, "dwell_s": 0.1,
                "k_weight": 2.0}]
    lines = []
    for name in ("NC91", "NM91"):
        for state, history in XAS_STATES:
            label = f"SC-{name} {state}"
            session.RE(session.plans["mount_sample"](chambers, {"material": name, "morphology": "SC"}, **history))
            with step.heartbeat(f"XAS of {label}"):
                (uid,) = session.RE(session.plans["xas_scan"](
                    dcm, chambers, regions,
                    sample={"name": label, "material": name, "morphology": "SC", "state": state, **history}))
            fit = _derived(session, uid, "xas")["fit"]
            r = {key: float(fit[key].read()[0]) for key in ("edge_shift_eV", "r_A", "r_err_A", "sigma2_A2", "sigma2_err_A2")}
            lines.append(f"XAS {label:<20} edge {r['edge_shift_eV']:+.2f} eV vs Ni foil  R(Ni-O) {r['r_A']:.3f}"
                         f"+-{r['r_err_A']:.3f} A  sigma2 {1e3 * r['sigma2_A2']:.2f}+-{1e3 * r['sigma2_err_A2']:.2f}"
                         f" 10^-3 A^2  raw {uid}")
    return lines


STEPS: list[Callable[[Step], list[str]]] = [alignment_step, xrd_step, retention_step, txm_step, sxdm_step, xas_step]


def run_demo(data_dir: Path, quick: bool = False) -> list[str]:
    """Run every campaign step, then write the campaign report; print and return the
    summary."""
    started = time.monotonic()
    data_dir = Path(data_dir)
    figures = data_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    print(f"nanostrain demo: simulated beamline, catalog in {data_dir.resolve()}", flush=True)
    with ticking("starting the session: bluesky, the catalog server, simulated devices, live analyses"):
        from .session import make_session  # the heavy imports, inside the progress lines

        session = make_session(data_dir=data_dir)
    lines: list[str] = []
    try:
        step = Step(session, Heartbeat(session.RE), figures, quick)
        for number, run_step in enumerate(STEPS, 1):
            print(f"-- {number}/{len(STEPS) + 1} {run_step.__doc__.splitlines()[0]} "
                  f"({time.monotonic() - started:.0f} s so far)", flush=True)
            lines += run_step(step)
        print(f"-- {len(STEPS) + 1}/{len(STEPS) + 1} The campaign report, from the catalog alone", flush=True)
        with ticking("reading the catalog, drawing the figures"):
            report, rows = write_report(session.connect(), data_dir / "report.html", source=str(data_dir.resolve()),
                                        say=lambda text: print(text, flush=True))
    finally:
        with ticking("closing the session (the catalog writers finish)"):
            session.close()
    print("\nResults")
    for line in lines:
        print("  " + line)
    print("\nHeadline numbers against the reference study")
    verdicts = {True: "holds", False: "DOES NOT HOLD"}
    for row in rows:
        verdict = row.measured if row.holds is None else f"measured {row.measured}: {verdicts[row.holds]}"
        print(f"  {row.claim:<66} study {row.study:<34} {verdict}")
    print(f"\nDone in {time.monotonic() - started:.0f} s. Where to look:")
    print(f"  report:   {report.resolve()}  (figures as PNG and SVG in {report.with_name(report.stem + '_figures')})")
    print(f"  catalog:  nanostrain serve --data-dir {data_dir}  then open http://127.0.0.1:8000/view/ (runs, live)")
    print("  python:   from tiled.client import from_uri; c = from_uri('http://127.0.0.1:8000')")
    print(f"  replay:   nanostrain replay <uid> --data-dir {data_dir}")
    print(f"  again:    nanostrain report --data-dir {data_dir} -o report.html")
    return lines
