"""Export of an operando XRD run for GSAS-II sequential refinement (docs/xrd.md).

`export_gsas2` reads, from the catalog alone, the ``xrd_reduction`` derived run of a raw
operando XRD run (`callbacks.xrd`: I(Q) per frame in ``patterns``, the Q axis and the
wavelength in ``reduction``, the electrochemistry per frame in ``xrd``) and writes into a
folder:

* ``<prefix>_<frame:04d>.xye``, one per reduced frame, in order: a one-line header
  ``/* ... */`` (run uid, frame, time, potential, and the cycler's charge counter per
  active mass), then columns
  2 theta (degrees), I, esd. 2 theta = 2 asin(Q lambda / 4 pi) with the calibrated
  wavelength; I is the reduction's mean counts per pixel of the bin; esd is the Poisson
  sigma propagated through the azimuthal average, sqrt(I_b / N_b), N_b the bin's
  solid-angle weighted pixel count (`analysis.xrd.Integrator.pixel_weight`, rebuilt from
  the run's geometry and the reduction's parameters; a count of one at least, so a zero
  bin keeps a finite weight). Bins no pixel reaches are left out. The header is a C-style
  comment because GSAS-II's xye reader takes a ``#`` line holding a "q" for the
  wavelength line of Q data.
* with ``fxye``, also ``<prefix>_<frame:04d>.fxye``: the same pattern in GSAS's FXYE form,
  the format GSAS-II reads bank by bank: a title line (the same header), ``Instrument
  parameter file:<prefix>.instprm`` (GSAS-II then loads it without asking), a ``BANK 1
  n n CONS start step 0 0 FXYE`` line (start and mean step in centidegrees), then 2 theta
  in centidegrees, I, esd.
* ``<prefix>.instprm``: GSAS-II's instrument parameter file (type PXC, one bank): Lam
  from the run's geometry (the PONI wavelength), Zero 0 (2 theta comes from the
  calibrated geometry), Polariz. 0.5 (the reduction integrates whole rings without a
  polarization correction, and the azimuthal mean of a linearly polarised beam's factor
  is that of an unpolarised one, (1 + cos^2 2theta) / 2), Azimuth 0, U, V, W, X, Y (the
  profile, below), Z 0, SH/L 0.002 (GSAS-II's smallest usual value: axial
  divergence is negligible on a flat panel at these angles). GSAS-II's reader takes no
  comment after its first line, so where the profile came from is said in the index.
* ``sequence.txt``: the index GSAS-II's sequential refinement loads, one file per line
  in frame order with its time and electrochemistry, and how the files were made.

Profile: from the CeO2 calibration that gave the run its geometry (the newest successful
``xrd_calibration`` derived run, before the XRD run, whose refined pyFAI geometry is the
one the XRD run recorded): the Gaussian and Lorentzian FWHM it measured per ring
(`analysis.xrd_calibration.ring_widths`) fitted with GSAS-II's functions
(`analysis.xrd.gsas_profile`, >= 3 rings). Without such a calibration the export says so
(`Gsas2Export.notes`, the index, the command's output) and writes the documented starting
values of `default_profile`, for GSAS-II to refine.

Units as everywhere in nanostrain: Q in 1/A, wavelength in A, angles in degrees, potential
in V, charge in mAh/g, times in s.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .analysis.units import q_to_two_theta
from .analysis.xrd import GsasProfile, gsas_profile, pyfai_geometry
from .analysis.xrd_reduction import reduction_integrator
from .catalog import catalog_nodes
from .schema.catalog import derived_runs
from .schema.start import XRD

Say = Callable[[str], None]

#: Gaussian FWHM of the default profile, in units of the angle one pixel subtends at the
#: beam centre (p / D): the order of a flat panel's point spread, a starting value only
DEFAULT_FWHM_PIXELS = 1.5
#: GSAS-II's smallest usual axial-divergence term (flat panel, high energy: negligible)
SH_L = 0.002
#: full-ring average of a polarised beam's factor = the unpolarised one (module docstring)
POLARIZATION = 0.5
INSTPRM_HEADER = "#GSAS-II instrument parameter file; do not add/delete items!"
INDEX_NAME = "sequence.txt"


class ExportError(ValueError):
    """The run cannot be exported (unknown uid, no reduction, output folder in use)."""


@dataclass(frozen=True)
class Gsas2Export:
    """What `export_gsas2` wrote: the pattern files in frame order, the instrument
    parameter file, the index, the profile written and where it came from, and notes
    (what was not measured)."""

    folder: Path
    patterns: list[Path]
    instprm: Path
    index: Path
    profile: GsasProfile
    profile_source: str
    notes: list[str] = field(default_factory=list)
    fxye: list[Path] = field(default_factory=list)


def default_profile(pixel_m: float, distance_m: float) -> GsasProfile:
    """The starting profile when no instrumental widths were measured: a constant Gaussian
    FWHM of `DEFAULT_FWHM_PIXELS` pixels' angle, FWHM = 1.5 p / D (radians; pixel p and
    distance D in m), W = (100 FWHM[deg])^2 / (8 ln 2) centideg^2, no Lorentzian (U = V =
    X = Y = 0)."""
    fwhm_centideg = 100.0 * math.degrees(DEFAULT_FWHM_PIXELS * pixel_m / distance_m)
    return GsasProfile(U=0.0, V=0.0, W=fwhm_centideg**2 / (8 * math.log(2)), X=0.0, Y=0.0)


def instprm_text(wavelength_A: float, profile: GsasProfile) -> str:
    """GSAS-II ``.instprm`` text of a constant-wavelength X-ray pattern (type PXC, bank 1):
    ``key:value`` lines after the header line, no other comment, keys as GSAS-II writes
    them (module docstring for the fixed values)."""
    items = {
        "Type": "PXC", "Bank": 1.0, "Lam": wavelength_A, "Zero": 0.0, "Polariz.": POLARIZATION, "Azimuth": 0.0,
        "U": profile.U, "V": profile.V, "W": profile.W, "X": profile.X, "Y": profile.Y, "Z": 0.0, "SH/L": SH_L,
    }
    return "\n".join([INSTPRM_HEADER, *(f"{key}:{value!r}" if isinstance(value, float) else f"{key}:{value}"
                                        for key, value in items.items())]) + "\n"


def xye_text(header: str, two_theta_deg: np.ndarray, intensity: np.ndarray, esd: np.ndarray) -> str:
    """A ``.xye`` powder pattern: the one-line ``/* header */`` comment, then 2 theta (deg),
    intensity, esd per line (``repr`` precision: the numbers read back exactly)."""
    if "*/" in header or "\n" in header:
        raise ValueError(f"the header must be one line without '*/': {header!r}")
    lines = [f"/* {header} */"]
    lines += [f"{x!r} {y!r} {e!r}" for x, y, e in zip(map(float, two_theta_deg), map(float, intensity), map(float, esd))]
    return "\n".join(lines) + "\n"


def fxye_text(title: str, instprm_name: str, two_theta_deg: np.ndarray, intensity: np.ndarray, esd: np.ndarray) -> str:
    """A GSAS FXYE powder pattern of one bank (module docstring): title line, instrument
    parameter file line, BANK line, then 2 theta in centidegrees, intensity, esd per line."""
    if "\n" in title:
        raise ValueError(f"the title must be one line: {title!r}")
    centideg = 100.0 * np.asarray(two_theta_deg, dtype=float)
    n = centideg.size
    step = float(np.mean(np.diff(centideg))) if n > 1 else 0.0
    bank = f"BANK 1 {n} {n} CONS {float(centideg[0])!r} {step!r} 0 0 FXYE"
    lines = [title, f"Instrument parameter file:{instprm_name}", bank]
    lines += [f"{x!r} {y!r} {e!r}" for x, y, e in zip(map(float, centideg), map(float, intensity), map(float, esd))]
    return "\n".join(lines) + "\n"


def _prefix(start: dict[str, Any]) -> str:
    sample = start.get("sample")
    name = sample.get("name", "") if isinstance(sample, dict) else str(sample or "")
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{name}_{start['uid'][:8]}" if name else f"xrd_{start['uid'][:8]}")


def _check_output(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"--output {folder} is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise ExportError(f"--output {folder} is not empty; give an empty or new folder, or --overwrite "
                          "(files of the same names are replaced, no other file is touched)")


def _reduction(derived, raw_uid: str):
    """The newest successful ``xrd_reduction`` derived run of raw run ``raw_uid``."""
    runs = [run for run in derived_runs(derived, raw_uid) if run.metadata["start"].get("analysis") == "xrd_reduction"
            and (run.metadata.get("stop") or {}).get("exit_status") == "success"]
    if not runs:
        raise ExportError(f"run {raw_uid} has no successful xrd_reduction derived run: replay it first "
                          f"(nanostrain replay {raw_uid} --write)")
    return max(runs, key=lambda run: run.metadata["start"]["time"])


#: geometry parameters compared to find a run's calibration (pyFAI names: m, rad)
GEOMETRY_KEYS = ("dist", "poni1", "poni2", "rot1", "rot2", "rot3", "wavelength", "pixel1", "pixel2")


def _same_geometry(one, other) -> bool:
    return all(math.isclose(getattr(one, key), getattr(other, key), rel_tol=1e-9, abs_tol=1e-15) for key in GEOMETRY_KEYS)


def _calibration_profile(derived, start: dict[str, Any]) -> tuple[GsasProfile, str] | None:
    """GSAS-II profile from the ring widths of the calibration that gave the run its
    geometry (module docstring), with a description; None if there is none with widths."""
    from tiled.queries import Key

    geometry = pyfai_geometry(start["xrd_geometry"])
    found = None
    for run in derived.search(Key("start.analysis") == "xrd_calibration").values():
        run_start = run.metadata["start"]
        if ((run.metadata.get("stop") or {}).get("exit_status") != "success" or run_start["time"] > start["time"]
                or not {"calibration", "rings"} <= set(run)):
            continue
        config = json.loads(str(_column(run["calibration"], "pyfai_config")[-1]))
        if _same_geometry(pyfai_geometry(config), geometry) and (found is None or run_start["time"] > found[0]):
            found = (run_start["time"], run)
    if found is None:
        return None
    run = found[1]
    rings = run["rings"].read()
    if "fwhm_gaussian_deg" not in rings:
        return None
    two_theta, gauss, lorentz = (np.asarray(rings[key], dtype=float)
                                 for key in ("two_theta_deg", "fwhm_gaussian_deg", "fwhm_lorentzian_deg"))
    measured = np.isfinite(gauss) & np.isfinite(lorentz)
    if np.unique(two_theta[measured]).size < 3:
        return None
    source = (f"the calibration {run.metadata['start']['derived_from']} ({run.metadata['start'].get('technique')}): "
              f"Caglioti fit of the line widths of {int(measured.sum())} rings")
    return gsas_profile(two_theta[measured], gauss[measured], lorentz[measured]), source


def instrument_profile(derived, start: dict[str, Any]) -> tuple[GsasProfile, str, bool]:
    """The instrument profile of an XRD run (start document ``start``) and where it came
    from: the Caglioti fit of its calibration's ring widths (module docstring), else
    `default_profile` of its geometry; the flag says whether it was calibrated. Shared by
    the GSAS-II export and the Pawley refinement (`nanostrain refine`)."""
    calibrated = _calibration_profile(derived, start)
    if calibrated is not None:
        return (*calibrated, True)
    geometry = pyfai_geometry(start["xrd_geometry"])
    return (default_profile(max(geometry.pixel1, geometry.pixel2), geometry.dist),
            f"starting values: Gaussian FWHM {DEFAULT_FWHM_PIXELS} pixels' angle, constant; no Lorentzian", False)


def _column(node, key: str) -> np.ndarray:
    return np.asarray(node[key].read())


def export_gsas2(client, raw_uid: str, output: str | Path, *, prefix: str | None = None, fxye: bool = False,
                 overwrite: bool = False, say: Say = lambda text: None) -> Gsas2Export:
    """Write the GSAS-II files of raw operando XRD run ``raw_uid`` (a uid or its first >= 5
    characters; module docstring) into
    folder ``output`` (made if missing). ``client``: the catalog's root client; ``prefix``:
    the pattern files' stem (default ``<sample name>_<uid[:8]>``); ``fxye``: also write each
    pattern as GSAS FXYE (``.fxye``, listed in `Gsas2Export.fxye`); ``overwrite``: write into
    a folder that is not empty (files of the same names are replaced; nothing is deleted).
    Raises `ExportError` (before writing anything) for an output folder in use, an unknown
    uid, a run that is not operando XRD or has no successful reduction."""
    folder = Path(output)
    _check_output(folder, overwrite)
    raw, derived = catalog_nodes(client)
    try:
        raw_run = raw[raw_uid]  # a uid, or its first >= 5 characters as the catalog takes them
    except (KeyError, ValueError) as error:
        raise ExportError(f"no run {raw_uid!r} among the catalog's raw runs ({error})") from None
    start = dict(raw_run.metadata["start"])
    raw_uid = start["uid"]
    if start.get("technique") != XRD:
        raise ExportError(f"run {raw_uid} is a {start.get('technique')!r} run, not operando XRD ({XRD!r})")
    reduction = _reduction(derived, raw_uid)
    parameters = reduction.metadata["start"]["parameters"]
    q = _column(reduction["reduction"], "q")[0]
    wavelength_A = float(_column(reduction["reduction"], "wavelength_A")[0])
    seq = _column(reduction["patterns"], "raw_seq_num").astype(int)
    intensity = _column(reduction["patterns"], "intensity")
    table = reduction["xrd"].read()
    rows = {int(s): i for i, s in enumerate(np.asarray(table["raw_seq_num"]))}
    raw_times = dict(zip(_column(raw_run["primary"], "seq_num").astype(int).tolist(),
                         _column(raw_run["primary"], "time").tolist()))

    geometry = pyfai_geometry(start["xrd_geometry"])
    integrator = reduction_integrator(geometry, parameters.get("npt"), parameters.get("q_max", 5.0))
    if integrator.q.shape != q.shape or not np.allclose(integrator.q, q, rtol=0, atol=1e-9):
        raise ExportError(f"the run's geometry with the reduction's parameters {parameters} does not give the "
                          "recorded Q bins: cannot propagate the counting errors")
    reached = integrator.pixel_weight > 0
    two_theta = q_to_two_theta(q[reached], wavelength_A)
    weight = integrator.pixel_weight[reached]

    notes = []
    profile, source, calibrated = instrument_profile(derived, start)
    if not calibrated:
        notes.append("no calibration run with measured ring widths gave this run its geometry: instrument profile = "
                     f"{source}, to be refined in GSAS-II")
    stem = prefix or _prefix(start)
    mass = float(start["active_mass_g"])
    folder.mkdir(parents=True, exist_ok=True)
    instprm = folder / f"{stem}.instprm"
    paths, fxye_paths, index_rows = [], [], []
    for frame, pattern in zip(seq, intensity):
        row = {key: np.asarray(table[key])[rows[frame]] for key in ("potential_V", "capacity_mAh") if key in table}
        potential = float(row.get("potential_V", math.nan))
        charge = float(row.get("capacity_mAh", math.nan)) / mass  # the cycler's charge counter
        when = raw_times[frame]
        elapsed = when - float(start["time"])
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        header = (f"nanostrain run {raw_uid} frame {frame} time {stamp} t {elapsed:.1f} s since start "
                  f"potential {potential:.4f} V charge {charge:.2f} mAh/g lambda {wavelength_A} A")
        y = pattern[reached]
        esd = np.sqrt(np.maximum(y * weight, 1.0)) / weight
        path = folder / f"{stem}_{frame:04d}.xye"
        path.write_text(xye_text(header, two_theta, y, esd))
        paths.append(path)
        if fxye:
            fxye_paths.append(path.with_suffix(".fxye"))
            fxye_paths[-1].write_text(fxye_text(header, instprm.name, two_theta, y, esd))
        index_rows.append(f"{path.name}\t{frame}\t{stamp}\t{elapsed:.1f}\t{potential:.4f}\t{charge:.2f}")
    instprm.write_text(instprm_text(wavelength_A, profile))
    index = folder / INDEX_NAME
    index.write_text("\n".join([
        f"# GSAS-II sequential refinement of raw run {raw_uid} ({stem}), "
        f"xrd_reduction {reduction.metadata['start']['uid']}",
        f"# instrument parameters: {instprm.name} (Lam {wavelength_A} A from the run's calibrated geometry; "
        f"profile from {source})",
        *(f"# NOTE: {note}" for note in notes),
        *(["# each pattern also as GSAS FXYE: the same name with .fxye (2theta in centidegrees)"] if fxye else []),
        "# patterns: 2theta (deg), I (mean counts per pixel), esd = Poisson sigma through the azimuthal average",
        "# file\tframe\ttime_utc\tt_s\tpotential_V\tcharge_mAh_g (the cycler's charge counter / active mass)",
        *index_rows,
    ]) + "\n")
    for note in notes:
        say(f"NOTE: {note}")
    return Gsas2Export(folder, paths, instprm, index, profile, source, notes, fxye_paths)
