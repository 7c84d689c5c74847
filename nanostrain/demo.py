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


STEPS: list[Callable[[Session, Path, bool], list[str]]] = [alignment_step]


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
